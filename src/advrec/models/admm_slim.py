"""`ADMMSLIM` (Steck, Dimakopoulou, Riabov, Jebara, WSDM 2020, "ADMM SLIM: Sparse Recommendations for Many
Users"): the SLIM objective solved by the alternating direction method of multipliers on items×items matrices."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.models.base import Learned, Recommender
from advrec.models.ease import DTYPES, check_gram_memory, invert_spd_in_place
from advrec.models.params import Dimension, Float, Interval, Options, declare

# items×items matrices held during the iterations: P, B_aux = P·G, C, Γ and two work buffers
_DENSE_MATRICES = 6
_ROW_BLOCK = 512


def admm_memory_need(n_items: int, dtype: str = "float64") -> int:
    """Bytes `ADMMSLIM.fit` holds at its peak: six dense items×items `dtype` matrices, plus the float32 weights
    when the solve is not in float32."""
    itemsize = np.dtype(dtype).itemsize
    return n_items * n_items * (_DENSE_MATRICES * itemsize + (4 if itemsize != 4 else 0))


class ADMMSLIM(Recommender):
    """SLIM by ADMM; scores = history · C (+ an item offset when `center_columns`).

    The objective, over the items×items weights B (G = XᵀX, X the binary training matrix):

        min_B ½‖X − XB‖²_F + λ₁‖B‖₁ + ½‖Λ^½ B‖²_F   s.t. diag(B) = 0  (and B ≥ 0 when `positive_only`)

    with the L2 weight of item i scaled by its frequency as in RecBole, Λ = λ₂·dMat(f^α), f_i = count_i /
    n_users (α = 0: the paper's plain λ₂·I). ADMM splits B (smooth part, zero diagonal) from C (L1 part,
    sign constraint) with the constraint B = C and the scaled dual Γ:

        P = (G + Λ + ρI)⁻¹                         (once: one dense Cholesky inverse)
        B̃ = P(G + ρ(C − Γ)) = B_aux + ρ·P(C − Γ),  B_aux = P·G = I − P·(Λ + ρI)
        γ = diag(B̃) ⊘ diag(P),   B = B̃ − P·dMat(γ)        (the Lagrangian step that zeroes diag(B))
        C = S(B + Γ, λ₁/ρ), S the soft threshold; C = (B + Γ − λ₁/ρ)₊ when `positive_only`
        Γ ← Γ + B − C

    starting from C = Γ = 0, for at most `iterations` steps; with `tol` > 0 it stops once both the primal
    residual ‖B − C‖_F and the change ‖C − C_prev‖_F are at most `tol` times ‖C‖_F. The weights kept are C
    (sparse by construction, zero diagonal). With λ₁ = 0, no sign constraint and α = 0 the fixed point is
    EASE with l2 = λ₂. `center_columns` fits on column-centred data without densifying X
    (Gc = G − n·μμᵀ, μ the item means) and scores (x − μ)·C + μ.

    The matrices are dense items×items, like EASE: six `dtype` matrices at the peak (`admm_memory_need`),
    checked against the available memory before allocating, and one items×items product per iteration.
    The defaults are RecBole's published best on ml-1m (λ₁ = 5, λ₂ = 5000, α = 1, ρ = 4000, 100 steps,
    non-negative).
    """

    _parameter_constraints = declare(
        l1=[Interval(float, 0, None, closed="left")],
        l2=[Interval(float, 0, None, closed="left")],
        alpha=[Interval(float, 0, None, closed="left")],
        rho=[Interval(float, 0, None, closed="neither")],
        iterations=[Interval(int, 1, None)],
        tol=[Interval(float, 0, None, closed="left")],
        positive_only=[bool],
        center_columns=[bool],
        dtype=[Options(DTYPES)],
    )
    _search_space: ClassVar[dict[str, Dimension]] = {
        "l1": Float(0.1, 50.0, log=True),
        "l2": Float(100.0, 2e4, log=True),
    }
    _required_state: ClassVar[dict[str, Learned]] = {
        "weights_": Learned("float", ("items", "items")),
        "offset_": Learned("float", ("items",)),
        "iterations_run_": Learned("value"),
    }

    def __init__(
        self,
        l1: float = 5.0,
        l2: float = 5000.0,
        alpha: float = 1.0,
        rho: float = 4000.0,
        iterations: int = 100,
        tol: float = 0.0,
        positive_only: bool = True,
        center_columns: bool = False,
        dtype: str = "float64",
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.alpha = alpha
        self.rho = rho
        self.iterations = iterations
        self.tol = tol
        self.positive_only = positive_only
        self.center_columns = center_columns
        self.dtype = dtype

    def penalty(self, item_counts: np.ndarray, n_users: int) -> np.ndarray:
        """The diagonal of Λ: λ₂·(count / n_users)^α for each item."""
        freq = np.asarray(item_counts, dtype=np.float64) / float(n_users)
        return float(self.l2) * np.power(freq, float(self.alpha))

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> ADMMSLIM:
        m = self._check_fit_input(X)
        n_users, n_items = m.shape
        check_gram_memory(
            type(self).__name__,
            n_items,
            self.dtype,
            need_of=admm_memory_need,
            what="six dense {n} × {n} {dtype} matrices: the inverse, P·G, C, Γ and two work buffers",
        )
        self._set_shape(m)
        counts = np.asarray(m.sum(axis=0)).ravel()
        P = (m.T @ m).astype(self.dtype).toarray()  # G, then (G + Λ + ρI)⁻¹ in the same memory
        means = counts / n_users
        if self.center_columns:  # (X − 1μᵀ)ᵀ(X − 1μᵀ) = G − n·μμᵀ
            P -= (n_users * np.outer(means, means)).astype(self.dtype)
        diag = np.diag_indices_from(P)
        d = (self.penalty(counts, n_users) + float(self.rho)).astype(self.dtype)
        P[diag] += d
        invert_spd_in_place(P)
        C, self.iterations_run_ = self._iterate(P, d)
        del P
        self.weights_ = C.astype(np.float32, copy=False)
        offset = means - means @ C if self.center_columns else np.zeros(n_items)
        self.offset_ = offset.astype(np.float32)
        return self

    def _iterate(self, P: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, int]:
        """The ADMM steps from C = Γ = 0, on preallocated buffers; returns C and the number of steps run."""
        rho, threshold = float(self.rho), float(self.l1) / float(self.rho)
        B_aux = P * -d[None, :]  # P·G = P·(G + D − D) = I − P·D
        B_aux[np.diag_indices_from(B_aux)] += 1.0
        p_diag = np.diag(P).copy()
        diag = np.diag_indices_from(P)
        C, Gam = np.zeros_like(P), np.zeros_like(P)
        W, V = np.empty_like(P), np.empty_like(P)
        steps = 0
        while steps < int(self.iterations):
            steps += 1
            np.subtract(C, Gam, out=W)
            np.matmul(P, W, out=V)
            V *= rho
            V += B_aux  # B̃
            gamma = np.diag(V) / p_diag
            np.multiply(P, gamma[None, :], out=W)
            V -= W  # B: zero diagonal (up to rounding, which the next line removes)
            V[diag] = 0.0
            np.add(V, Gam, out=W)
            self._shrink(W, threshold)  # the new C
            np.subtract(V, W, out=V)  # B − C
            Gam += V
            primal = float(np.linalg.norm(V))
            np.subtract(W, C, out=V)
            change = float(np.linalg.norm(V))
            C, W = W, C
            if self.tol > 0 and max(primal, change) <= self.tol * float(np.linalg.norm(C)):
                break
        return C, steps

    def _shrink(self, W: np.ndarray, threshold: float) -> None:
        """W ← S(W, threshold) in place (soft threshold), or (W − threshold)₊ when `positive_only`."""
        if self.positive_only:
            W -= threshold
            np.maximum(W, 0.0, out=W)
            return
        for start in range(0, W.shape[0], _ROW_BLOCK):  # S(x) = x − clip(x, −t, t), a block of rows at a time
            block = W[start : start + _ROW_BLOCK]
            block -= np.clip(block, -threshold, threshold)

    @property
    def density(self) -> float:
        """The share of non-zero weights (off the diagonal)."""
        self._check_fitted()
        n = self.n_items_
        return float(np.count_nonzero(self.weights_)) / max(n * (n - 1), 1)

    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        return self.weights_[items, target]

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        scores = np.asarray(self._binary_rows(history, users) @ self.weights_)
        if self.center_columns:  # (x − μ)·C + μ = x·C + (μ − μ·C)
            scores += self.offset_[None, :]
        return scores
