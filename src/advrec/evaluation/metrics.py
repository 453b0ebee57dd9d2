"""Evaluation metrics (DESIGN.md section 5): pure numpy, vectorized over users.

Ranking metrics take a boolean hit matrix, so they do not depend on how the ranking was produced.
Every ranking metric returns one value per user; averaging (over users with a non-empty test set)
and significance tests between two models are left to the caller.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import stats

METRICS: tuple[str, ...] = ("hit", "precision", "recall", "nrecall", "ndcg", "mrr", "map")

# Discount table 1/log2(i+1) for 1-based ranks i, and its prefix sums (the ideal DCG for n relevant
# items). Grown on demand, never shrunk; read-only so callers cannot corrupt the cache.
_DISCOUNT: np.ndarray = np.zeros(0)
_IDCG: np.ndarray = np.zeros(0)


def _discount_tables(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (discount[:k], idcg[:k]) with discount[j] = 1/log2(j+2) and idcg[j] = Σ_{i≤j} discount[i]."""
    global _DISCOUNT, _IDCG
    if _DISCOUNT.size < k:
        size = max(k, 2 * _DISCOUNT.size, 64)
        discount = 1.0 / np.log2(np.arange(2, size + 2, dtype=np.float64))
        idcg = np.cumsum(discount)
        discount.flags.writeable = False
        idcg.flags.writeable = False
        _DISCOUNT, _IDCG = discount, idcg
    return _DISCOUNT[:k], _IDCG[:k]


def ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user ranking metrics at cutoff ``k`` with binary relevance.

    ``hits[u, j]`` is True when the item ranked at 0-based position j for user u is in u's test set T;
    ``n_relevant[u] = |T| ≥ 1``. Only ``hits[:, :k]`` is used. With h = Σ_{i≤K} [L_i ∈ T] and 1-based
    ranks i:

    - hit       = 1 if h > 0 else 0
    - precision = h / K
    - recall    = h / |T|                                     (RecBole)
    - nrecall   = h / min(K, |T|)                             (Mult-VAE)
    - ndcg      = Σ_{i: L_i∈T} 1/log2(i+1) / Σ_{i=1}^{min(K,|T|)} 1/log2(i+1)
    - mrr       = 1 / (rank of the first hit), 0 if none
    - map       = Σ_{i: L_i∈T} Precision@i / min(|T|, K)       (RecBole)

    Returns a dict keyed by :data:`METRICS`, each a float64 array of shape (n_users,).
    """
    hits = np.asarray(hits)
    n_rel = np.asarray(n_relevant)
    if hits.ndim != 2:
        raise ValueError(f"hits must be a 2-D (n_users, K_max) array, got shape {hits.shape}")
    if n_rel.shape != (hits.shape[0],):
        raise ValueError(f"n_relevant must have shape ({hits.shape[0]},), got {n_rel.shape}")
    if not 1 <= k <= hits.shape[1]:
        raise ValueError(f"k must be in [1, {hits.shape[1]}] (the width of hits), got {k}")
    if n_rel.size and n_rel.min() < 1:
        raise ValueError("n_relevant must be ≥ 1 for every user; drop users with an empty test set")

    h = hits[:, :k].astype(np.float64)
    n_hits = h.sum(axis=1)
    ideal_len = np.minimum(n_rel, k).astype(np.int64)
    discount, idcg = _discount_tables(k)

    any_hit = n_hits > 0
    first = np.argmax(h, axis=1)  # 0 where there is no hit; masked below
    precision_at_i = np.cumsum(h, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    return {
        "hit": any_hit.astype(np.float64),
        "precision": n_hits / k,
        "recall": n_hits / n_rel,
        "nrecall": n_hits / ideal_len,
        "ndcg": (h @ discount) / idcg[ideal_len - 1],
        "mrr": np.where(any_hit, 1.0 / (first + 1.0), 0.0),
        "map": (precision_at_i * h).sum(axis=1) / ideal_len,
    }


def _valid_items(top_items: np.ndarray, n_items: int) -> np.ndarray:
    """Flatten recommendation lists, dropping padding (negative ids); reject ids ≥ n_items."""
    items = np.asarray(top_items)
    if not np.issubdtype(items.dtype, np.integer):
        raise ValueError(f"top_items must hold integer item ids, got dtype {items.dtype}")
    flat = items.ravel()
    flat = flat[flat >= 0]
    if flat.size and flat.max() >= n_items:
        raise ValueError(f"top_items holds item id {flat.max()}, but n_items is {n_items}")
    return flat


def item_counts(top_items: np.ndarray, n_items: int) -> np.ndarray:
    """How many of the (n_users, K) recommendation lists hold each item: an int64 array of shape (n_items,).

    Negative ids are padding and are ignored. Counts of several blocks of users add up, so the item metrics
    below can be computed from the counts of a stream of user chunks.
    """
    return np.bincount(_valid_items(top_items, n_items), minlength=n_items)


def item_coverage(top_items: np.ndarray, n_items: int) -> float:
    """ItemCoverage = |∪_u L_u| / n_items over the (n_users, K) recommendation lists.

    Negative ids are padding (no recommendation at that slot) and are ignored.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be ≥ 1, got {n_items}")
    return coverage_of_counts(item_counts(top_items, n_items))


