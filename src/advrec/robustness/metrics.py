"""How much an attack moved a model: target-item hit ratio, prediction and rank shift, overall NDCG change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from advrec.data.splits import Split
from advrec.errors import DataError
from advrec.evaluation import evaluate
from advrec.models.base import Recommender


def target_ranks(
    model: Recommender, history: sp.csr_matrix, targets: Sequence[int], users: np.ndarray, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each target among each user's unseen items (ties by item index, as in evaluation), and
    the target's score: two (len(users), len(targets)) arrays."""
    t = np.asarray(targets, dtype=np.int64)
    ranks = np.zeros((len(users), len(t)), dtype=np.int64)
    scores = np.zeros((len(users), len(t)), dtype=np.float32)
    for s in range(0, len(users), batch_size):
        ub = users[s : s + batch_size]
        sc = np.array(model.score(history, ub), dtype=np.float32)
        h = history[ub].tocoo()
        sc[h.row, h.col] = -np.inf  # seen items are not ranked
        st = sc[:, t]  # (b, T)
        above = (sc[:, None, :] > st[:, :, None]).sum(axis=2)
        tied_before = (sc[:, None, :] == st[:, :, None]) & (np.arange(sc.shape[1])[None, None, :] < t[None, :, None])
        ranks[s : s + len(ub)] = above + tied_before.sum(axis=2)
        scores[s : s + len(ub)] = st
    return ranks, scores


def eligible_users(history: sp.csr_matrix, targets: Sequence[int], n_genuine: int | None = None) -> np.ndarray:
    """Boolean (n_users, len(targets)): genuine users (the first `n_genuine`) without the target in `history`."""
    n = history.shape[0] if n_genuine is None else n_genuine
    has = np.asarray(history[:n][:, np.asarray(targets)].todense()) != 0
    return ~has


def attack_effect(
    clean: Recommender,
    poisoned: Recommender,
    split: Split,
    targets: Sequence[int],
    ks: Sequence[int] = (10, 50),
    ndcg_k: int = 10,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Target HR@K before and after (over genuine users who had not interacted with the target, averaged over
    targets), mean prediction shift and rank shift of the targets, and overall NDCG@`ndcg_k` on the test part.

    Both models are scored from `split`'s history (the genuine users' rows); the poisoned model was trained on
    those rows plus fake users appended after them.
    """
    history = split.history()
    n = history.shape[0]
    if poisoned.n_items_ != history.shape[1] or clean.n_items_ != history.shape[1]:
        raise DataError("the models and the split have different item counts")
    mask = eligible_users(history, targets)
    users = np.flatnonzero(mask.any(axis=1))
    r0, s0 = target_ranks(clean, history, targets, users, batch_size)
    r1, s1 = target_ranks(poisoned, history, targets, users, batch_size)
    m = mask[users]
    out: dict[str, Any] = {"targets": [int(t) for t in targets], "eligible_users": int(m.sum(axis=0).mean())}
    for k in ks:
        hr0 = np.array([(r0[m[:, j], j] < k).mean() for j in range(m.shape[1])])
        hr1 = np.array([(r1[m[:, j], j] < k).mean() for j in range(m.shape[1])])
        out[f"hr@{k}_before"], out[f"hr@{k}_after"] = float(hr0.mean()), float(hr1.mean())
    out["prediction_shift"] = float((s1[m] - s0[m]).mean())  # seen items (score -inf) are outside m
    out["rank_shift"] = float((r0 - r1)[m].mean())  # positive: targets moved up
    e0 = evaluate(clean, split, ks=(ndcg_k,), metrics=("ndcg",)).summary[f"ndcg@{ndcg_k}"]
    e1 = evaluate(poisoned, split, ks=(ndcg_k,), metrics=("ndcg",)).summary[f"ndcg@{ndcg_k}"]
    out[f"ndcg@{ndcg_k}_before"], out[f"ndcg@{ndcg_k}_after"] = float(e0), float(e1)
    out["genuine_users"] = n
    return out
