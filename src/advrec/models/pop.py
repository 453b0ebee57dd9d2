"""`Pop`: items ranked by how many training users interacted with them."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.models.base import Learned, Recommender
from advrec.models.params import declare


class Pop(Recommender):
    """Most-popular baseline: score(u, i) = number of training users who interacted with i."""

    _parameter_constraints = declare()
    _required_state: ClassVar[dict[str, Learned]] = {"item_counts_": Learned("float", ("items",))}

    def __init__(self) -> None:
        pass

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> Pop:
        m = self._check_fit_input(X)
        self._set_shape(m)
        self.item_counts_ = np.bincount(m.indices, minlength=m.shape[1]).astype(np.float32)
        return self

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_counts_, (len(users), self.n_items_)).copy()