def coverage_of_counts(counts: np.ndarray) -> float:
    """ItemCoverage from per-item recommendation counts (`item_counts`): the share of items recommended."""
    c = np.asarray(counts)
    return float(np.count_nonzero(c) / c.size)


def novelty(top_items: np.ndarray, item_popularity: np.ndarray, n_users: int) -> float:
    """Novelty = mean over recommended slots of −log2(pop_i / n_users).

    ``pop_i`` = number of training users who interacted with item i, ``n_users`` = number of training
    users. Items with pop 0 are counted as pop 1 (so their self-information is log2(n_users), finite).
    Negative ids are padding and are ignored; NaN when nothing is recommended.
    """
    pop = np.asarray(item_popularity)
    if pop.ndim != 1:
        raise ValueError(f"item_popularity must be 1-D (n_items,), got shape {pop.shape}")
    return novelty_of_counts(item_counts(top_items, pop.size), pop, n_users)


def novelty_of_counts(counts: np.ndarray, item_popularity: np.ndarray, n_users: int) -> float:
    """Novelty from per-item recommendation counts (`item_counts`): Σ_i c_i·(−log2(pop_i / n_users)) / Σ_i c_i."""
    if n_users < 1:
        raise ValueError(f"n_users must be ≥ 1, got {n_users}")
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total == 0:
        return float("nan")
    p = np.maximum(np.asarray(item_popularity, dtype=np.float64), 1.0)
    return float(c @ -np.log2(p / n_users) / total)


def gini_index(top_items: np.ndarray, n_items: int) -> float:
    """RecBole's GiniIndex of how often each item is recommended.

    G = Σ_{i=1}^{n} (2i − n − 1) c_(i) / (n Σ_i c_i), where c_i is the number of lists containing item i
    (never-recommended items count as 0), c_(i) sorted ascending and n = n_items. 0 = perfectly even,
    (n−1)/n = a single item recommended. Negative ids are padding and are ignored; NaN when nothing
    is recommended.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be ≥ 1, got {n_items}")
    return gini_of_counts(item_counts(top_items, n_items))


def gini_of_counts(counts: np.ndarray) -> float:
    """GiniIndex from per-item recommendation counts (`item_counts`), as `gini_index` defines it."""
    c = np.sort(np.asarray(counts)).astype(np.float64)
    n, total = c.size, c.sum()
    if total == 0:
        return float("nan")
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * i - n - 1) * c) / (n * total))


def paired_test(a: np.ndarray, b: np.ndarray, method: Literal["t", "wilcoxon"] = "t") -> dict[str, Any]:
    """Paired significance test between per-user values of two models on the same users.

    ``method="t"``: scipy.stats.ttest_rel(a, b); ``method="wilcoxon"``: scipy.stats.wilcoxon(a, b)
    (two-sided, zero differences dropped). Returns {"statistic", "p_value", "mean_diff" = mean(a − b),
    "n" = number of pairs}. When every difference is 0 the result is statistic 0.0, p_value 1.0 for
    both methods (scipy would warn or return NaN).
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"paired_test needs 1-D arrays, got shapes {x.shape} and {y.shape}")
    if x.size != y.size:
        raise ValueError(f"paired_test needs arrays of equal length (same users), got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError(f"paired_test needs at least 2 pairs, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired_test got NaN or infinite values")
    if method not in ("t", "wilcoxon"):
        raise ValueError(f"method must be 't' or 'wilcoxon', got {method!r}")

    diff = x - y
    out: dict[str, Any] = {"mean_diff": float(diff.mean()), "n": int(x.size)}
    if not diff.any():
        out.update(statistic=0.0, p_value=1.0)
        return out
    res = stats.ttest_rel(x, y) if method == "t" else stats.wilcoxon(x, y)
    out.update(statistic=float(res.statistic), p_value=float(res.pvalue))
    return out
