"""The Flower apps: settings, partitions, and a simulation whose factors equal FedAvg computed by hand."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from advrec.errors import ConfigError
from advrec.federated.app import federation_data, partition_users, settings_of, simulate
from advrec.federated.fcf import FCFSettings, client_step
from advrec.federated.privacy import noise_multiplier


class _Context:
    def __init__(self, pid: int, parts: int) -> None:
        self.node_config = {"partition-id": pid, "num-partitions": parts}


def test_settings_refuse_unknown_keys_and_wrong_types():
    assert settings_of({"rounds": 3, "lr": 2})["lr"] == 2.0  # an int where a float is expected is taken
    with pytest.raises(ConfigError, match="unknown federated settings"):
        settings_of({"round": 3})
    with pytest.raises(ConfigError, match="'rounds' must be int"):
        settings_of({"rounds": "3"})
    with pytest.raises(ConfigError, match="strategy"):
        settings_of({"strategy": "krumm"})
    with pytest.raises(ConfigError, match="needs a positive clip"):
        settings_of({"epsilon": 8.0})
    with pytest.raises(ConfigError, match="min-nodes must be at least 1"):
        settings_of({"min-nodes": 0})
    with pytest.raises(ConfigError, match="fraction-train must lie"):
        settings_of({"fraction-train": 0.0})
    with pytest.raises(ConfigError, match="set fraction-train 1"):
        settings_of({"fraction-train": 0.5, "epsilon": 8.0, "clip": 0.05})


def test_the_server_takes_the_sizes_without_the_data(tmp_path):
    from advrec.federated.app import sizes

    # no data folder there: given sizes are used as they are, nothing is loaded
    assert sizes(settings_of({"data-dir": str(tmp_path / "none"), "n-items": 5, "n-users": 7})) == (5, 7)


@pytest.mark.integration
def test_partitions_deal_every_user_once(data_dir):
    s = settings_of({"data-dir": str(data_dir)})
    split, order = federation_data(s)
    parts = [partition_users(_Context(p, 3), order) for p in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(split.n_users))
    with pytest.raises(ConfigError, match="partition-id"):
        partition_users(_Context(3, 3), order)


@pytest.mark.integration
def test_sampled_rounds_take_the_seeded_partitions(data_dir, tmp_path):
    """`fraction-train` 0.5 of 4 virtual nodes: each round FedAvg over the 2 partitions drawn from the run's
    seed and the round (whatever ids the simulation gives its nodes), weighted by their users."""
    config = {"data-dir": str(data_dir), "factors": 8, "rounds": 2, "strategy": "fedavg", "lr": 20.0,
              "fraction-train": 0.5, "out": str(tmp_path / "run")}  # fmt: skip
    simulate(config, partitions=4)
    got = load_file(str(tmp_path / "run" / "item_factors.safetensors"))["item_factors"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    s = settings_of(config)
    split, order = federation_data(s)
    Q = np.random.default_rng(s["seed"]).normal(scale=0.1 / np.sqrt(8), size=(split.n_items, 8)).astype(np.float32)
    fcf = FCFSettings(alpha=s["alpha"], reg=s["reg"], lr=s["lr"], clip=None, n_users=split.n_users)
    rounds = []
    for r in (1, 2):
        chosen = np.random.default_rng([s["seed"], 11, r]).choice(4, size=2, replace=False)
        users = np.concatenate([partition_users(_Context(int(p), 4), order) for p in chosen])
        total, _ = client_step(split.train.matrix[users], Q, fcf)
        Q = (Q + total / len(users)).astype(np.float32)
        rounds.append(Q)
    np.testing.assert_allclose(got, rounds[history["best_round"] - 1], rtol=1e-4, atol=1e-5)


@pytest.mark.integration
def test_private_simulation_gives_dp_fedavg_by_hand(data_dir, tmp_path):
    """Two FedAvg rounds at ε = 8 on Flower's simulation engine, 3 virtual nodes: the item factors are those of
    Q ← Q + (1/N) Σ_u clip(Δ_u) + noise computed in one process (the server's generator replayed), and the run
    records the accountant's ε."""
    config = {"data-dir": str(data_dir), "factors": 8, "rounds": 2, "strategy": "fedavg", "lr": 20.0,
              "clip": 0.05, "epsilon": 8.0, "out": str(tmp_path / "run")}  # fmt: skip
    simulate(config, partitions=3)
    got = load_file(str(tmp_path / "run" / "item_factors.safetensors"))["item_factors"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert set(history["evaluate"]) == {"1", "2"} and history["evaluate"]["2"]["test-ndcg@10"] > 0
    best = history["best_round"]
    valid = {int(r): m["valid-ndcg@10"] for r, m in history["evaluate"].items()}
    assert valid[best] == max(valid.values())
    s = settings_of(config)
    sigma = noise_multiplier(8.0, s["delta"], 1.0, 2)
    assert history["noise_multiplier"] == pytest.approx(sigma) and 7.9 < history["epsilon"] <= 8.0
    assert history["train"]["1"]["clipped_share"] > 0.5  # the bound binds: the noise is calibrated to it

    split, _ = federation_data(s)
    N = split.n_users
    Q = np.random.default_rng(s["seed"]).normal(scale=0.1 / np.sqrt(8), size=(split.n_items, 8)).astype(np.float32)
    fcf = FCFSettings(alpha=s["alpha"], reg=s["reg"], lr=s["lr"], clip=0.05, n_users=N)
    noise = np.random.default_rng([s["seed"], 7])
    rounds = []
    for _ in range(2):
        total, _ = client_step(split.train.matrix, Q, fcf)
        Q = (Q + total / N).astype(np.float32)
        Q = Q + noise.normal(0.0, sigma * 0.05 / N, Q.shape).astype(np.float32)
        rounds.append(Q)
    np.testing.assert_allclose(got, rounds[best - 1], rtol=1e-4, atol=1e-5)


def test_metric_sums_become_means_over_all_users():
    from flwr.app import MetricRecord, RecordDict

    from advrec.federated.app import sum_metrics

    nodes = [{"valid-ndcg@10": 0.5, "valid-users": 2.0, "test-ndcg@10": 0.0, "test-users": 1.0},
             {"valid-ndcg@10": 0.1, "valid-users": 1.0, "test-ndcg@10": 0.9, "test-users": 2.0}]  # fmt: skip
    out = sum_metrics([RecordDict({"m": MetricRecord({**n, "num-examples": 1})}) for n in nodes], "num-examples")
    assert dict(out) == pytest.approx({"valid-ndcg@10": 0.6 / 3, "test-ndcg@10": 0.9 / 3})


def test_flower_and_ray_do_not_report_home_by_default():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("FLWR_TELEMETRY_ENABLED", "RAY_USAGE_STATS_ENABLED")}
    code = ("import os, advrec.federated.app, flwr.supercore.telemetry as t; "
            "print(t.FLWR_TELEMETRY_ENABLED, os.environ['RAY_USAGE_STATS_ENABLED'])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]


@pytest.mark.integration
@pytest.mark.parametrize("epsilon", [0.0, 8.0])
def test_secure_aggregation_gives_fedavg_by_hand(data_dir, tmp_path, epsilon):
    """Two FedAvg rounds under SecAgg+ (3 virtual nodes, masks and quantisation), without and with user-level DP:
    the server's factors are the mean over all users' (clipped) updates, plus the server's noise, up to the
    quantisation step, and the nodes clip no value into the range."""
    dp = {"epsilon": epsilon, "clip": 0.05} if epsilon else {}
    config = {"data-dir": str(data_dir), "factors": 8, "rounds": 2, "strategy": "fedavg", "lr": 20.0, **dp,
              "secagg": True, "secagg-shares": 3, "secagg-range": 32.0, "out": str(tmp_path / "run")}  # fmt: skip
    simulate(config, partitions=3)
    got = load_file(str(tmp_path / "run" / "item_factors.safetensors"))["item_factors"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert set(history["evaluate"]) == {"1", "2"} and history["evaluate"]["2"]["test-ndcg@10"] > 0
    assert set(history["train"]) == {"1", "2"} and all(m["secagg-clipped"] == 0 for m in history["train"].values())
    s = settings_of(config)
    split, _ = federation_data(s)
    N = split.n_users
    Q = np.random.default_rng(s["seed"]).normal(scale=0.1 / np.sqrt(8), size=(split.n_items, 8)).astype(np.float32)
    fcf = FCFSettings(alpha=s["alpha"], reg=s["reg"], lr=s["lr"], clip=0.05 if epsilon else None, n_users=N)
    std = noise_multiplier(epsilon, s["delta"], 1.0, 2) * 0.05 / N if epsilon else 0.0
    assert (history["epsilon"] is not None) == bool(epsilon)
    noise = np.random.default_rng([s["seed"], 7])
    rounds = []
    for _ in range(2):
        total, _ = client_step(split.train.matrix, Q, fcf)
        Q = (Q + total / N).astype(np.float32)
        if std:
            Q = Q + noise.normal(0.0, std, Q.shape).astype(np.float32)
        rounds.append(Q)
    # 2^22 levels over [-32, 32]: a node's value moves by at most 2^-17 in round 1, which round 2's step carries on
    np.testing.assert_allclose(got, rounds[history["best_round"] - 1], rtol=0, atol=1e-3)
    assert not np.allclose(got, rounds[history["best_round"] - 1], rtol=0, atol=1e-9)  # it was quantised


@pytest.mark.integration
def test_multvae_round_is_fedavg_of_the_nodes_local_fits(data_dir, tmp_path):
    """One FedAvg round of MultVAE on 3 virtual nodes: the released weights are the user-weighted mean of each
    node's `local-epochs` fit from the seeded initial weights on its own users (replayed in one process)."""
    from advrec.federated import neural

    config = {"data-dir": str(data_dir), "model": "multvae", "rounds": 1, "strategy": "fedavg", "hidden": 32,
              "latent": 8, "local-epochs": 2, "batch-size": 100, "out": str(tmp_path / "run")}  # fmt: skip
    simulate(config, partitions=3)
    got = load_file(str(tmp_path / "run" / "network.safetensors"))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["evaluate"]["1"]["test-ndcg@10"] > 0
    s = settings_of(config)
    split, order = federation_data(s)
    start = neural.initial_weights(s, split.n_items)
    total, n = {k: np.zeros_like(v, dtype=np.float64) for k, v in start.items()}, 0
    for p in range(3):
        users = partition_users(_Context(p, 3), order)
        new, _ = neural.local_update(s, split.train.matrix[users], start, neural.node_seed(s, 1, p))
        for k in total:
            total[k] += len(users) * new[k]
        n += len(users)
    assert set(got) == set(start)
    for k in got:
        assert not np.allclose(got[k], start[k])  # the round moved every array
        np.testing.assert_allclose(got[k], total[k] / n, rtol=1e-4, atol=1e-5, err_msg=k)
