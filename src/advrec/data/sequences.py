"""Histories in time order: the order of a user's entries, their positions, and left-padded sequences.

One place for the order every sequential reader uses (sequential models, serving, co-occurrence pairs): by user,
then time, then item index for equal times.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def time_order(matrix: sp.csr_matrix, timestamps: np.ndarray) -> np.ndarray:
    """The permutation of `matrix`'s stored entries (CSR order) that sorts them by (user, time, item)."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return np.lexsort((matrix.indices, np.asarray(timestamps), rows))


def order_positions(matrix: sp.csr_matrix, timestamps: np.ndarray) -> sp.csr_matrix:
    """`matrix`'s pattern with, as values, each entry's 1-based position in its row ordered by (time, item)."""
    m = sp.csr_matrix(matrix)
    deg = np.diff(m.indptr)
    order = time_order(m, timestamps)
    pos = np.empty(m.nnz, dtype=np.float32)
    pos[order] = np.arange(m.nnz) - np.repeat(m.indptr[:-1], deg) + 1
    return sp.csr_matrix((pos, m.indices.copy(), m.indptr.copy()), shape=m.shape)


def sequences(ordered: sp.csr_matrix, users: np.ndarray, length: int) -> np.ndarray:
    """(len(users), length) int64: each user's latest `length` items (index + 1) in time order, left-padded
    with 0; `ordered` comes from `order_positions`."""
    sub = ordered[np.asarray(users)]
    deg = np.diff(sub.indptr)
    rows = np.repeat(np.arange(len(deg)), deg)
    from_end = deg[rows] - sub.data.astype(np.int64)  # 0: the latest
    keep = from_end < length
    out = np.zeros((len(deg), length), dtype=np.int64)
    out[rows[keep], length - 1 - from_end[keep]] = sub.indices[keep] + 1
    return out
