import numpy as np
import pytest
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions
from advrec.data.splits import Split
from advrec.evaluation import evaluate


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
