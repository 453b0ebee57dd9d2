"""IALS: the user step against a dense closed-form solve, CG against textbook CG and Cholesky, the loss, chunking,
fold-in, threads, early stopping, saving, and serving through the ANN index."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from advrec.data.splits import ratio_split
from advrec.errors import ConfigError, DataError
from advrec.models import ials
from advrec.models.ials import IALS, SparseRows, cg_solve
from advrec.testing import check_recommender, two_communities


@pytest.fixture
def counts() -> sp.csr_matrix:
    """12 users × 9 items of counts 1..3 (density 0.4); every user and item has an interaction."""
    rng = np.random.default_rng(3)
    dense = (rng.random((12, 9)) < 0.4) * rng.integers(1, 4, (12, 9))
    dense[np.arange(12), np.arange(12) % 9] = 1
    return sp.csr_matrix(dense.astype(np.float32))


def dense_step(R: np.ndarray, Y: np.ndarray, alpha: float, lam: np.ndarray) -> np.ndarray:
    """x_u = (Yᵀ C_u Y + λ_u I)⁻¹ Yᵀ C_u p_u with C_u = diag(1 + alpha·r_u) and p_u = [r_u > 0], user by user."""
    P, C = (R > 0).astype(np.float64), 1.0 + alpha * R
    d = Y.shape[1]
    return np.stack(
        [np.linalg.solve(Y.T @ (C[u, :, None] * Y) + lam[u] * np.eye(d), Y.T @ (C[u] * P[u])) for u in range(len(R))]
    )


def dense_loss(
    R: np.ndarray, U: np.ndarray, V: np.ndarray, alpha: float, lam_u: np.ndarray, lam_i: np.ndarray
) -> float:
    P, C = (R > 0).astype(np.float64), 1.0 + alpha * R
    return float((C * (P - U @ V.T) ** 2).sum() + (lam_u[:, None] * U**2).sum() + (lam_i[:, None] * V**2).sum())


def textbook_cg(A: np.ndarray, b: np.ndarray, x: np.ndarray, steps: int) -> np.ndarray:
    """Plain conjugate gradient from x (one system)."""
    r = b - A @ x
    p, rs = r.copy(), r @ r
    for _ in range(steps):
        ap = A @ p
        a = rs / (p @ ap)
        x, r = x + a * p, r - a * ap
        rs, rs_old = r @ r, rs
        p = r + rs / rs_old * p
    return x


def fitted(R: sp.csr_matrix, **kw: object) -> IALS:
    params = {
        "factors": 4,
        "alpha": 1.0,
        "reg": 0.1,
        "iterations": 5,
        "device": "cpu",
        "dtype": "float64",
        "random_state": 0,
    }
    params |= kw
    return IALS(**params).fit(R)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: IALS(factors=8, reg=5.0, iterations=10, solver="cholesky", device="cpu"),
        lambda: IALS(factors=8, iterations=10, reg=5.0, alpha=5.0, reg_scaling="frequency", device="cpu"),
    ],
    ids=["cholesky", "frequency"],
)
def test_conformance_of_the_other_settings(make, tmp_path: Path) -> None:
    check_recommender(make, tmp_path, min_accuracy=0.9)


@pytest.mark.parametrize("scaling", ["none", "frequency"])
def test_fold_in_is_the_dense_closed_form_user_step(counts: sp.csr_matrix, scaling: str) -> None:
    """fold_in solves each row's user step exactly against the fixed item factors (counts as r, λ_u per row)."""
    model = fitted(counts, alpha=2.0, reg=0.3, reg_scaling=scaling)
    R = counts.toarray().astype(np.float64)
    f = R.shape[1] + 2.0 * R.sum(1)
    lam = 0.3 * f / f.mean() if scaling == "frequency" else np.full(len(R), 0.3)
    want = dense_step(R, model.item_factors_, 2.0, lam)
    np.testing.assert_allclose(model.fold_in(counts), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_one_iteration_is_a_dense_user_step_then_a_dense_item_step(counts: sp.csr_matrix, solver: str) -> None:
    """From the seeded start (U0, V0 uniform on [0, 0.01), users drawn first), one iteration solves every user
    against V0, then every item against the new users; CG with d = 4 steps reaches the same solutions."""
    model = fitted(counts, iterations=1, solver=solver, cg_steps=4, alpha=2.0, reg=0.3, random_state=5)
    rng = np.random.default_rng(5)
    _, V0 = (rng.random((n, 4)) * 0.01 for n in counts.shape)
    R = counts.toarray().astype(np.float64)
    U1 = dense_step(R, V0, 2.0, np.full(12, 0.3))
    np.testing.assert_allclose(model.user_factors_, U1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.item_factors_, dense_step(R.T, U1, 2.0, np.full(9, 0.3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [9, 4], ids=["one-block", "three-column-blocks"])
def test_cg_steps_are_textbook_cg_per_user(counts: sp.csr_matrix, width: int) -> None:
    """The batched CG does, for every user, what plain CG does on that user's system (from the same start)."""
    rng = np.random.default_rng(1)
    R = counts.toarray().astype(np.float64)
    Y, X0 = rng.standard_normal((9, 4)), rng.standard_normal((12, 4))
    lam = np.linspace(0.1, 1.0, 12)
    rows = SparseRows.build(counts, 2.0, lam, torch.float64, torch.device("cpu"), width)
    assert len(rows.blocks) == -(-9 // width)
    Yt = torch.from_numpy(Y)
    for steps in (1, 3):
        x = torch.from_numpy(X0.copy())
        cg_solve(rows, x, Yt, Yt.T @ Yt, steps)
        C = 1.0 + 2.0 * R
        want = [
            textbook_cg(Y.T @ (C[u, :, None] * Y) + lam[u] * np.eye(4), Y.T @ (C[u] * (R[u] > 0)), X0[u], steps)
            for u in range(12)
        ]
        np.testing.assert_allclose(x.numpy(), np.stack(want), rtol=1e-9, atol=1e-9)
    x = torch.from_numpy(X0.copy())
    cg_solve(rows, x, Yt, Yt.T @ Yt, 4)  # d steps: the exact solution
    np.testing.assert_allclose(x.numpy(), dense_step(R, Y, 2.0, lam), rtol=1e-6, atol=1e-6)


def test_the_loss_is_the_dense_objective_and_falls_at_every_exact_iteration(counts: sp.csr_matrix) -> None:
    model = fitted(counts, iterations=12, solver="cholesky", reg_scaling="frequency", alpha=3.0, reg=0.2, verbose=True)
    R = counts.toarray().astype(np.float64)
    fu, fi = R.shape[1] + 3.0 * R.sum(1), R.shape[0] + 3.0 * R.sum(0)
    want = dense_loss(R, model.user_factors_, model.item_factors_, 3.0, 0.2 * fu / fu.mean(), 0.2 * fi / fi.mean())
    assert model.loss(counts) == pytest.approx(want, rel=1e-10)
    losses = np.array([row["loss"] for row in model.training_log_])
    assert losses[-1] == pytest.approx(want, rel=1e-10)
    assert (np.diff(losses) <= 1e-9 * losses[:-1]).all(), losses


def test_cg_with_enough_steps_is_the_exact_solver(counts: sp.csr_matrix) -> None:
    exact = fitted(counts, solver="cholesky")
    cg = fitted(counts, solver="cg", cg_steps=8)
    np.testing.assert_allclose(cg.user_factors_, exact.user_factors_, atol=1e-7)
    np.testing.assert_allclose(cg.item_factors_, exact.item_factors_, atol=1e-7)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("blocks", [False, True], ids=["one-column-block", "column-blocks-of-3"])
def test_chunks_change_nothing(
    counts: sp.csr_matrix, solver: str, blocks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row chunks (chunk_size) and column blocks (the cache budget, here 3 columns of 4 float64 factors)."""
    whole = fitted(counts, solver=solver)
    if blocks:
        monkeypatch.setattr(ials, "_CACHE", 3 * 4 * 8)
    chunked = fitted(counts, solver=solver, chunk_size=5)
    for got, want in [
        (chunked.user_factors_, whole.user_factors_),
        (chunked.item_factors_, whole.item_factors_),
        (chunked.fold_in(counts), whole.fold_in(counts)),
        (chunked.loss(counts), whole.loss(counts)),
    ]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_fold_in_of_training_rows_gives_their_converged_vectors(counts: sp.csr_matrix) -> None:
    model = fitted(counts, solver="cholesky", iterations=300, reg=0.5)
    np.testing.assert_allclose(model.fold_in(counts), model.user_factors_, atol=1e-4)
    empty = sp.csr_matrix((2, counts.shape[1]), dtype=np.float32)
    assert (model.fold_in(empty) == 0).all()
    with pytest.raises(DataError, match="items"):
        model.fold_in(counts[:, :4])


def test_same_seed_same_factors_with_one_and_two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 × 400 (24,000 interactions) in row chunks of 500 (shared by two worker threads) and column blocks of
    100; the Gramians of 3,000 rows go through torch's threads."""
    monkeypatch.setattr(ials, "_CACHE", 100 * 16 * 4)
    rng = np.random.default_rng(0)
    X = sp.random(3000, 400, density=0.02, random_state=rng, format="csr", dtype=np.float32)
    X.data[:] = 1.0
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            m = IALS(factors=16, iterations=2, chunk_size=500, device="cpu", random_state=7).fit(X)
            out.append((m.user_factors_, m.item_factors_))
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_early_stopping_keeps_the_best_iteration() -> None:
    X = two_communities(n_users=60, n_items=30, density=0.4)
    split = ratio_split(X, (0.7, 0.15, 0.15), random_state=0)
    model = IALS(factors=4, iterations=30, patience=2, device="cpu").fit(split.train, valid=split)
    ndcg = [row["valid_ndcg@10"] for row in model.training_log_]
    assert len(ndcg) < 30 or max(ndcg) > ndcg[-1]
    assert model.best_valid_ == max(ndcg) and ndcg[model.best_epoch_ - 1] == max(ndcg)
    assert model.epochs_run_ == len(model.training_log_) and model.epoch_seconds_ > 0


def test_save_load_keeps_fold_in(counts: sp.csr_matrix, tmp_path: Path) -> None:
    model = fitted(counts, reg_scaling="frequency", alpha=2.0)
    loaded = IALS.load(model.save(tmp_path / "ials"))
    np.testing.assert_array_equal(loaded.fold_in(counts[:3]), model.fold_in(counts[:3]))
    assert loaded.mean_frequency_ == model.mean_frequency_


@pytest.mark.parametrize(
    "bad",
    [
        {"solver": "lu"},
        {"reg_scaling": "log"},
        {"factors": 0},
        {"reg": 0.0},
        {"alpha": -1.0},
        {"cg_steps": 0},
        {"dtype": "float16"},
        {"chunk_size": 0},
        {"init_scale": -0.1},
    ],
)
def test_bad_parameters_are_refused(bad: dict[str, object]) -> None:
    name = next(iter(bad))
    model = IALS(**bad)  # type: ignore[arg-type]  # checked at fit, as scikit-learn does
    with pytest.raises(ConfigError, match=f"^IALS: {name} must be"):
        model.fit(two_communities())
    with pytest.raises(ConfigError, match=f"^IALS: {name} must be"):
        IALS().set_params(**bad)


def test_negative_weights_are_refused() -> None:
    with pytest.raises(DataError, match="negative"):
        IALS().fit(sp.csr_matrix(np.array([[1.0, -1.0], [0.0, 1.0]])))


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="needs faiss: advrec[ann]")
def test_served_with_the_ann_index(tmp_path: Path) -> None:
    from advrec.runs import save_run
    from advrec.serving.ann import AnnOptions, factors_of
    from advrec.serving.index import ServedModel

    X = two_communities(n_users=80, n_items=40)
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=0)
    model = IALS(factors=8, iterations=8, device="cpu").fit(split.train)
    f = factors_of(model, split.train.matrix)
    np.testing.assert_allclose(f.user @ f.item.T, model.score(split.train, np.arange(X.n_users)), rtol=1e-5, atol=1e-6)
    path = save_run(tmp_path / "run", model, X, split, {"name": "two_communities"})
    exact, approx = ServedModel.from_run_dir(path), ServedModel.from_run_dir(path, ann=AnnOptions("faiss"))
    n = approx.n_users
    rows = approx.histories(range(n), [np.zeros(0, np.int64)] * n, [np.zeros(0, bool)] * n)
    items, _, strategy = approx.recommend(rows, k=5)
    want, _, _ = exact.recommend(rows, k=5)
    assert set(strategy) == {"user-vector"}
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(items.tolist(), want.tolist(), strict=True)]) >= 0.95


def test_duplicates_are_summed_zeros_dropped_and_the_input_left_alone(counts: sp.csr_matrix) -> None:
    """Entries are weights r: a pair stored twice counts twice; a stored zero is no interaction."""
    m = counts.tocsr()
    free = int(np.setdiff1d(np.arange(m.shape[1]), m[0].indices)[0])  # a column user 0 has not seen
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    # each count c stored as (c − 1) and 1 at the same pair, plus a stored 0 at (0, free); rows stay in order
    r = np.r_[rows, rows, 0]
    c = np.r_[m.indices, m.indices, free]
    v = np.r_[m.data - 1.0, np.ones(m.nnz), 0.0].astype(np.float32)
    order = np.argsort(r, kind="stable")
    indptr = np.r_[0, np.cumsum(np.bincount(r, minlength=m.shape[0]))]
    messy = sp.csr_matrix((v[order], c[order], indptr), shape=m.shape)
    assert not messy.has_canonical_format
    before = (messy.data.copy(), messy.indices.copy())
    np.testing.assert_allclose(fitted(messy).user_factors_, fitted(m).user_factors_, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(messy.data, before[0])
    np.testing.assert_array_equal(messy.indices, before[1])
