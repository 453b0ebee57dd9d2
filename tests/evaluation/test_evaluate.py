import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions
from advrec.data.splits import Split
from advrec.errors import ConfigError
from advrec.evaluation import evaluate
from advrec.evaluation.evaluate import _hits
from advrec.evaluation.ranking import BYTES_PER_CELL, DEFAULT_MEMORY_BUDGET, users_per_chunk


class Fixed:
    """A scorer that returns a fixed matrix."""

    def __init__(self, S):
        self.S = np.asarray(S, dtype=np.float32)

    def score(self, history, users):
        return self.S[users]


def _X(dense):
    m = sp.csr_matrix(np.asarray(dense, dtype=np.float32))
    return Interactions(m, IdMap(range(m.shape[0]), "user"), IdMap(range(m.shape[1]), "item"))


def _split():
    # 3 users, 6 items. user 0: train {0}, valid {1}, test {2, 5}; user 1: train {3}, test {4}; user 2: train only
    train = _X([[1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    valid = _X([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    test = _X([[0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]])
    return Split(train=train, valid=valid, test=test, protocol={"name": "hand"})


def test_evaluate_hand_computed():
    # user 0 scores: items 0 and 1 are excluded (train, valid); ranking of the rest: 3, 2, 4, 5
    # user 1 scores: item 3 excluded; ranking 4, 0, 1, 2, 5
    S = [[9, 8, 5, 6, 4, 1], [3, 2, 1, 0, 7, 0.5], [0, 0, 0, 0, 0, 0]]
    rep = evaluate(Fixed(S), _split(), ks=(2, 4))
    assert list(rep.per_user.index) == [0, 1]  # user 2 has no test items
    u0, u1 = rep.per_user.loc[0], rep.per_user.loc[1]
    # user 0, K=2: list [3, 2], T={2,5}: one hit at rank 2
    assert u0["hit@2"] == 1 and u0["precision@2"] == 0.5 and u0["recall@2"] == 0.5
    assert u0["ndcg@2"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    assert u0["mrr@2"] == 0.5 and u0["map@2"] == pytest.approx(0.5 / 2)
    # user 0, K=4: list [3, 2, 4, 5]: hits at ranks 2 and 4
    assert u0["recall@4"] == 1.0 and u0["nrecall@4"] == 1.0 and u0["precision@4"] == 0.5
    assert u0["ndcg@4"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))
    assert u0["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    # user 1: list [4, ...]: hit at rank 1
    assert u1["ndcg@2"] == 1.0 and u1["mrr@4"] == 1.0 and u1["precision@2"] == 0.5
    assert rep.summary["ndcg@2"] == pytest.approx((u0["ndcg@2"] + 1.0) / 2)
    assert rep.summary["n_users"] == 2
    # coverage@2: lists {3, 2} and {4, 0} -> 4 distinct of 6 items
    assert rep.summary["coverage@2"] == pytest.approx(4 / 6)


def test_validation_items_excluded_only_on_test():
    S = [[0, 9, 5, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    split = _split()
    test = evaluate(Fixed(S), split, ks=(1,))
    assert test.per_user.loc[0, "hit@1"] == 1.0  # item 1 (valid) is not ranked, item 2 (test) comes first
    valid = evaluate(Fixed(S), split, ks=(1,), on="valid")
    assert list(valid.per_user.index) == [0]
    assert valid.per_user.loc[0, "hit@1"] == 1.0


def test_ties_broken_by_item_index():
    S = np.zeros((3, 6))
    rep = evaluate(Fixed(S), _split(), ks=(1,))
    # all scores tie: user 0 gets item 2 (lowest unexcluded index) -> hit; user 1 gets item 0 -> miss
    assert rep.per_user["hit@1"].tolist() == [1.0, 0.0]


def test_k_larger_than_catalogue():
    rep = evaluate(Fixed(np.zeros((3, 6))), _split(), ks=(10,))
    assert rep.per_user["recall@10"].tolist() == [1.0, 1.0]
    assert rep.per_user["precision@10"].tolist() == [0.2, 0.1]


def test_compare_paired():
    split = _split()
    a = evaluate(Fixed([[0, 0, 9, 0, 0, 8], [0, 0, 0, 0, 9, 0], [0] * 6]), split, ks=(2,))
    b = evaluate(Fixed(np.zeros((3, 6))), split, ks=(2,))
    res = a.compare(b, "ndcg@2")
    assert res["n"] == 2 and res["mean_diff"] > 0


def test_bad_score_shape():
    with pytest.raises(ValueError, match="shape"):
        evaluate(Fixed(np.zeros((3, 5))), _split())


# ---------------------------------------------------------------------- chunks, budgets, samples
class Recording(Fixed):
    """A fixed scorer that records how many users each call asked for."""

    def __init__(self, S):
        super().__init__(S)
        self.calls = []

    def score(self, history, users):
        self.calls.append(len(users))
        return super().score(history, users)


def _random_split(n_users=23, n_items=9, seed=0):
    """Random train/valid/test parts, each user with at least one training item; some with no test items."""
    rng = np.random.default_rng(seed)
    part = rng.choice(4, size=(n_users, n_items), p=[0.45, 0.25, 0.1, 0.2])  # 0 none, 1 train, 2 valid, 3 test
    part[:, 0] = np.where(part[:, 0] == 0, 1, part[:, 0])
    no_test = rng.random(n_users) < 0.2
    part[no_test] = np.where(part[no_test] == 3, 1, part[no_test])
    train, valid, test = (_X((part == v).astype(float)) for v in (1, 2, 3))
    return Split(train=train, valid=valid, test=test, protocol={"name": "random"})


def _tied_scores(n_users=23, n_items=9, seed=1):
    s = np.random.default_rng(seed).integers(0, 4, size=(n_users, n_items)).astype(np.float32)  # many ties
    s[1, 2:4] = np.nan  # user 1 has test items
    return s


@pytest.mark.parametrize("size", [1, 2, 5, 22, 23, 100])
def test_chunked_equals_unchunked(size):
    split, S = _random_split(), _tied_scores()
    whole = evaluate(Fixed(S), split, ks=(1, 3, 20), batch_size=10_000)
    model = Recording(S)
    chunked = evaluate(model, split, ks=(1, 3, 20), batch_size=size)
    assert max(model.calls) <= size and sum(model.calls) == len(whole.per_user)
    pd.testing.assert_frame_equal(chunked.per_user, whole.per_user)
    assert chunked.summary == whole.summary


def test_memory_budget_sets_the_chunk_size():
    split, S = _random_split(), _tied_scores()
    n_items = S.shape[1]
    model = Recording(S)
    rep = evaluate(model, split, ks=(3,), memory_budget=4 * n_items * BYTES_PER_CELL)
    assert set(model.calls[:-1]) == {4} and model.calls[-1] <= 4
    assert rep.summary == evaluate(Fixed(S), split, ks=(3,)).summary


def test_users_per_chunk_arithmetic():
    assert users_per_chunk(1000, 16_000) == 1  # 1000 items × 16 bytes per cell
    assert users_per_chunk(1000, 16_000 * 7 + 15_999) == 7
    assert users_per_chunk(10**9, 1) == 1  # never less than one user
    assert users_per_chunk(40_981) == DEFAULT_MEMORY_BUDGET // (40_981 * BYTES_PER_CELL) == 818
    with pytest.raises(ConfigError, match="memory_budget"):
        users_per_chunk(10, 0)
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(Fixed(_tied_scores()), _random_split(), batch_size=0)


def test_sampled_users_are_labelled_and_fixed_by_the_seed():
    split, S = _random_split(), _tied_scores()
    full = evaluate(Fixed(S), split, ks=(3,))
    n = len(full.per_user)
    assert full.protocol["users"] == f"all {n} users" and f"Users: all {n} users." in full.markdown()
    a = evaluate(Fixed(S), split, ks=(3,), sample_users=5, random_state=7)
    b = evaluate(Fixed(S), split, ks=(3,), sample_users=5, random_state=7, batch_size=2)
    c = evaluate(Fixed(S), split, ks=(3,), sample_users=5, random_state=8)
    assert a.protocol["users"] == f"sample of 5 of {n} users (seed 7)"
    assert "sample of 5" in a.markdown() and "sample of 5" in repr(a)
    assert a.summary["n_users"] == 5 and list(a.per_user.index) == list(b.per_user.index)
    assert list(a.per_user.index) != list(c.per_user.index)
    assert set(a.per_user.index) <= set(full.per_user.index)
    pd.testing.assert_frame_equal(a.per_user, full.per_user.loc[a.per_user.index])  # same values, fewer users
    drawn = evaluate(Fixed(S), split, ks=(3,), sample_users=5, random_state=np.random.default_rng(3))
    seed = int(drawn.protocol["users"].split("seed ")[1].rstrip(")"))  # the label's seed redraws the sample
    again = evaluate(Fixed(S), split, ks=(3,), sample_users=5, random_state=seed)
    assert list(again.per_user.index) == list(drawn.per_user.index)
    assert evaluate(Fixed(S), split, ks=(3,), sample_users=n + 5).protocol["users"] == f"all {n} users"
    with pytest.raises(ConfigError, match="sample_users"):
        evaluate(Fixed(S), split, sample_users=0)


def test_progress_without_a_terminal_logs_each_chunk(caplog):
    split, S = _random_split(), _tied_scores()
    with caplog.at_level(logging.INFO, logger="advrec.progress"):
        evaluate(Fixed(S), split, ks=(3,), batch_size=8, progress=True)
    lines = [r.getMessage() for r in caplog.records]
    n = len(evaluate(Fixed(S), split, ks=(3,)).per_user)
    chunks = -(-n // 8)
    assert len(lines) == chunks and lines[-1].startswith(f"evaluating {n} users: chunk {chunks} of {chunks}")
    assert f"users done {n};" in lines[-1] and "s left" in lines[-1]
    caplog.clear()
    evaluate(Fixed(S), split, ks=(3,), batch_size=8)
    assert not caplog.records


def test_hits_need_the_item_in_the_target_row():
    target = sp.csr_matrix(np.array([[0, 1, 0, 1], [1, 0, 0, 0]], dtype=np.float32))
    items = np.array([[1, 2, 3], [1, 0, 3]])
    scores = np.array([[3.0, 2.0, -np.inf], [3.0, 2.0, 1.0]])
    assert _hits(target, items, scores).tolist() == [[True, False, False], [False, True, False]]
    assert not _hits(sp.csr_matrix((2, 4)), items, scores).any()
