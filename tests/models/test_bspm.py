"""BSPM: conformance; zero ODE time gives the start; one Euler step by hand; RK4 and merges against dense
closed forms; save/load; beats Pop on ml-100k."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.data import load_movielens
from advrec.data.splits import ratio_split
from advrec.errors import ConfigError, DataError
from advrec.evaluation import evaluate
from advrec.models import BSPM, Pop
from advrec.testing import check_recommender

# NDCG@10 over Pop's on ml-100k (per-user 8:1:1, min_rating 4), k = 256, seeds 0-3: 1.64-1.77
OVER_POP_MIN = 1.3


@pytest.fixture
def toy() -> sp.csr_matrix:
    rng = np.random.default_rng(5)
    dense = (rng.random((30, 12)) < 0.35).astype(np.float32)
    dense[:, 11] = 0.0  # an item nobody saw: degree 0
    dense[np.arange(30), np.arange(30) % 11] = 1.0
    return sp.csr_matrix(dense)


def filters(R: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """P̃ = R̃ᵀR̃ and P_I = D_I^{-1/2} V Vᵀ D_I^{1/2}, dense, V from numpy's full SVD."""
    du, di = R.sum(axis=1), R.sum(axis=0)
    inv_u = np.where(du > 0, 1 / np.sqrt(np.maximum(du, 1e-300)), 0.0)
    inv_i = np.where(di > 0, 1 / np.sqrt(np.maximum(di, 1e-300)), 0.0)
    Rt = inv_u[:, None] * R * inv_i[None, :]
    V = np.linalg.svd(Rt, full_matrices=False)[2][:k].T
    return Rt.T @ Rt, np.diag(inv_i) @ V @ V.T @ np.diag(np.sqrt(di))


def rk4_step(P: np.ndarray, h: float) -> np.ndarray:
    """One RK4 step of ds/dt = s·A, A = −P: s ↦ s·(I + hA + (hA)²/2 + (hA)³/6 + (hA)⁴/24)."""
    A = -h * P
    eye = np.eye(len(P))
    return eye + A + A @ A / 2 + A @ A @ A / 6 + A @ A @ A @ A / 24


def test_conformance(tmp_path):
    check_recommender(lambda: BSPM(k=4), tmp_path)


def test_zero_time_gives_the_start(toy):
    """With T_b = T_i = T_s = 0 every process stays at r: the scores are (1 + β)·r, early or late merge."""
    users = np.arange(toy.shape[0])
    for merge in ("early", "late"):
        model = BSPM(k=4, beta=0.3, T_b=0.0, T_i=0.0, T_s=0.0, K_s=3, merge=merge).fit(toy)
        np.testing.assert_allclose(model.score(toy, users), 1.3 * toy.toarray(), rtol=1e-6, atol=1e-7)


def test_one_euler_step_by_hand():
    """R = [[1,1,0,0],[0,1,1,0],[0,0,1,1]]: R̃ has 1/√2 where the item degree is 1 and 1/2 where it is 2, so
    P̃ = [[1/2, a, 0, 0], [a, 1/2, 1/4, 0], [0, 1/4, 1/2, a], [0, 0, a, 1/2]] with a = 1/(2√2). For user 0
    (r = [1,1,0,0]) one Euler blurring step over T_b = 1 gives x = r P̃ = [1/2+a, 1/2+a, 1/4, 0]; one
    Euler sharpening step over T_s = 1/2 gives x − x P̃ / 2."""
    R = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=np.float32))
    a = 1 / (2 * math.sqrt(2))
    x = np.array([0.5 + a, 0.5 + a, 0.25, 0.0])
    xP = np.array([x[0] / 2 + x[1] * a, x[0] * a + x[1] / 2 + x[2] / 4, x[1] / 4 + x[2] / 2, x[2] * a])
    model = BSPM(k=0, T_s=0.5, sharpen_solver="euler").fit(R)
    np.testing.assert_allclose(model.score(R, [0])[0], x - xP / 2, rtol=1e-6)
    np.testing.assert_allclose(x - xP / 2, [0.48928, 0.45803, 0.08081, -0.04419], atol=1e-5)


