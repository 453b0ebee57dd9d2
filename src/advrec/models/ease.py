"""`EASE` (Steck, WWW 2019): a closed-form item–item linear autoencoder with a zero diagonal."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from advrec.data.interactions import Interactions
from advrec.errors import ConfigError, DataError
from advrec.models.base import Learned, Recommender
from advrec.models.params import Dimension, Float, Interval, Options, declare

DTYPES = ("float64", "float32")


def _size(n_bytes: float) -> str:
    """A byte count for people: GB, MB or kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= 0.1 * scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes / 1e3:.1f} kB"


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup limit; None when unknown."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return avail


def ease_memory_need(n_items: int, dtype: str = "float64") -> int:
    """Bytes EASE allocates at its peak: the dense item×item Gram matrix, inverted in place, and its float32
    copy (the weights) when the solve is not in float32."""
    itemsize = np.dtype(dtype).itemsize
    return n_items * n_items * (itemsize + (4 if itemsize != 4 else 0))


# OpenBLAS's threaded Cholesky (0.3.30, scipy's wheel) crashes the process on large matrices: measured here, a
# 17,632-item Gram matrix (Last.fm) segfaults in potrf with 2 threads and not with 1; 12,000 items pass with 2
# (OpenMathLib/OpenBLAS#2562 reports the same at 32,768 with 2 threads). Above this size it runs on one thread.
SINGLE_THREAD_CHOLESKY_ABOVE = 12_000


def invert_spd_in_place(a: np.ndarray, block: int = 512) -> np.ndarray:
    """Inverse of the symmetric positive definite C-contiguous `a`, written over `a` (Cholesky, no n×n copy)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (a,))
    large = a.shape[0] > SINGLE_THREAD_CHOLESKY_ABOVE
    with threadpool_limits(1, user_api="blas") if large else nullcontext():
        c, info = potrf(a.T, lower=False, overwrite_a=True, clean=False)  # a.T: the same matrix, Fortran order
        if info == 0:
            c, info = potri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise DataError(f"the regularised Gram matrix is not positive definite (LAPACK info {info}); raise l2")
    if not np.shares_memory(c, a):
        a[...] = c.T
    # the inverse is in a's lower triangle: mirror it into the upper one, a block of rows at a time
    n = a.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        a[start:stop, stop:] = a[stop:, start:stop].T
        d = a[start:stop, start:stop]
        d[...] = np.tril(d) + np.tril(d, -1).T
    return a


def check_gram_memory(
    model: str,
    n_items: int,
    dtype: str,
    need_of: Callable[[int, str], int] = ease_memory_need,
    what: str = "the dense {n} × {n} {dtype} Gram matrix, inverted in place, and the weights",
) -> None:
    """Refuses, before any allocation, a catalogue whose dense items×items matrices (by default EASE's: the Gram
    matrix inverted in place and the weights; `need_of(n_items, dtype)` bytes, described by `what`) do not fit
    in the memory available, naming the figures and the models that scale past it."""
    need = need_of(n_items, dtype)
    avail = available_memory()
    if avail is None or need <= avail:
        return
    hint = ""
    if dtype == "float64" and need_of(n_items, "float32") <= avail:
        hint = f"dtype='float32' needs {_size(need_of(n_items, 'float32'))}; "
    held = what.format(n=f"{n_items:,}", dtype=dtype)
    raise ConfigError(
        f"{model} on {n_items:,} items needs about {_size(need)} ({held}) but this machine has {_size(avail)} "
        "available; "
        f"{hint}for a catalogue this size use SANSA (a sparse approximate inverse of EASE), GFCF or BSPM"
    )


class EASE(Recommender):
    """EASE: B = I − P·diag(1/diag(P)), P = (XᵀX + l2·I)⁻¹; scores = history · B.

    The default `l2` suits MovieLens-sized data (tuned on ml-1m validation); larger, sparser catalogues
    usually want a larger value. `dtype` is the precision of the solve: "float64" needs 12·n² bytes (the
    Gram matrix, inverted in place, and the float32 weights), "float32" 4·n². Before allocating, `fit` checks
    that this fits in the available memory and refuses otherwise, naming `SANSA` and `GFCF`, which scale to
    large catalogues.
    """

    _parameter_constraints = declare(l2=[Interval(float, 0, None, closed="neither")], dtype=[Options(DTYPES)])
    _search_space: ClassVar[dict[str, Dimension]] = {"l2": Float(10.0, 1e4, log=True)}
    _required_state: ClassVar[dict[str, Learned]] = {"weights_": Learned("float", ("items", "items"))}

    def __init__(self, l2: float = 1000.0, dtype: str = "float64") -> None:
        self.l2 = l2
        self.dtype = dtype

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> EASE:
        m = self._check_fit_input(X)
        self._check_memory(m.shape[1])
        self._set_shape(m)
        P = (m.T @ m).astype(self.dtype).toarray()  # the Gram matrix, then its inverse in the same memory
        P[np.diag_indices_from(P)] += self.l2
        invert_spd_in_place(P)
        P /= -np.diag(P).copy()
        P[np.diag_indices_from(P)] = 0.0
        self.weights_ = P.astype(np.float32, copy=False)
        return self

    def _check_memory(self, n_items: int) -> None:
        check_gram_memory(type(self).__name__, n_items, self.dtype)

    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        return self.weights_[items, target]

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return np.asarray(self._binary_rows(history, users) @ self.weights_)
