"""Poisoned clients that promote target items in federated iALS, and the exposure of the targets they reach.

The attack follows PipAttack's popularity idea (Zhang et al., "PipAttack: Poisoning Federated Recommender Systems
for Manipulating Item Promotion", WSDM 2022) under FedRecAttack's threat model (Rong et al., ICDE 2022): a
malicious node takes part like any other (it holds users and answers their honest update, so its weight and most of
its update look normal), but it replaces the target items' rows of its update so that they move towards a goal:
the direction of the mean factor of the catalogue's most popular items (item popularity is public), at `scale`
times those items' mean norm. The users' factors score the popular items high, so a target there climbs in
everyone's list. The colluding nodes know how many they are among the nodes and boost their rows by nodes /
malicious (model replacement, Bagdasaryan et al. 2020): the mean over the nodes then lands on the goal.

A push bounded by the node's honest update norm does not get there: the honest clients re-solve a target's row
every round (benchmarks/results/federated_poisoning.md gives the figures), which is why the attack boosts.

The targets are unpopular items (seeded, among the items whose training count is at most the median): the attack is
worth most there and its effect shows clearly in the exposure ratio ER@K (`target_exposure`; FedRecAttack's metric,
the "target HR@K" of the benchmarks): over the users who have not interacted with a target, the share whose top K
holds it, averaged over targets.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from advrec.errors import ConfigError
from advrec.federated.fcf import BLOCK_FLOATS, FCFSettings, user_factors

POPULAR = 50  # the popular items whose mean factor the targets are pushed to


def target_items(train: sp.csr_matrix, count: int, seed: int) -> np.ndarray:
    """`count` seeded target items among those with 1 to the median number of training interactions."""
    counts = np.bincount(train.indices, minlength=train.shape[1])
    seen = counts[counts > 0]
    pool = np.flatnonzero((counts > 0) & (counts <= np.median(seen))) if seen.size else np.array([], dtype=int)
    if count > pool.size:
        raise ConfigError(f"{count} target items asked for but only {pool.size} items qualify")
    return np.sort(np.random.default_rng([seed, 11]).choice(pool, size=count, replace=False))


def malicious_partitions(partitions: int, share: float, seed: int) -> np.ndarray:
    """The seeded partition ids that attack: round(share × partitions) of them, at least one when share > 0."""
    if not 0 <= share < 1:
        raise ConfigError(f"the share of malicious nodes must lie in [0, 1), got {share}")
    n = 0 if share == 0 else max(1, round(share * partitions))
    return np.sort(np.random.default_rng([seed, 13]).permutation(partitions)[:n])


def popular_items(train: sp.csr_matrix, count: int = POPULAR) -> np.ndarray:
    counts = np.bincount(train.indices, minlength=train.shape[1])
    return np.argsort(-counts, kind="stable")[:count]


def poison(
    update: np.ndarray, Q: np.ndarray, targets: np.ndarray, popular: np.ndarray, scale: float, boost: float
) -> np.ndarray:
    """The honest `update` (items × factors) with its target rows replaced by `boost` × (goal − Q_t), the goal
    being the popular items' mean direction at `scale` × their mean norm."""
    direction = Q[popular].mean(0)
    direction = direction / max(float(np.linalg.norm(direction)), 1e-12)
    goal = scale * float(np.linalg.norm(Q[popular], axis=1).mean()) * direction
    out = update.copy()
    out[targets] = boost * (goal - Q[targets])
    return out


def target_exposure(
    history: sp.csr_matrix, Q: np.ndarray, settings: FCFSettings, targets: np.ndarray, k: int = 10
) -> tuple[float, int]:
    """(Σ_u ER_u, users): for each user with a history, the share of the targets outside the history that reach
    the top `k` of its ranking (history excluded); users whose history holds every target do not count."""
    history = sp.csr_matrix(history)
    active = np.flatnonzero(np.diff(history.indptr) > 0)
    total, users = 0.0, 0
    step = max(1, BLOCK_FLOATS // max(Q.shape[0], 1))  # users scored at once: a bounded block of users × items
    for lo in range(0, active.size, step):
        rows = history[active[lo : lo + step]]
        scores = user_factors(rows, Q, settings).numpy() @ Q.T
        scores[np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr)), rows.indices] = -np.inf
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # the k-th best score of each user
        eligible = np.isfinite(scores[:, targets])
        hits = (scores[:, targets] >= kth) & eligible
        n = eligible.sum(1)
        keep = n > 0
        total += float((hits.sum(1)[keep] / n[keep]).sum())
        users += int(keep.sum())
    return total, users
