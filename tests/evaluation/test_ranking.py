"""Tests of advrec.evaluation.ranking.top_k."""

from __future__ import annotations

import numpy as np
import pytest

from advrec.evaluation.ranking import top_k

NEG = -np.inf


def _brute(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_known_order() -> None:
    items, values = top_k(np.array([[0.1, 0.9, 0.5, 0.3], [4.0, 1.0, 3.0, 2.0]]), 2)
    assert items.dtype == np.int64
    assert items.tolist() == [[1, 2], [0, 2]]
    assert values.tolist() == [[0.9, 0.5], [4.0, 3.0]]


def test_ties_broken_by_lower_index() -> None:
    s = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    assert top_k(s, 2)[0].tolist() == [[1, 2]]  # tie straddles the boundary (item 4 left out)
    assert top_k(s, 3)[0].tolist() == [[1, 2, 4]]  # tie entirely inside
    assert top_k(s, 4)[0].tolist() == [[1, 2, 4, 3]]


def test_ties_straddling_boundary() -> None:
    s = np.array(
        [
            [5.0, 1.0, 1.0, 1.0, 1.0, 0.0],
            [0.0, 1.0, 1.0, 1.0, 1.0, 5.0],
            [1.0, 2.0, 1.0, 2.0, 1.0, 1.0],
            [7.0, 7.0, 7.0, 7.0, 7.0, 7.0],
        ]
    )
    items, values = top_k(s, 3)
    assert items.tolist() == [[0, 1, 2], [5, 1, 2], [1, 3, 0], [0, 1, 2]]
    assert values.tolist() == [[5.0, 1.0, 1.0], [5.0, 1.0, 1.0], [2.0, 2.0, 1.0], [7.0, 7.0, 7.0]]


def test_k_at_least_n_items_returns_all_sorted() -> None:
    s = np.array([[0.2, 0.8, 0.2], [NEG, 1.0, 0.0]])
    for k in (3, 10):
        items, values = top_k(s, k)
        assert items.shape == (2, 3)
        assert items.tolist() == [[1, 0, 2], [1, 2, 0]]
        assert values.tolist() == [[0.8, 0.2, 0.2], [1.0, 0.0, NEG]]


def test_neg_inf_entries_are_kept() -> None:
    s = np.array([[NEG, 0.5, NEG, 0.2], [NEG, NEG, NEG, NEG]])
    items, values = top_k(s, 3)
    assert items.tolist() == [[1, 3, 0], [0, 1, 2]]
    assert values[0, :2].tolist() == [0.5, 0.2]
    assert np.isneginf(values[0, 2]) and np.isneginf(values[1]).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_stable_argsort_with_many_ties(dtype: type) -> None:
    rng = np.random.default_rng(42)
    s: np.ndarray = rng.integers(0, 4, size=(300, 40)).astype(dtype)
    s[rng.random(s.shape) < 0.3] = NEG
    s[:20] = rng.random((20, 40))  # some rows without ties take the cheap path only
    for k in (1, 2, 5, 10, 25, 39, 40, 41):
        items, values = top_k(s, k)
        expected = _brute(s, k)
        np.testing.assert_array_equal(items, expected)
        np.testing.assert_array_equal(values, np.take_along_axis(s, expected, axis=1))
        assert values.dtype == dtype


def test_integer_scores_promoted() -> None:
    items, values = top_k(np.array([[1, 3, 3, 2]]), 2)
    assert items.tolist() == [[1, 2]]
    assert values.dtype == np.float64


def test_errors() -> None:
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[0.1, np.nan]]), 1)
    with pytest.raises(ValueError, match="k must be"):
        top_k(np.array([[0.1, 0.2]]), 0)
    with pytest.raises(ValueError, match="2-D"):
        top_k(np.array([0.1, 0.2]), 1)


def test_read_only_and_half_precision_inputs() -> None:
    s = np.array([[0.1, 0.9, 0.5, 0.5], [4.0, 1.0, 3.0, 2.0]], dtype=np.float16)
    s.flags.writeable = False
    items, values = top_k(s, 2)
    assert items.tolist() == [[1, 2], [0, 2]] and values.dtype == np.float16


def test_tie_between_kth_and_next_is_resolved_by_index() -> None:
    s = np.array([[2.0, 1.0, 3.0, 1.0, 1.0], [NEG, 1.0, NEG, NEG, 0.0]])
    items, values = top_k(s, 2)
    assert items.tolist() == [[2, 0], [1, 4]]
    items, values = top_k(s, 3)
    assert items.tolist() == [[2, 0, 1], [1, 4, 0]] and np.isneginf(values[1, 2])
