"""GFCF: scores equal a dense computation of the paper's filter on a toy matrix; pruning; save/load."""

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ConfigError, DataError
from advrec.models import GFCF
from advrec.models.gfcf import top_per_column


@pytest.fixture
def toy() -> sp.csr_matrix:
    rng = np.random.default_rng(3)
    dense = (rng.random((30, 12)) < 0.35).astype(np.float32)
    dense[:, 11] = 0.0  # an item nobody saw: degree 0
    dense[np.arange(30), np.arange(30) % 11] = 1.0
    return sp.csr_matrix(dense)


def dense_gfcf(R: np.ndarray, k: int, alpha: float, r: np.ndarray | None = None) -> np.ndarray:
    """r·R̃ᵀR̃ + α·r·D_I^{-1/2}·V·Vᵀ·D_I^{1/2} for history rows r (default R), dense, V from numpy's full SVD."""
    r = R if r is None else r
    du, di = R.sum(axis=1), R.sum(axis=0)
    inv_u = np.where(du > 0, 1 / np.sqrt(np.maximum(du, 1e-300)), 0.0)
    inv_i = np.where(di > 0, 1 / np.sqrt(np.maximum(di, 1e-300)), 0.0)
    Rt = inv_u[:, None] * R * inv_i[None, :]
    _, _, vt = np.linalg.svd(Rt, full_matrices=False)
    V = vt[:k].T
    ideal = np.diag(inv_i) @ V @ V.T @ np.diag(np.sqrt(di))
    return r @ (Rt.T @ Rt) + alpha * r @ ideal


@pytest.mark.parametrize("k,alpha", [(4, 0.3), (0, 0.3), (6, 1.0)])
def test_scores_equal_the_dense_filter(toy, k, alpha):
    model = GFCF(k=k, alpha=alpha).fit(toy)
    expected = dense_gfcf(toy.toarray().astype(np.float64), k, alpha)
    users = np.arange(toy.shape[0])
    np.testing.assert_allclose(model.score(toy, users), expected, rtol=1e-4, atol=1e-5)


def test_new_users_are_scored_from_their_history(toy):
    model = GFCF(k=4).fit(toy)
    new = np.zeros((2, 12), dtype=np.float32)
    new[0, [0, 3]] = 1.0
    new[1, [5, 11]] = 1.0  # item 11 was never seen in training
    expected = dense_gfcf(toy.toarray().astype(np.float64), 4, 0.3, r=new.astype(np.float64))
    np.testing.assert_allclose(model.score(sp.csr_matrix(new), [0, 1]), expected, rtol=1e-4, atol=1e-5)


def test_pruned_filter_keeps_the_largest_entries_per_column(toy):
    full = GFCF(k=0).fit(toy).item_filter_.toarray()
    pruned = GFCF(k=0, max_neighbors=3).fit(toy).item_filter_.toarray()
    assert ((pruned != 0).sum(axis=0) <= 3).all()
    for j in range(full.shape[1]):
        kept = np.flatnonzero(pruned[:, j])
        np.testing.assert_allclose(pruned[kept, j], full[kept, j])
        if len(kept):
            assert full[kept, j].min() >= np.sort(full[:, j])[-3] - 1e-7


def test_top_per_column_by_hand():
    W = sp.csc_matrix(np.array([[5.0, 1.0], [2.0, 0.0], [9.0, 3.0]]))
    np.testing.assert_array_equal(top_per_column(W, 2).toarray(), [[5.0, 1.0], [0.0, 0.0], [9.0, 3.0]])
    np.testing.assert_array_equal(top_per_column(W, 1).toarray(), [[0.0, 0.0], [0.0, 0.0], [9.0, 3.0]])
    np.testing.assert_array_equal(top_per_column(W, 5).toarray(), W.toarray())


def test_save_load_identical_scores_and_no_training_matrix(toy, tmp_path):
    model = GFCF(k=4, max_neighbors=5).fit(toy)
    model.save(tmp_path / "m")
    loaded = GFCF.load(tmp_path / "m")
    users = np.arange(toy.shape[0])
    np.testing.assert_array_equal(loaded.score(toy, users), model.score(toy, users))
    assert sorted(k for k in vars(model) if k.endswith("_")) == [
        "components_",
        "item_degree_",
        "item_filter_",
        "n_items_",
        "n_users_",
    ]


def test_bad_parameters(toy):
    with pytest.raises(DataError, match="k = 30 must be below"):
        GFCF(k=30).fit(toy)
    with pytest.raises(ConfigError, match="alpha"):
        GFCF(alpha=-1.0, k=2).fit(toy)
    with pytest.raises(ConfigError, match="max_neighbors"):
        GFCF(k=2, max_neighbors=0).fit(toy)
