"""Poisoned clients (`advrec.federated.attack`) and robust aggregation (`advrec.federated.defence`) on tiny,
hand-made cases."""

import numpy as np
import pytest
import scipy.sparse as sp
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from advrec.errors import ConfigError
from advrec.federated.app import make_strategy, settings_of
from advrec.federated.attack import malicious_partitions, poison, popular_items, target_exposure, target_items
from advrec.federated.defence import outliers, update_features
from advrec.federated.fcf import FCFSettings


@pytest.fixture
def flower_task():
    """Messages need the identity of the run they belong to, which Flower's runtime sets in its processes."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def replies(updates: list[np.ndarray], weights: list[int]) -> list[Message]:
    ins = Message(RecordDict({"arrays": ArrayRecord([np.zeros_like(updates[0])])}), 1, "train")
    return [
        Message(RecordDict({"arrays": ArrayRecord([u]), "metrics": MetricRecord({"num-examples": w})}), reply_to=ins)
        for u, w in zip(updates, weights, strict=True)
    ]


def test_targets_are_seeded_unpopular_items():
    # item counts: 0 → 4, 1 → 3, 2 → 1, 3 → 1, 4 → 0, 5 → 2; median of the seen counts is 2
    rows = [[0, 1, 2], [0, 1, 3], [0, 1, 5], [0, 5]]
    X = sp.csr_matrix((np.ones(11), np.concatenate(rows), np.cumsum([0] + [len(r) for r in rows])), shape=(4, 6))
    got = target_items(X, 3, seed=1)
    assert set(got.tolist()) == {2, 3, 5} and (target_items(X, 3, seed=1) == got).all()
    assert popular_items(X, 2).tolist() == [0, 1]
    with pytest.raises(ConfigError, match="only 3 items qualify"):
        target_items(X, 4, seed=1)


def test_malicious_partitions_are_a_seeded_share():
    assert malicious_partitions(100, 0.0, 1).size == 0
    assert malicious_partitions(100, 0.001, 1).size == 1  # at least one when asked for any
    five = malicious_partitions(100, 0.05, 1)
    assert five.size == 5 and (five == malicious_partitions(100, 0.05, 1)).all() and five.max() < 100
    assert not (five == malicious_partitions(100, 0.05, 2)).all()
    with pytest.raises(ConfigError, match="share"):
        malicious_partitions(10, 1.0, 1)


def test_poison_replaces_only_the_target_rows_with_a_boosted_move_to_the_goal():
    rng = np.random.default_rng(0)
    Q, update = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    out = poison(update, Q, np.array([1, 4]), np.array([0, 2]), scale=2.0, boost=10.0)
    keep = [0, 2, 3, 5]
    np.testing.assert_array_equal(out[keep], update[keep])
    direction = (Q[0] + Q[2]) / np.linalg.norm(Q[0] + Q[2])
    goal = 2.0 * (np.linalg.norm(Q[0]) + np.linalg.norm(Q[2])) / 2 * direction
    for t in (1, 4):
        np.testing.assert_allclose(out[t], 10.0 * (goal - Q[t]))
    # one of ten nodes boosting by ten: the mean of its row and nine zero updates lands the row on the goal
    np.testing.assert_allclose(Q[1] + out[1] / 10, goal)


def test_target_exposure_counts_top_k_among_users_without_the_target():
    # 3 items on one factor; user 0 has item 0, user 1 has items 0 and 2; scores follow q_i (x_u > 0 for both)
    Q = np.array([[1.0], [3.0], [2.0]])
    history = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 1]], dtype=float))
    settings = FCFSettings(alpha=1.0, reg=0.1)
    # target 2: user 0 ranks items 1, 2 → item 2 second: a hit at k=2, not at k=1; user 1 holds it: not counted
    assert target_exposure(history, Q, settings, np.array([2]), k=2) == (1.0, 1)
    assert target_exposure(history, Q, settings, np.array([2]), k=1) == (0.0, 1)
    # targets 1 and 2 at k=1: user 0 sees item 1 first (1 of 2 targets), user 1 only item 1 (1 of 1)
    assert target_exposure(history, Q, settings, np.array([1, 2]), k=1) == (1.5, 2)


def test_the_filter_flags_a_concentrated_update():
    rng = np.random.default_rng(0)
    honest = [[rng.normal(size=(50, 4))] for _ in range(12)]
    pushed = [honest[0][0].copy()]
    pushed[0][7] += 5 * np.linalg.norm(pushed[0]) / 2  # most of the deviation on one item's row
    assert outliers(update_features(honest)).size == 0
    assert outliers(update_features([*honest, pushed])).tolist() == [12]


@pytest.mark.parametrize("defence", ["median", "trimmed-mean", "krum", "multikrum", "bulyan", "outlier-filter"])
def test_each_defence_ignores_one_far_reply(flower_task, defence):
    """Ten honest replies near 1 and one at 1000 on a single coordinate: FedAvg moves by about 90, every defence
    stays near 1 (FedAvg with the defence below it; Krum assumes one malicious node)."""
    rng = np.random.default_rng(0)
    updates = [(1 + 0.01 * rng.normal(size=(4, 2))).astype(np.float32) for _ in range(10)]
    bad = updates[0].copy()
    bad[3, 1] = 1000.0
    s = {"strategy": "fedavg", "assumed-malicious": 1}
    sent = [*updates, bad]
    mean, _ = make_strategy(settings_of(s)).aggregate_train(1, replies(sent, [1] * 11))
    assert mean is not None and mean.to_numpy_ndarrays()[0][3, 1] > 80
    out, _ = make_strategy(settings_of({**s, "defence": defence})).aggregate_train(1, replies(sent, [1] * 11))
    assert out is not None
    np.testing.assert_allclose(out.to_numpy_ndarrays()[0], 1.0, atol=0.05)


def test_defence_settings_are_checked():
    with pytest.raises(ConfigError, match="defence must be one of"):
        settings_of({"defence": "krumm"})
    with pytest.raises(ConfigError, match="needs targets"):
        settings_of({"attack": "popularity", "attack-share": 0.05})
    with pytest.raises(ConfigError, match="not both"):
        settings_of({"defence": "median", "epsilon": 8.0, "clip": 1.0})
    with pytest.raises(ConfigError, match="only the sum"):
        settings_of({"defence": "median", "secagg": True})
    with pytest.raises(ConfigError, match="secagg-shares"):
        settings_of({"secagg": True, "secagg-shares": 2})
