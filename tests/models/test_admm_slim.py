"""ADMM-SLIM: the ridge limit against EASE, the constraints it enforces, sparsity from λ₁, centring, bad input."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ConfigError
from advrec.models import ADMMSLIM, EASE, EDLAE
from advrec.models import ease as ease_module
from advrec.models.admm_slim import admm_memory_need
from advrec.testing import check_recommender


@pytest.fixture
def toy() -> sp.csr_matrix:
    rng = np.random.default_rng(5)
    dense = (rng.random((60, 15)) < 0.3).astype(np.float32)
    dense[np.arange(60), np.arange(60) % 15] = 1.0  # every item seen, with unequal counts
    return sp.csr_matrix(dense)


def ridge(**kw) -> ADMMSLIM:
    """No L1, no sign constraint: ADMM then solves EASE's problem."""
    return ADMMSLIM(l1=0.0, positive_only=False, iterations=2000, tol=1e-7, **kw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ADMMSLIM(l1=0.1, l2=1.0, alpha=0.0, rho=1.0, iterations=50),
        lambda: ADMMSLIM(l1=0.1, l2=1.0, alpha=0.0, rho=1.0, iterations=50, positive_only=False, dtype="float32"),
        lambda: ADMMSLIM(l1=0.1, l2=10.0, rho=1.0, iterations=50, center_columns=True),
    ],
    ids=["nonnegative", "signed-float32", "centred"],
)
def test_conformance(make, tmp_path):
    check_recommender(make, tmp_path, min_accuracy=0.9)


@pytest.mark.parametrize("rho", [1.0, 5.0, 50.0])
def test_without_l1_and_sign_it_converges_to_ease(toy, rho):
    model = ridge(l2=5.0, alpha=0.0, rho=rho).fit(toy)
    np.testing.assert_allclose(model.weights_, EASE(l2=5.0).fit(toy).weights_, atol=1e-5)
    assert model.iterations_run_ < 2000  # stopped by tol


def test_frequency_scaled_l2_is_edlae(toy):
    """α = 1: Λ = λ₂·count/n_users, EDLAE's dropout penalty p/(1−p)·count with p/(1−p) = λ₂/n_users."""
    n_users = toy.shape[0]
    model = ridge(l2=0.5 * n_users, alpha=1.0, rho=5.0).fit(toy)
    np.testing.assert_allclose(model.weights_, EDLAE(dropout=1 / 3, l2=0.0).fit(toy).weights_, atol=1e-5)


def test_diagonal_is_zero_and_nonnegativity_holds(toy):
    signed = ADMMSLIM(l1=0.5, l2=5.0, alpha=0.0, rho=5.0, positive_only=False).fit(toy).weights_
    assert (np.diag(signed) == 0).all()
    assert signed.min() < 0  # the signed solution has negative weights here, so the constraint below binds
    positive = ADMMSLIM(l1=0.5, l2=5.0, alpha=0.0, rho=5.0).fit(toy).weights_
    assert (np.diag(positive) == 0).all()
    assert positive.min() >= 0


def test_sparsity_grows_with_l1(toy):
    density = [
        ADMMSLIM(l1=l1, l2=5.0, alpha=0.0, rho=5.0, iterations=500, tol=1e-6).fit(toy).density
        for l1 in (0.0, 0.5, 2.0, 5.0, 50.0)
    ]
    assert all(a >= b for a, b in itertools.pairwise(density)), density
    assert density[0] > 0.6 and density[-2] < 0.5 and density[-1] == 0.0, density  # measured 0.65, 0.40, 0


def test_matches_a_direct_proximal_solution(toy):
    """The ADMM fixed point solves the lasso-ridge problem: its optimality conditions hold column by column."""
    l1, l2 = 1.0, 5.0
    C = ADMMSLIM(l1=l1, l2=l2, alpha=0.0, rho=5.0, iterations=5000, tol=1e-8, positive_only=False).fit(toy).weights_
    G = (toy.T @ toy).toarray().astype(np.float64)
    grad = G @ C - G + l2 * C  # gradient of the smooth part, off the diagonal
    off = ~np.eye(G.shape[0], dtype=bool)
    nz = (C != 0) & off
    np.testing.assert_allclose(grad[nz], -l1 * np.sign(C[nz]), atol=1e-3)
    assert (np.abs(grad[(C == 0) & off]) <= l1 + 1e-3).all()


def test_centred_scores_add_the_item_offset(toy):
    model = ADMMSLIM(l1=0.5, l2=5.0, alpha=0.0, rho=5.0, center_columns=True).fit(toy)
    mu = np.asarray(toy.mean(axis=0)).ravel()
    users = np.arange(5)
    expected = (toy[users].toarray() - mu) @ model.weights_ + mu
    np.testing.assert_allclose(model.score(toy, users), expected, atol=1e-5)


def test_bad_parameters_are_refused(toy):
    for bad in ({"l1": -1.0}, {"l2": -1.0}, {"rho": 0.0}, {"alpha": -0.5}, {"iterations": 0}, {"tol": -1e-3}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ADMMSLIM(**bad).fit(toy)
    with pytest.raises(ConfigError, match="dtype"):
        ADMMSLIM(dtype="float16").fit(toy)
    with pytest.raises(ConfigError, match="positive_only"):
        ADMMSLIM(positive_only="yes").fit(toy)


def test_memory_guard_refuses_before_allocating(toy, monkeypatch):
    assert admm_memory_need(1000) == 1000**2 * (6 * 8 + 4)
    monkeypatch.setattr(ease_module, "available_memory", lambda: 2_000)
    with pytest.raises(ConfigError, match=r"ADMMSLIM on 15 items needs about .*six dense"):
        ADMMSLIM().fit(toy)
