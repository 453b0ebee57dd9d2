"""`GenreAffinity`: a content baseline that scores an item by the user's affinity to its genres."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.errors import DataError
from advrec.models.base import Learned, Recommender
from advrec.models.params import declare


class GenreAffinity(Recommender):
    """score(u, i) = mean over the genres g of item i of a_u(g), a_u(g) = share of u's history items in genre g.

    Genres come from the "|"-separated `genres` column of the item features, so items without any
    interaction are scored too (the cold-start baseline of the text models).
    """

    _parameter_constraints = declare(column=[str])
    _required_state: ClassVar[dict[str, Learned]] = {
        "item_genres_": Learned("float", ("items", None)),
        "genre_names_": Learned("value"),
    }

    def __init__(self, column: str = "genres") -> None:
        self.column = column

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> GenreAffinity:
        m = self._check_fit_input(X)
        if not isinstance(X, Interactions) or X.item_features is None or self.column not in X.item_features:
            raise DataError(f"GenreAffinity.fit needs Interactions whose item features have a {self.column!r} column")
        self._set_shape(m)
        genres = X.item_features[self.column].fillna("").astype(str).str.get_dummies(sep="|")
        G = genres.to_numpy(dtype=np.float32)  # items × genres
        self.item_genres_ = G
        self.genre_names_ = [str(c) for c in genres.columns]
        return self

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        h = self._binary_rows(history, users)
        counts = np.asarray(h @ self.item_genres_)
        affinity = counts / np.maximum(np.asarray(h.sum(axis=1)), 1.0)
        per_item = self.item_genres_ / np.maximum(self.item_genres_.sum(axis=1, keepdims=True), 1.0)
        return affinity @ per_item.T
