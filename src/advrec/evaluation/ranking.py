"""Top-k selection from a full score matrix, with deterministic tie-breaking."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best items of each row, by descending score; ties go to the lower item index.

    ``scores`` is a (n_users, n_items) real array in which excluded items (e.g. the user's training
    items) are -inf. Returns (items, values): items int64 (n_users, k), values the matching scores
    (same float dtype as ``scores``; integer input is promoted to float64). The order equals
    ``np.argsort(-row, kind="stable")[:k]`` per row.

    Rows with fewer than k finite scores still get k items: the trailing ones have value -inf and
    are excluded items, which the caller must mask (e.g. ``values == -inf``). When k ≥ n_items every
    item is returned, sorted (shape (n_users, n_items)). NaN scores are rejected.

    Cost: one argpartition over the matrix plus a sort of the k chosen per row; only rows whose k-th
    value is tied with an item outside the chosen set get a full stable sort.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D (n_users, n_items) array, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; use -inf for excluded items")
    n_items = s.shape[1]

    if k >= n_items:
        items = np.argsort(-s, axis=1, kind="stable").astype(np.int64, copy=False)
        return items, np.take_along_axis(s, items, axis=1)

    # Cheap path: the k largest (unordered), then order them by (score desc, index asc).
    items = np.argpartition(s, n_items - k, axis=1)[:, n_items - k :]
    values = np.take_along_axis(s, items, axis=1)
    order = np.lexsort((items, -values), axis=1)
    items = np.take_along_axis(items, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)

    # The chosen set is only arbitrary where an item outside it ties with the k-th value; then more
    # than k items score ≥ that value. Redo only those rows with a stable full sort.
    kth = values[:, -1:]
    tied = np.count_nonzero(s >= kth, axis=1) > k
    if tied.any():
        fixed = np.argsort(-s[tied], axis=1, kind="stable")[:, :k]
        items[tied] = fixed
        values[tied] = np.take_along_axis(s[tied], fixed, axis=1)
    return items.astype(np.int64, copy=False), values


def entry_positions(rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every stored entry of a CSR matrix: for fancy-indexing a dense score block."""
    return np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr)), rows.indices
