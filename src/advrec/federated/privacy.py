"""User-level differential privacy of federated training (DP-FedAvg: McMahan, Ramage, Talwar & Zhang, "Learning
Differentially Private Recurrent Language Models", ICLR 2018).

Each round every user takes part with probability q (Poisson sampling, drawn on the user's client), each user's
update is clipped to norm C, and the server adds Gaussian noise of standard deviation σ·C to the sum of the
updates before dividing by the expected number of users q·N (a fixed denominator: the count of users who took
part is not released). A round is then the subsampled Gaussian mechanism with respect to adding or removing one
user's whole data, and `rounds` of it compose; Opacus's RDP accountant gives ε at δ.
"""

from __future__ import annotations

import numpy as np

from advrec.errors import ConfigError
from advrec.privacy import opacus_notes_silenced


def _check(user_rate: float, rounds: int, delta: float) -> None:
    if not 0 < user_rate <= 1:
        raise ConfigError(f"user-rate must lie in (0, 1], got {user_rate}")
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must lie in (0, 1), got {delta}")


def noise_multiplier(epsilon: float, delta: float, user_rate: float, rounds: int) -> float:
    """The smallest σ (to Opacus's tolerance) for which `rounds` rounds at user rate q are (ε, δ)-DP."""
    from opacus.accountants.utils import get_noise_multiplier

    _check(user_rate, rounds, delta)
    if not epsilon > 0:
        raise ConfigError(f"epsilon must be positive, got {epsilon}")
    with opacus_notes_silenced():
        return float(
            get_noise_multiplier(
                target_epsilon=epsilon, target_delta=delta, sample_rate=user_rate, steps=rounds, accountant="rdp",
                epsilon_tolerance=0.005,
            )
        )  # fmt: skip


def epsilon_spent(sigma: float, delta: float, user_rate: float, rounds: int) -> float:
    """ε at δ after `rounds` rounds of noise multiplier σ at user rate q (Opacus's RDP accountant)."""
    from opacus.accountants import RDPAccountant

    _check(user_rate, rounds, delta)
    if not sigma > 0:
        return float("inf")
    accountant = RDPAccountant()
    accountant.history = [(float(sigma), float(user_rate), int(rounds))]
    with opacus_notes_silenced():
        return float(accountant.get_epsilon(delta))


def sampled_users(n_users: int, user_rate: float, seed: int, server_round: int, partition: int) -> np.ndarray:
    """Which of a client's `n_users` take part in a round: each with probability `user_rate`, independently
    (Poisson sampling), from a generator seeded by (seed, round, partition)."""
    if user_rate >= 1:
        return np.arange(n_users)
    rng = np.random.default_rng([seed, server_round, partition])
    return np.flatnonzero(rng.random(n_users) < user_rate)
