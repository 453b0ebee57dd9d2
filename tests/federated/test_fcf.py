"""FCF's client step: the gradient of the iALS objective by hand and by finite differences, clipping per user."""

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ConfigError, DataError
from advrec.federated.fcf import FCFSettings, client_step, ials_loss, user_factors


@pytest.fixture
def tiny():
    rng = np.random.default_rng(0)
    dense = (rng.random((5, 7)) < 0.35).astype(np.float64)
    dense[4] = 0  # a user without interactions takes no part
    rows = sp.csr_matrix(dense)
    Q = rng.normal(scale=0.3, size=(7, 3))
    return rows, Q


def test_step_is_minus_lr_times_the_gradient_of_the_objective(tiny):
    rows, Q = tiny
    s = FCFSettings(alpha=2.0, reg=0.5, lr=0.1, n_users=4)
    total, stats = client_step(rows, Q, s)
    assert stats["users"] == 4 and stats["clipped_share"] == 0
    grad = np.zeros_like(Q)
    eps = 1e-6
    for i in range(Q.shape[0]):
        for j in range(Q.shape[1]):
            E = np.zeros_like(Q)
            E[i, j] = eps
            grad[i, j] = (ials_loss(rows, Q + E, s) - ials_loss(rows, Q - E, s)) / (2 * eps)
    np.testing.assert_allclose(total, -s.lr * grad, rtol=1e-5, atol=1e-8)


def test_gradient_by_hand_for_one_user(tiny):
    rows, Q = tiny
    s = FCFSettings(alpha=2.0, reg=0.0, lr=1.0, n_users=1)
    one = rows[[0]]
    x = user_factors(one, Q, s).numpy()[0]
    p = one.toarray()[0]
    c = 1 + s.alpha * p
    expected = -2 * np.outer(-c * (p - Q @ x), x)  # −∂/∂Q Σ_i c_i (p_i − q_i·x)²
    np.testing.assert_allclose(client_step(one, Q, s)[0], expected, rtol=1e-10)


def test_each_user_is_clipped_to_the_bound(tiny):
    rows, Q = tiny
    s = FCFSettings(alpha=2.0, reg=0.5, lr=0.1, n_users=4)
    free = [client_step(rows[[u]], Q, s)[0] for u in range(4)]
    bound = 0.5 * min(np.linalg.norm(d) for d in free)
    clipped = FCFSettings(alpha=2.0, reg=0.5, lr=0.1, n_users=4, clip=bound)
    total, stats = client_step(rows, Q, clipped)
    assert stats["clipped_share"] == 1.0
    np.testing.assert_allclose(stats["update_norm"], np.mean([np.linalg.norm(d) for d in free]), rtol=1e-9)
    expected = sum(d * bound / np.linalg.norm(d) for d in free)
    np.testing.assert_allclose(total, expected, rtol=1e-9)


def test_bad_settings_and_shapes(tiny):
    rows, Q = tiny
    with pytest.raises(ConfigError, match="clip"):
        FCFSettings(clip=0.0)
    with pytest.raises(ConfigError, match="lr"):
        FCFSettings(lr=float("nan"))
    with pytest.raises(DataError, match="items"):
        client_step(rows, Q[:5], FCFSettings())
