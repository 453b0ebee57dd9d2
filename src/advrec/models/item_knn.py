"""`ItemKNN`: item-based collaborative filtering with shrunk cosine similarity and top-k neighbours."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.models.base import Learned, Recommender
from advrec.models.params import Dimension, Float, Int, Interval, declare


class ItemKNN(Recommender):
    """sim(i, j) = |U_i ∩ U_j| / (‖x_i‖·‖x_j‖ + shrink); each item keeps its `k` most similar items.

    score(u, j) = Σ_{i ∈ history(u)} sim(i, j) over the neighbours kept for j (RecBole's ItemKNN).
    """

    _parameter_constraints = declare(
        k=[Interval(int, 1, None, closed="left")],
        shrink=[Interval(float, 0, None, closed="left")],
        block_size=[Interval(int, 1, None, closed="left")],
    )
    _search_space: ClassVar[dict[str, Dimension]] = {"k": Int(10, 1000, log=True), "shrink": Float(0.0, 100.0)}
    _required_state: ClassVar[dict[str, Learned]] = {"similarity_": Learned("sparse", ("items", "items"))}

    def __init__(self, k: int = 200, shrink: float = 0.0, block_size: int = 2048) -> None:
        self.k = k
        self.shrink = shrink
        self.block_size = block_size

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> ItemKNN:
        m = self._check_fit_input(X)
        self._set_shape(m)
        n = m.shape[1]
        Xc = sp.csc_matrix(m)
        norms = np.sqrt(np.asarray(Xc.power(2).sum(axis=0)).ravel())
        k = min(self.k, n - 1) if n > 1 else 1
        rows, cols, vals = [], [], []
        XT = Xc.T.tocsr()
        for start in range(0, n, self.block_size):
            stop = min(start + self.block_size, n)
            block = np.asarray((XT @ Xc[:, start:stop]).toarray(), dtype=np.float32)  # (n, b): column j = item j
            block /= (norms[:, None] * norms[None, start:stop] + self.shrink + 1e-12).astype(np.float32)
            block[np.arange(start, stop), np.arange(stop - start)] = 0.0
            top = np.argpartition(-block, k - 1, axis=0)[:k] if k < n else np.argsort(-block, axis=0)
            v = np.take_along_axis(block, top, axis=0)
            keep = v > 0
            rows.append(top[keep])
            cols.append(np.broadcast_to(np.arange(start, stop), top.shape)[keep])
            vals.append(v[keep])
        W = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n), dtype=np.float32
        )
        self.similarity_ = W
        return self

    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        return self.similarity_[items, target].toarray().ravel()

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return np.asarray((self._binary_rows(history, users) @ self.similarity_).toarray())
