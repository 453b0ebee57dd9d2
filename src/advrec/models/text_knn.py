"""`TextKNN`: content-based recommendation from sentence embeddings of item text."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.errors import ConfigError
from advrec.models.base import Recommender
from advrec.text.item_text import encode_items


class TextKNN(Recommender):
    """score(u, i) = cos(p_u, v_i), p_u = weighted mean of the text vectors v_j of the user's history items.

    Item vectors come from a pretrained sentence encoder over each item's text (title, year, genres, tags,
    or `columns`), so items without any interaction are scored like the others (cold start).
    `weighting="rating"` weights history items by their value in the history matrix, "uniform" equally.
    `fit` needs `Interactions` with item features.
    """

    def __init__(
        self,
        model: str | None = None,
        columns: Sequence[str] | None = None,
        weighting: str = "uniform",
        batch_size: int = 64,
        device: str = "auto",
    ) -> None:
        self.model = model
        self.columns = columns
        self.weighting = weighting
        self.batch_size = batch_size
        self.device = device

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> TextKNN:
        if self.weighting not in ("uniform", "rating"):
            raise ConfigError(f"weighting must be 'uniform' or 'rating', not {self.weighting!r}")
        m = self._check_fit_input(X)
        self._set_shape(m)
        self.item_vectors_, self.encoder_identity_ = encode_items(
            X, self.columns, self.model, self.device, self.batch_size
        )
        return self

    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        return self.item_vectors_[items] @ self.item_vectors_[target]

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        h = history[users] if self.weighting == "rating" else self._binary_rows(history, users)
        profile = np.asarray(h @ self.item_vectors_)
        norms = np.linalg.norm(profile, axis=1, keepdims=True)
        profile /= np.where(norms > 0, norms, 1.0)
        return profile @ self.item_vectors_.T
