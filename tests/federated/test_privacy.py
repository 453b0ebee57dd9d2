"""The accountant of federated DP against the RDP of the Gaussian mechanism by hand, and user sampling."""

import numpy as np
import pytest

from advrec.errors import ConfigError
from advrec.federated.privacy import epsilon_spent, noise_multiplier, sampled_users


def test_full_participation_epsilon_by_hand():
    # without subsampling a round is the Gaussian mechanism: RDP α / (2σ²) at order α, and R rounds add up;
    # Opacus converts RDP to (ε, δ) by ε = rdp − (log δ + log α) / (α − 1) + log((α − 1) / α) over its orders
    sigma, rounds, delta = 3.0, 50, 1e-6
    orders = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
    rdp = rounds * orders / (2 * sigma**2)
    eps = rdp - (np.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)
    assert epsilon_spent(sigma, delta, 1.0, rounds) == pytest.approx(eps.min(), rel=1e-9)


def test_noise_multiplier_meets_the_target_and_subsampling_amplifies():
    sigma = noise_multiplier(8.0, 1e-6, 0.1, 100)
    assert 7.9 < epsilon_spent(sigma, 1e-6, 0.1, 100) <= 8.0
    assert noise_multiplier(8.0, 1e-6, 1.0, 100) > 2 * sigma  # every user in every round costs far more noise
    assert epsilon_spent(2 * sigma, 1e-6, 0.1, 100) < 8.0 and epsilon_spent(0.0, 1e-6, 0.1, 100) == float("inf")
    with pytest.raises(ConfigError, match="user-rate"):
        noise_multiplier(8.0, 1e-6, 0.0, 10)


def test_user_sampling_is_seeded_poisson():
    a = sampled_users(10_000, 0.1, 2020, 3, 1)
    np.testing.assert_array_equal(a, sampled_users(10_000, 0.1, 2020, 3, 1))
    assert not np.array_equal(a, sampled_users(10_000, 0.1, 2020, 4, 1))
    assert abs(len(a) - 1000) < 4 * np.sqrt(10_000 * 0.1 * 0.9)  # binomial count: 4 standard deviations
    np.testing.assert_array_equal(sampled_users(7, 1.0, 0, 1, 0), np.arange(7))
