"""`TextEASE`: EASE for items with interactions, a text → item-weights map for items without (cold start)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.models.base import Learned, Recommender
from advrec.models.ease import EASE
from advrec.models.params import Interval, TupleOf, declare
from advrec.text.item_text import encode_items


class TextEASE(Recommender):
    """Hybrid of EASE and sentence embeddings of item text (an attribute-to-weights mapping).

    EASE learns B (items × items) from interactions; column j of B says how each history item votes for
    item j. A ridge regression M (d × items) learns to predict those columns from the text vector v_j of
    warm items: min ‖V_warm M − B_warmᵀ‖² + `text_l2`‖M‖². An item with no training interaction gets the
    predicted column Mᵀv_j, rescaled to the mean norm of the learned columns (`cold_scale_`), so it is
    scored from the user's history like any other item and competes with warm items in one ranking.
    `blend` mixes the predicted columns into warm items too: (1 − blend)·B + blend·Mᵀv. The default 0.2 was
    best on ml-1m validation NDCG@10 (RecBole's protocol, seed 2020, over 0–0.5); on test it adds 0.0009
    NDCG@10 over EASE (paired t-test p = 0.009, 6,033 users) and 0.0008 on average over seeds 2020–2022.
    """

    _parameter_constraints = declare(
        l2=[Interval(float, 0, None, closed="neither")],
        text_l2=[Interval(float, 0, None, closed="neither")],
        blend=[Interval(float, 0, 1, closed="both")],
        model=[str, None],
        columns=[TupleOf(str, min_len=1), None],
        device=[str],
    )
    _required_state: ClassVar[dict[str, Learned]] = {
        "weights_": Learned("float", ("items", "items")),
        "cold_items_": Learned("int", (None,)),
        "cold_scale_": Learned("value"),
        "encoder_identity_": Learned("value"),
    }

    def __init__(
        self,
        l2: float = 1000.0,
        text_l2: float = 10.0,
        blend: float = 0.2,
        model: str | None = None,
        columns: Sequence[str] | None = None,
        device: str = "auto",
    ) -> None:
        self.l2 = l2
        self.text_l2 = text_l2
        self.blend = blend
        self.model = model
        self.columns = columns
        self.device = device

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> TextEASE:
        m = self._check_fit_input(X)
        self._set_shape(m)
        vectors, self.encoder_identity_ = encode_items(X, self.columns, self.model, self.device)
        V = vectors.astype(np.float64)
        B = EASE(l2=self.l2).fit(m).weights_
        warm = np.bincount(m.indices, minlength=m.shape[1]) > 0
        Vw = V[warm]
        gram = Vw.T @ Vw + self.text_l2 * np.eye(V.shape[1])
        M = np.linalg.solve(gram, Vw.T @ B[:, warm].T)  # (d, items): predicted column of B per text vector
        predicted = (V @ M).T  # (items, items): column j = predicted weights for item j
        np.fill_diagonal(predicted, 0.0)
        W = B.astype(np.float64)
        W[:, warm] = (1 - self.blend) * W[:, warm] + self.blend * predicted[:, warm]
        # ridge shrinks the predicted columns: rescale them to the size of the learned ones, so cold items
        # compete with warm items when both are ranked together
        scale = np.linalg.norm(B[:, warm], axis=0).mean() / max(
            np.linalg.norm(predicted[:, warm], axis=0).mean(), 1e-12
        )
        self.cold_scale_ = float(scale)
        W[:, ~warm] = scale * predicted[:, ~warm]
        self.weights_ = W.astype(np.float32)
        self.cold_items_ = np.flatnonzero(~warm)
        return self

    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        return self.weights_[items, target]

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return np.asarray(self._binary_rows(history, users) @ self.weights_)
