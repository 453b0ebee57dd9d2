"""`SequentialRecommender`: the torch models that rank from the order of each history (SASRec and its kin).

A history is ordered by time: these models take `Interactions` with timestamps (ties broken by item index),
keep each user's latest `max_len` items and read them as a sequence. Internally an ordered history is a CSR
matrix whose values are the 1-based position of each entry in its user's time order (`order_positions`);
`sequences` turns its rows into left-padded arrays of item index + 1 (0 is the padding).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from advrec.data.interactions import Interactions
from advrec.data.sequences import order_positions, sequences
from advrec.data.splits import EvalSet
from advrec.errors import DataError
from advrec.models.params import Interval, declare
from advrec.models.torch_base import TorchRecommender, Valid


class SequentialRecommender(TorchRecommender, register=False):
    """A torch model that ranks from each user's latest `max_len` items in time order.

    `fit(X)` and `score(history, users)` take `Interactions` with timestamps (a bare matrix has no order and is
    refused). The training sequences (each user's latest `max_len` + 1 training items) are built once per fit;
    a model's `batches` yield user indices and `batch_sequences(users)` gives their rows. Under the sequential
    protocol (`leave_last_out`) the test history holds the validation item, as the interaction before the test one.
    """

    _sequential: ClassVar[bool] = True
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
        valid: Valid = None,
        init: TorchRecommender | Mapping[str, torch.Tensor] | None = None,
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
            cache["valid_set"], cache["valid_history"] = es, self._history_matrix(es.timed_history())
        return cache["valid_history"]
