"""`SequentialRecommender`: the torch models that rank from the order of each history (SASRec and its kin).

A history is ordered by time: these models take `Interactions` with timestamps (ties broken by item index),
keep each user's latest `max_len` items and read them as a sequence. Internally an ordered history is a CSR
matrix whose values are the 1-based position of each entry in its user's time order (`order_positions`);
`sequences` turns its rows into left-padded arrays of item index + 1 (0 is the padding).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.data.splits import EvalSet, Split
from advrec.errors import DataError
from advrec.models.params import Interval, declare
from advrec.models.torch_base import TorchRecommender


def order_positions(matrix: sp.csr_matrix, timestamps: np.ndarray) -> sp.csr_matrix:
    """`matrix`'s pattern with, as values, each entry's 1-based position in its row ordered by (time, item)."""
    m = sp.csr_matrix(matrix)
    deg = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), deg)
    order = np.lexsort((m.indices, np.asarray(timestamps), rows))
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


def timed_history(es: EvalSet) -> Interactions:
    """An evaluation set's history as `Interactions` with its timestamps (what a sequential model scores from)."""
    from advrec.data.interactions import IdMap

    if es.times is None:
        raise DataError("this evaluation set has no timestamps: a sequential model needs the order of each history")
    n_users, n_items = es.history.shape
    ids = IdMap(np.arange(n_users), "user"), IdMap(np.arange(n_items), "item")
    return Interactions(es.history, *ids, timestamps=es.times.data)


class SequentialRecommender(TorchRecommender, register=False):
    """A torch model that ranks from each user's latest `max_len` items in time order.

    `fit(X)` and `score(history, users)` take `Interactions` with timestamps (a bare matrix has no order and is
    refused). The training sequences (each user's latest `max_len` + 1 training items) are built once per fit;
    a model's `batches` yield user indices and `batch_sequences(users)` gives their rows. Under the sequential
    protocol (`leave_last_out`) the test history holds the validation item, as the interaction before the test one.
    """

    sequential: ClassVar[bool] = True
    _parameter_constraints = declare(
        TorchRecommender._parameter_constraints, max_len=[Interval(int, 1, None, closed="left")]
    )
    max_len: int

    def _history_matrix(self, history: Any) -> sp.csr_matrix:
        """The history's order as a CSR matrix of positions (`order_positions`)."""
        name = type(self).__name__
        if not isinstance(history, Interactions):
            raise DataError(
                f"{name} ranks from the order of each history: pass Interactions with timestamps, "
                f"not a {type(history).__name__}"
            )
        if history.timestamps is None:
            raise DataError(f"{name} ranks from the order of each history: these interactions have no timestamps")
        return order_positions(history.matrix, history.timestamps)

    def fit(
        self,
        X: Interactions | sp.spmatrix,
        valid: EvalSet | Split | None = None,
        init: TorchRecommender | None = None,
        plugins: Any = (),
        checkpoint: Any = None,
    ) -> SequentialRecommender:
        self._check_fit_input(X)
        self._train_order = self._history_matrix(X)
        try:
            super().fit(X, valid, init=init, plugins=plugins, checkpoint=checkpoint)
        finally:
            del self._train_order
        return self

    def _prepare(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        seqs = sequences(self._train_order, np.arange(X.shape[0]), self.max_len + 1)
        self.training.cache["sequences"] = seqs.astype(np.int32)

    def batch_sequences(self, users: np.ndarray) -> np.ndarray:
        """The training sequences of `users`: (len(users), max_len + 1) item index + 1, left-padded with 0."""
        return self.training.cache["sequences"][users].astype(np.int64)

    def batches(self, X: sp.csr_matrix, rng: np.random.Generator) -> Any:
        return self.user_batches(X, rng)

    def _scoring_history(self, es: EvalSet) -> sp.csr_matrix:
        cache = self.training.cache
        if cache.get("valid_set") is not es:
            cache["valid_set"], cache["valid_history"] = es, self._history_matrix(timed_history(es))
        return cache["valid_history"]
