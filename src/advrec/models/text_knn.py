"""`TextKNN`: content-based recommendation from sentence embeddings of item text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions, as_csr
from advrec.errors import ConfigError, DataError
from advrec.models.base import Learned, Recommender
from advrec.models.params import Interval, Options, TupleOf, declare
from advrec.text.item_text import encode_items

WEIGHTINGS = ("uniform", "rating", "recency")
AGGREGATES = ("mean", "max", "max+mean")
# history entries whose similarity rows are computed at once by aggregate="max" (block × items floats)
MAX_BLOCK_FLOATS = 1 << 24


def recency_weights(X: Interactions, half_life: float) -> sp.csr_matrix:
    """X's entries weighted 0.5 ** (r / half_life), r = how many of the user's interactions are more recent
    (interactions at the same time share a rank); same sparsity as `X.matrix`."""
    if X.timestamps is None:
        raise DataError("recency weighting needs timestamps, and this history has none")
    if not half_life > 0:
        raise ConfigError(f"half_life must be positive, got {half_life}")
    m = X.matrix
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((-X.timestamps, rows))  # by user, most recent first
    t, r = X.timestamps[order], rows[order]
    pos = np.arange(len(order))
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = (r[1:] != r[:-1]) | (t[1:] != t[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0))
    rank = np.empty(len(order), dtype=np.float64)
    rank[order] = group_start - m.indptr[r]
    return sp.csr_matrix((0.5 ** (rank / half_life), m.indices, m.indptr), shape=m.shape)


class TextKNN(Recommender):
    """score(u, i) = cos(p_u, v_i), p_u = weighted mean of the text vectors v_j of the user's history items;
    with `aggregate="max"`, score(u, i) = max over the history items j of cos(v_j, v_i) (a user with varied
    interests is not averaged into one direction), with "max+mean" the sum of both (uniform weighting only).

    Item vectors come from a pretrained sentence encoder over each item's text (title, year, genres, tags,
    or `columns`), so items without any interaction are scored like the others (cold start).
    `weighting="rating"` weights history items by their value in the history matrix, "uniform" equally,
    "recency" by 0.5 ** (r / half_life) where r counts the user's more recent interactions (the history
    must then be `Interactions` with timestamps). `center=True` subtracts the catalogue's mean text vector
    before normalising each vector, so the direction every item text shares (often most of a sentence
    encoder's cosine) no longer dominates the similarities. `fit` needs `Interactions` with item features.
    """

    _parameter_constraints = declare(
        model=[str, None],
        columns=[TupleOf(str, min_len=1), None],
        weighting=[Options(WEIGHTINGS)],
        half_life=[Interval(float, 0, None, closed="neither")],
        center=[bool],
        aggregate=[Options(AGGREGATES)],
        batch_size=[Interval(int, 1, None, closed="left")],
        device=[str],
    )
    _required_state: ClassVar[dict[str, Learned]] = {
        "item_vectors_": Learned("float", ("items", None)),
        "encoder_identity_": Learned("value"),
    }

    def __init__(
        self,
        model: str | None = None,
        columns: Sequence[str] | None = None,
        weighting: str = "uniform",
        half_life: float = 20.0,
        center: bool = False,
        aggregate: str = "mean",
        batch_size: int = 128,
        device: str = "auto",
    ) -> None:
        self.model = model
        self.columns = columns
        self.weighting = weighting
        self.half_life = half_life
        self.center = center
        self.aggregate = aggregate
        self.batch_size = batch_size
        self.device = device

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> TextKNN:
        if self.aggregate != "mean" and self.weighting != "uniform":
            raise ConfigError(f"aggregate={self.aggregate!r} takes uniform weighting only, not {self.weighting!r}")
        m = self._check_fit_input(X)
        self._set_shape(m)
        vectors, self.encoder_identity_ = encode_items(X, self.columns, self.model, self.device, self.batch_size)
        if self.center:
            vectors = vectors - vectors.mean(axis=0, dtype=np.float64).astype(vectors.dtype)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors /= np.where(norms > 0, norms, 1.0)
        self.item_vectors_ = vectors
        return self

    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        return self.item_vectors_[items] @ self.item_vectors_[target]

    @property
    def sequential(self) -> bool:
        """With recency weights the scores depend on the order of the history."""
        return self.weighting == "recency"

    def _history_matrix(self, history: Any) -> sp.csr_matrix:
        if self.weighting != "recency":
            return as_csr(history, "history")
        if not isinstance(history, Interactions):
            raise DataError("TextKNN(weighting='recency') scores from Interactions with timestamps, not a bare matrix")
        return recency_weights(history, self.half_life)

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        h = self._binary_rows(history, users) if self.weighting == "uniform" else history[users]
        if self.aggregate == "mean":
            return self._mean_similarity(h)
        best = self._max_similarity(h)
        return best if self.aggregate == "max" else best + self._mean_similarity(h)

    def _mean_similarity(self, h: sp.csr_matrix) -> np.ndarray:
        profile = np.asarray(h @ self.item_vectors_)
        norms = np.linalg.norm(profile, axis=1, keepdims=True)
        profile /= np.where(norms > 0, norms, 1.0)
        return profile @ self.item_vectors_.T

    def _max_similarity(self, h: sp.csr_matrix) -> np.ndarray:
        """Row u: the elementwise max over u's history items j of v_j · V^T (0 for an empty history), computed
        over blocks of history entries so that memory stays bounded whatever the history lengths."""
        V = self.item_vectors_
        out = np.full((h.shape[0], V.shape[0]), -np.inf, dtype=np.float32)
        rows = np.repeat(np.arange(h.shape[0]), np.diff(h.indptr))
        block = max(1, MAX_BLOCK_FLOATS // max(V.shape[0], 1))
        for lo in range(0, h.nnz, block):
            r, idx = rows[lo : lo + block], h.indices[lo : lo + block]
            starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])  # one segment per user in the block
            seg = np.maximum.reduceat(V[idx] @ V.T, starts, axis=0)
            out[r[starts]] = np.maximum(out[r[starts]], seg)
        out[np.diff(h.indptr) == 0] = 0.0
        return out
