"""Top-k selection from a full score matrix, with deterministic tie-breaking."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from advrec.errors import ConfigError


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best items of each row, by descending score; ties go to the lower item index.

    ``scores`` is a (n_users, n_items) real array in which excluded items (e.g. the user's training
    items) are -inf. Returns (items, values): items int64 (n_users, k), values the matching scores
    (same float dtype as ``scores``; integer input is promoted to float64). The order equals
    ``np.argsort(-row, kind="stable")[:k]`` per row.

    Rows with fewer than k finite scores still get k items: the trailing ones have value -inf and
    are excluded items, which the caller must mask (e.g. ``values == -inf``). When k ≥ n_items every
    item is returned, sorted (shape (n_users, n_items)). NaN scores are rejected.

    Cost: one partial selection over the matrix (`torch.topk` of k + 1 per row, no full index array) plus a
    sort of those; only rows whose k-th and (k+1)-th values tie get a full stable sort.
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

    # Cheap path: the k + 1 largest (torch.topk: no full index array), ordered by (score desc, index asc).
    block = np.ascontiguousarray(s, dtype=s.dtype if s.dtype in (np.float32, np.float64) else np.float64)
    values_t, items_t = torch.topk(torch.from_numpy(block if block.flags.writeable else block.copy()), k + 1, dim=1)
    items, values = items_t.numpy(), values_t.numpy().astype(s.dtype, copy=False)
    order = np.lexsort((items, -values), axis=1)
    items = np.take_along_axis(items, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)

    # The chosen k are only arbitrary where an item outside them ties with the k-th value, that is where the
    # (k+1)-th largest value equals the k-th. Redo only those rows with a stable full sort.
    tied = values[:, k] == values[:, k - 1]
    items, values = items[:, :k], values[:, :k]
    if tied.any():
        fixed = np.argsort(-s[tied], axis=1, kind="stable")[:, :k]
        items[tied] = fixed
        values[tied] = np.take_along_axis(s[tied], fixed, axis=1)
    return items.astype(np.int64, copy=False), values


def entry_positions(rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every stored entry of a CSR matrix: for fancy-indexing a dense score block."""
    return np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr)), rows.indices


DEFAULT_MEMORY_BUDGET = 512 * 2**20
"""Bytes the dense blocks of one chunk of users may take when scoring and ranking all items (512 MiB)."""

BYTES_PER_CELL = 16
"""Bytes per (user, item) cell of a chunk: the scores a model returns (float32, or float64 for some), the
working float32 copy with excluded items at -inf, and boolean NaN masks."""


def users_per_chunk(n_items: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """How many users to score and rank at once so that their dense blocks fit in `memory_budget` bytes.

    A chunk of c users over n items takes about c · n · `BYTES_PER_CELL` bytes, so
    c = max(1, memory_budget // (n · BYTES_PER_CELL)). A model's own scoring may take more (a network's
    hidden layers): leave room for it in the budget.
    """
    if n_items < 1:
        raise ConfigError(f"n_items must be ≥ 1, got {n_items}")
    if memory_budget < 1:
        raise ConfigError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    return max(1, int(memory_budget) // (int(n_items) * BYTES_PER_CELL))