@pytest.mark.parametrize("merge", ["early", "late"])
def test_rk4_and_the_merges_equal_the_dense_formula(toy, merge):
    """Paper settings: blurrings of one Euler step (r P̃, r P_I), one RK4 step of the sharpening over T_s."""
    R = toy.toarray().astype(np.float64)
    P, PI = filters(R, 4)
    phi = rk4_step(P, 2.5)
    if merge == "early":
        expected = (R @ P + 0.2 * R @ PI) @ phi
    else:
        expected = R @ P @ phi + 0.2 * R @ PI
    model = BSPM(k=4, beta=0.2, T_s=2.5, merge=merge).fit(toy)
    np.testing.assert_allclose(model.score(toy, np.arange(30)), expected, rtol=1e-4, atol=1e-5)


def test_steps_squared_sharpening_and_time_average(toy):
    """Two Euler blurring steps, the −P̃² sharpening with two Euler steps, and the mean of the four states."""
    R = toy.toarray().astype(np.float64)
    P, _ = filters(R, 0)
    eye = np.eye(len(P))
    b1 = R @ (eye + 0.5 * (P - eye))
    b2 = b1 @ (eye + 0.5 * (P - eye))
    s1 = b2 @ (eye - 0.3 * P @ P)
    s2 = s1 @ (eye - 0.3 * P @ P)
    model = BSPM(k=0, K_b=2, T_s=0.6, K_s=2, sharpen_solver="euler", sharpen_power=2).fit(toy)
    users = np.arange(30)
    np.testing.assert_allclose(model.score(toy, users), s2, rtol=1e-4, atol=1e-5)
    model.set_params(time_average=True)
    np.testing.assert_allclose(model.score(toy, users), (b1 + b2 + s1 + s2) / 4, rtol=1e-4, atol=1e-5)


def test_new_users_are_scored_from_their_history(toy):
    model = BSPM(k=4).fit(toy)
    new = np.zeros((2, 12), dtype=np.float32)
    new[0, [0, 3]] = 1.0
    new[1, [5, 11]] = 1.0  # item 11 was never seen in training
    P, PI = filters(toy.toarray().astype(np.float64), 4)
    expected = (new @ P + 0.2 * new @ PI) @ rk4_step(P, 2.5)
    np.testing.assert_allclose(model.score(sp.csr_matrix(new), [0, 1]), expected, rtol=1e-4, atol=1e-5)


def test_keeps_only_what_scoring_needs(toy, tmp_path):
    model = BSPM(k=4).fit(toy)
    model.save(tmp_path / "m")
    loaded = BSPM.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(toy, np.arange(30)), model.score(toy, np.arange(30)))
    assert sorted(k for k in vars(model) if k.endswith("_")) == [
        "components_",
        "item_degree_",
        "n_items_",
        "n_users_",
        "normalized_",
    ]


def test_bad_parameters(toy):
    with pytest.raises(DataError, match="k = 30 must be below"):
        BSPM(k=30).fit(toy)
    for bad in ({"T_s": -1.0}, {"K_b": 0}, {"sharpen_solver": "dopri5"}, {"sharpen_power": 3}, {"merge": "mid"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            BSPM(k=2, **bad).fit(toy)


@pytest.mark.integration
@pytest.mark.statistical
def test_beats_popularity_on_ml100k(data_dir, seed, claim):
    split = ratio_split(load_movielens("ml-100k", data_dir=data_dir, min_rating=4), random_state=seed)
    pop = evaluate(Pop().fit(split.train), split, ks=(10,)).summary["ndcg@10"]
    ndcg = evaluate(BSPM(k=256, random_state=seed).fit(split.train), split, ks=(10,)).summary["ndcg@10"]
    ratio = claim("NDCG@10 over Pop's", ndcg / pop)
    assert ratio > OVER_POP_MIN, f"BSPM ndcg@10 {ndcg:.4f} vs Pop {pop:.4f}"
