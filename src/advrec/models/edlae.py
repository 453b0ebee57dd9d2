"""`EDLAE` (Steck, NeurIPS 2020, "Autoencoders that don't overfit towards the Identity"): the full-rank
denoising (DLAE) and emphasized denoising (EDLAE) linear autoencoders in closed form."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.errors import ConfigError
from advrec.models.base import Learned, Recommender
from advrec.models.ease import DTYPES, check_gram_memory, invert_spd_in_place
from advrec.models.params import Dimension, Float, Interval, Options, declare

VARIANTS = ("edlae", "dlae")


class EDLAE(Recommender):
    """Full-rank linear autoencoders trained with dropout, in closed form; scores = history · B.

    With G = XᵀX (X the binary training matrix), dropout probability p (`dropout`) and L2 weight λ (`l2`),
    dropout on the input acts as a per-item L2 penalty proportional to the item's count:

        Λ = p / (1 − p) · dMat(diag(G)) + λ·I,        P = (G + Λ)⁻¹

    - `variant="dlae"` (denoising, Eq. 7 of the paper): B = (G + Λ)⁻¹ G = I − P·Λ. The diagonal of B is
      not constrained; dropout shrinks it only as far as Λ penalises it.
    - `variant="edlae"` (full emphasis on the dropped-out items, Eqs. 8 and 9): the emphasized objective
      forbids predicting an item from itself, i.e. diag(B) = 0, and the solution is
      B = I − P·dMat(1 ⊘ diag(P)). With p = 0 this is EASE with ridge λ.

    The same formulas are in the author's notebook (github.com/hasteck/EDLAE_NeurIPS2020, learn_EDLAE_fullrank).
    The defaults were chosen on ml-1m validation NDCG@10 (benchmarks/recbole_ml1m.py). `dtype` is the
    precision of the solve, with EASE's memory need (12·n² bytes in float64, 4·n² in float32), checked
    before allocating.
    """

    _parameter_constraints = declare(
        variant=[Options(VARIANTS)],
        dropout=[Interval(float, 0, 1, closed="left")],
        l2=[Interval(float, 0, None, closed="left")],
        dtype=[Options(DTYPES)],
    )
    _search_space: ClassVar[dict[str, Dimension]] = {"dropout": Float(0.0, 0.9), "l2": Float(1.0, 1e4, log=True)}
    _required_state: ClassVar[dict[str, Learned]] = {"weights_": Learned("float", ("items", "items"))}

    def __init__(self, variant: str = "edlae", dropout: float = 0.5, l2: float = 300.0, dtype: str = "float64") -> None:
        self.variant = variant
        self.dropout = dropout
        self.l2 = l2
        self.dtype = dtype

    def penalty(self, item_counts: np.ndarray) -> np.ndarray:
        """The diagonal of Λ: p/(1−p)·count + λ for each item."""
        p = float(self.dropout)
        return p / (1.0 - p) * np.asarray(item_counts, dtype=np.float64) + float(self.l2)

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> EDLAE:
        m = self._check_fit_input(X)
        if self.dropout == 0 and self.l2 == 0:
            raise ConfigError(f"{type(self).__name__}: dropout and l2 are both 0, so G + Λ is singular; raise one")
        check_gram_memory(type(self).__name__, m.shape[1], self.dtype)
        self._set_shape(m)
        P = (m.T @ m).astype(self.dtype).toarray()  # G, then (G + Λ)⁻¹ in the same memory
        diag = np.diag_indices_from(P)
        lam = self.penalty(P[diag]).astype(self.dtype)
        P[diag] += lam
        invert_spd_in_place(P)
        if self.variant == "edlae":
            P /= -np.diag(P).copy()
            P[diag] = 0.0
        else:
            P *= -lam[None, :]
            P[diag] += 1.0
        self.weights_ = P.astype(np.float32, copy=False)
        return self

    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        return self.weights_[items, target]

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return np.asarray(self._binary_rows(history, users) @ self.weights_)
