"""`EASE` (Steck, WWW 2019): a closed-form item–item linear autoencoder with a zero diagonal."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.errors import ConfigError
from advrec.models.base import Learned, Recommender


class EASE(Recommender):
    """EASE: B = I − P·diag(1/diag(P)), P = (XᵀX + l2·I)⁻¹; scores = history · B.

    The default `l2` suits MovieLens-sized data (tuned on ml-1m validation); larger, sparser catalogues
    usually want a larger value.
    """

    _required_state: ClassVar[dict[str, Learned]] = {"weights_": Learned("float", ("items", "items"))}

    def __init__(self, l2: float = 1000.0) -> None:
        self.l2 = l2

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> EASE:
        if not self.l2 > 0:
            raise ConfigError(f"l2 must be positive, got {self.l2}")
        m = self._check_fit_input(X)
        self._set_shape(m)
        gram = (m.T @ m).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        P = np.linalg.inv(gram)
        B = P / (-np.diag(P))
        B[np.diag_indices_from(B)] = 0.0
        self.weights_ = B.astype(np.float32)
        return self

    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        return self.weights_[items, target]

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return np.asarray(self._binary_rows(history, users) @ self.weights_)
