"""Hand-computed checks of advrec.evaluation.metrics (DESIGN.md section 5)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from advrec.evaluation.metrics import (
    METRICS,
    gini_index,
    item_coverage,
    novelty,
    paired_test,
    ranking_metrics,
)

L2, L3, L4, L5 = math.log2(2), math.log2(3), math.log2(4), math.log2(5)

# (hits row, |T|, k, expected values for every metric), written out by hand.
CASES: dict[str, tuple[list[int], int, int, dict[str, float]]] = {
    "T<K, hits 1 and 3": (
        [1, 0, 1],
        2,
        3,
        dict(
            hit=1,
            precision=2 / 3,
            recall=2 / 2,
            nrecall=2 / 2,
            ndcg=(1 / L2 + 1 / L4) / (1 / L2 + 1 / L3),
            mrr=1,
            map=(1 / 1 + 2 / 3) / 2,
        ),
    ),
    "T>K, hits 2 and 3, col 4 beyond k": (
        [0, 1, 1, 1],
        5,
        3,
        dict(
            hit=1,
            precision=2 / 3,
            recall=2 / 5,
            nrecall=2 / 3,
            ndcg=(1 / L3 + 1 / L4) / (1 / L2 + 1 / L3 + 1 / L4),
            mrr=1 / 2,
            map=(1 / 2 + 2 / 3) / 3,
        ),
    ),
    "no hits": (
        [0, 0, 0],
        1,
        3,
        dict(hit=0, precision=0, recall=0, nrecall=0, ndcg=0, mrr=0, map=0),
    ),
    "all hits": (
        [1, 1, 1],
        3,
        3,
        dict(hit=1, precision=1, recall=1, nrecall=1, ndcg=1, mrr=1, map=1),
    ),
    "all hits, T>K": (
        [1, 1, 1],
        4,
        3,
        dict(hit=1, precision=1, recall=3 / 4, nrecall=1, ndcg=1, mrr=1, map=1),
    ),
    "K=1 hit": (
        [1, 0, 0],
        4,
        1,
        dict(hit=1, precision=1, recall=1 / 4, nrecall=1, ndcg=1, mrr=1, map=1),
    ),
    "K=1 miss, later hits ignored": (
        [0, 1, 1],
        2,
        1,
        dict(hit=0, precision=0, recall=0, nrecall=0, ndcg=0, mrr=0, map=0),
    ),
    "T=1, hit at rank 4": (
        [0, 0, 0, 1],
        1,
        4,
        dict(hit=1, precision=1 / 4, recall=1, nrecall=1, ndcg=(1 / L5) / (1 / L2), mrr=1 / 4, map=(1 / 4) / 1),
    ),
    "T=3 < K=5, hits 2 and 5": (
        [0, 1, 0, 0, 1],
        3,
        5,
        dict(
            hit=1,
            precision=2 / 5,
            recall=2 / 3,
            nrecall=2 / 3,
            ndcg=(1 / L3 + 1 / math.log2(6)) / (1 / L2 + 1 / L3 + 1 / L4),
            mrr=1 / 2,
            map=(1 / 2 + 2 / 5) / 3,
        ),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_ranking_metrics_hand_cases(name: str) -> None:
    row, n_rel, k, expected = CASES[name]
    out = ranking_metrics(np.array([row], dtype=bool), np.array([n_rel]), k)
    assert set(out) == set(METRICS)
    for metric in METRICS:
        assert out[metric].shape == (1,)
        assert out[metric][0] == pytest.approx(expected[metric], abs=1e-12), metric


def test_ranking_metrics_batch_equals_rows() -> None:
    width = 5
    rows = [(row + [0] * (width - len(row)), n_rel, k) for row, n_rel, k, _ in CASES.values()]
    for k in (1, 3, 5):
        hits = np.array([r for r, _, _ in rows], dtype=bool)
        n_rel = np.array([n for _, n, _ in rows])
        batch = ranking_metrics(hits, n_rel, k)
        for u in range(len(rows)):
            single = ranking_metrics(hits[u : u + 1], n_rel[u : u + 1], k)
            for metric in METRICS:
                assert batch[metric][u] == pytest.approx(single[metric][0], abs=1e-12)


def _reference(row: np.ndarray, n_rel: int, k: int) -> dict[str, float]:
    """Loop-by-rank reference implementation of the definitions."""
    row = row[:k]
    h = int(row.sum())
    dcg = sum(1 / math.log2(i + 1) for i in range(1, k + 1) if row[i - 1])
    idcg = sum(1 / math.log2(i + 1) for i in range(1, min(k, n_rel) + 1))
    first = next((i for i in range(1, k + 1) if row[i - 1]), None)
    ap = sum(row[:i].sum() / i for i in range(1, k + 1) if row[i - 1])
    return dict(
        hit=float(h > 0),
        precision=h / k,
        recall=h / n_rel,
        nrecall=h / min(k, n_rel),
        ndcg=dcg / idcg,
        mrr=0.0 if first is None else 1 / first,
        map=ap / min(k, n_rel),
    )


def test_ranking_metrics_random_against_reference() -> None:
    rng = np.random.default_rng(0)
    hits = rng.random((200, 20)) < 0.2
    n_rel = np.maximum(hits.sum(axis=1), 1) + rng.integers(0, 6, size=200)
    for k in (1, 2, 7, 20):
        out = ranking_metrics(hits, n_rel, k)
        for u in range(hits.shape[0]):
            ref = _reference(hits[u], int(n_rel[u]), k)
            for metric in METRICS:
                assert out[metric][u] == pytest.approx(ref[metric], abs=1e-12)


def test_ranking_metrics_large_k_grows_discount_cache() -> None:
    hits = np.zeros((1, 300), dtype=bool)
    hits[0, 299] = True
    out = ranking_metrics(hits, np.array([1]), 300)
    assert out["ndcg"][0] == pytest.approx(1 / math.log2(301))
    assert out["mrr"][0] == pytest.approx(1 / 300)


@pytest.mark.parametrize(
    ("hits", "n_rel", "k", "match"),
    [
        (np.zeros((2, 3), bool), np.array([1, 1]), 4, "k must be"),
        (np.zeros((2, 3), bool), np.array([1, 1]), 0, "k must be"),
        (np.zeros((2, 3), bool), np.array([1, 0]), 2, "≥ 1"),
        (np.zeros((2, 3), bool), np.array([1, 1, 1]), 2, "shape"),
        (np.zeros(3, bool), np.array([1]), 2, "2-D"),
    ],
)
def test_ranking_metrics_errors(hits: np.ndarray, n_rel: np.ndarray, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ranking_metrics(hits, n_rel, k)


def test_item_coverage() -> None:
    assert item_coverage(np.array([[0, 1], [1, 2]]), 5) == pytest.approx(3 / 5)
    assert item_coverage(np.array([[4, 3, 2, 1, 0]]), 5) == pytest.approx(1.0)
    assert item_coverage(np.array([[0, -1], [0, -1]]), 4) == pytest.approx(1 / 4)  # -1 = padding
    assert item_coverage(np.zeros((0, 3), dtype=np.int64), 5) == 0.0
    with pytest.raises(ValueError, match="n_items"):
        item_coverage(np.array([[0, 5]]), 5)


def test_novelty() -> None:
    pop = np.array([4, 2, 1, 0])  # item 3 never seen in training: counted as pop 1
    # -log2(4/4)=0, -log2(2/4)=1, -log2(1/4)=2, -log2(1/4)=2
    assert novelty(np.array([[0, 1], [2, 3]]), pop, 4) == pytest.approx((0 + 1 + 2 + 2) / 4)
    assert novelty(np.array([[1, 1, 1]]), pop, 4) == pytest.approx(1.0)
    assert novelty(np.array([[0, -1]]), pop, 4) == pytest.approx(0.0)
    assert math.isnan(novelty(np.array([[-1]]), pop, 4))
    assert math.isnan(novelty(np.zeros((0, 1), dtype=np.int64), pop, 4))
    with pytest.raises(ValueError, match="n_items"):
        novelty(np.array([[4]]), pop, 4)


def test_gini_index() -> None:
    assert gini_index(np.array([[0, 1], [2, 3]]), 4) == pytest.approx(0.0)  # equal counts
    assert gini_index(np.array([[2], [2], [2]]), 4) == pytest.approx(3 / 4)  # one item: (n-1)/n
    # counts [2, 1, 0] -> sorted [0, 1, 2]: ((2-4)*0 + (4-4)*1 + (6-4)*2) / (3 * 3)
    assert gini_index(np.array([[0], [0], [1]]), 3) == pytest.approx(4 / 9)
    # never-recommended items count as zeros: counts [1, 1, 0, 0] sorted [0, 0, 1, 1], n=4
    # ((-3)*0 + (-1)*0 + 1*1 + 3*1) / (4 * 2) = 4/8
    assert gini_index(np.array([[0, 1]]), 4) == pytest.approx(0.5)
    assert gini_index(np.array([[0, -1], [-1, -1]]), 2) == pytest.approx(1 / 2)  # -1 = padding
    assert math.isnan(gini_index(np.zeros((0, 3), dtype=np.int64), 3))


def test_paired_test_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(30)
    b = a - 0.05 + 0.1 * rng.random(30)
    t = paired_test(a, b, "t")
    ref_t = stats.ttest_rel(a, b)
    assert t["statistic"] == pytest.approx(float(ref_t.statistic))
    assert t["p_value"] == pytest.approx(float(ref_t.pvalue))
    assert t["mean_diff"] == pytest.approx(float(np.mean(a - b)))
    assert t["n"] == 30
    w = paired_test(a, b, method="wilcoxon")
    ref_w = stats.wilcoxon(a, b)
    assert w["statistic"] == pytest.approx(float(ref_w.statistic))
    assert w["p_value"] == pytest.approx(float(ref_w.pvalue))
    assert w["n"] == 30
    assert paired_test(a, b) == t  # default is the t-test


@pytest.mark.parametrize("method", ["t", "wilcoxon"])
def test_paired_test_all_zero_differences(method: str) -> None:
    a = np.array([0.1, 0.2, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = paired_test(a, a.copy(), method=method)  # type: ignore[arg-type]
    assert out == {"statistic": 0.0, "p_value": 1.0, "mean_diff": 0.0, "n": 3}


def test_paired_test_errors() -> None:
    with pytest.raises(ValueError, match="equal length"):
        paired_test(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="at least 2"):
        paired_test(np.array([1.0]), np.array([2.0]))
    with pytest.raises(ValueError, match="method"):
        paired_test(np.array([1.0, 2.0]), np.array([2.0, 1.0]), method="z")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        paired_test(np.array([1.0, np.nan]), np.array([2.0, 1.0]))
