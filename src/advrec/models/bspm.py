"""`BSPM` (Choi et al., SIGIR 2023, "Blurring-Sharpening Process Models for Collaborative Filtering")."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.errors import DataError
from advrec.models.base import Learned, Recommender
from advrec.models.gfcf import normalized_interactions, right_singular_vectors
from advrec.models.params import RANDOM_STATE, Choice, Dimension, Float, Int, Interval, Options, declare

Field = Callable[[np.ndarray], np.ndarray]

SOLVERS = ("euler", "rk4")


def integrate(f: Field, s0: np.ndarray, T: float, steps: int, solver: str) -> list[np.ndarray]:
    """The states at t = T/steps, 2T/steps, ..., T of ds/dt = f(s), s(0) = s0, by fixed-step Euler or RK4."""
    h = float(T) / steps
    s, out = s0, []
    for _ in range(steps):
        if solver == "euler":
            s = s + h * f(s)
        else:
            k1 = f(s)
            k2 = f(s + (h / 2) * k1)
            k3 = f(s + (h / 2) * k2)
            k4 = f(s + h * k3)
            s = s + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(s)
    return out


class BSPM(Recommender):
    """Blurring-sharpening process model: a user's row is blurred by two ODEs, then sharpened by a third.

    With r the user's binary history row (not normalised, as in GF-CF), R̃ = D_U^{-1/2} R D_I^{-1/2} the
    normalised training matrix, P̃ = R̃ᵀR̃ the linear filter and P_I = D_I^{-1/2} V Vᵀ D_I^{1/2} the ideal
    low-pass filter (V: top-`k` right singular vectors of R̃), the processes on row vectors s(t) are

        blurring (linear):      ds/dt = s P̃ − s,            s(0) = r, t ∈ [0, T_b], K_b steps
        blurring (ideal):       ds/dt = s P_I − s,           s(0) = r, t ∈ [0, T_i], K_i steps
        sharpening:             ds/dt = −s P̃  (or −s P̃²),   t ∈ [0, T_s], K_s steps

    Early merge (`merge="early"`, BSPM-EM) starts the sharpening from β·s_I(T_i) + s_b(T_b) and scores with
    its end state; late merge (`merge="late"`, BSPM-LM) sharpens s_b(T_b) alone and adds β·s_I(T_i) at the
    end. With `time_average`, the end state is replaced by the mean of the blurring and sharpening states
    at their step times (t = 0 excluded), as the authors' time-point combination. Each ODE is solved with
    fixed steps (`euler` or `rk4`); with one Euler step over T = 1 a blurring gives exactly r P̃ (r P_I).
    The settings of the paper's Gowalla run are the defaults: k = 448, β = 0.2, T_b = T_i = 1 with one
    Euler step each, T_s = 2.5 with one RK4 step, early merge (published Recall@20 0.1920, NDCG@20 0.1597).

    Nothing items×items is formed: P̃x is computed as R̃ᵀ(R̃x), two sparse products per application, on
    the batch of users being scored (one RK4 step of the sharpening costs four). The model keeps R̃ (a
    sparse users×items matrix with the training interactions' pattern: it reveals who saw what, as an
    item–item filter would not), the k item factors and the item degrees. On Gowalla: 810k entries of R̃
    (9.7 MB), 448 × 40,981 float32 factors (73 MB).
    """

    _parameter_constraints = declare(
        k=[Interval(int, 0, None, closed="left")],
        beta=[Interval(float, 0, None, closed="left")],
        T_b=[Interval(float, 0, None, closed="left")],
        K_b=[Interval(int, 1, None, closed="left")],
        blur_solver=[Options(SOLVERS)],
        T_i=[Interval(float, 0, None, closed="left")],
        K_i=[Interval(int, 1, None, closed="left")],
        ideal_solver=[Options(SOLVERS)],
        T_s=[Interval(float, 0, None, closed="left")],
        K_s=[Interval(int, 1, None, closed="left")],
        sharpen_solver=[Options(SOLVERS)],
        sharpen_power=[Interval(int, 1, 2, closed="both")],
        merge=[Options(("early", "late"))],
        time_average=[bool],
        random_state=RANDOM_STATE,
    )
    _search_space: ClassVar[dict[str, Dimension]] = {
        "k": Int(16, 512, log=True),
        "beta": Float(0.0, 1.0),
        "T_b": Float(0.5, 3.0),
        "T_s": Float(0.0, 5.0),
        "merge": Choice(["early", "late"]),
    }
    _required_state: ClassVar[dict[str, Learned]] = {
        "normalized_": Learned("sparse", ("users", "items")),
        "components_": Learned("float", ("items", None)),
        "item_degree_": Learned("float", ("items",)),
    }
    # parameters read only when scoring: changing them needs no refit
    score_params: ClassVar[frozenset[str]] = frozenset(
        {"beta", "T_b", "K_b", "blur_solver", "T_i", "K_i", "ideal_solver", "T_s", "K_s", "sharpen_solver"}
        | {"sharpen_power", "merge", "time_average"}
    )

    def __init__(
        self,
        k: int = 448,
        beta: float = 0.2,
        T_b: float = 1.0,
        K_b: int = 1,
        blur_solver: str = "euler",
        T_i: float = 1.0,
        K_i: int = 1,
        ideal_solver: str = "euler",
        T_s: float = 2.5,
        K_s: int = 1,
        sharpen_solver: str = "rk4",
        sharpen_power: int = 1,
        merge: str = "early",
        time_average: bool = False,
        random_state: int = 0,
    ) -> None:
        self.k = k
        self.beta = beta
        self.T_b = T_b
        self.K_b = K_b
        self.blur_solver = blur_solver
        self.T_i = T_i
        self.K_i = K_i
        self.ideal_solver = ideal_solver
        self.T_s = T_s
        self.K_s = K_s
        self.sharpen_solver = sharpen_solver
        self.sharpen_power = sharpen_power
        self.merge = merge
        self.time_average = time_average
        self.random_state = random_state

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> BSPM:
        m = self._check_fit_input(X).astype(np.float64)
        if self.k >= min(m.shape):
            raise DataError(f"k = {self.k} must be below the smaller side of the training matrix {m.shape}")
        norm, degree = normalized_interactions(m)
        self._set_shape(m)
        self.components_ = right_singular_vectors(norm, int(self.k), self.random_state)
        self.normalized_ = sp.csr_matrix(norm, dtype=np.float32)
        self.item_degree_ = degree.astype(np.float32)
        return self

    # ------------------------------------------------------------------ scoring
    # States are held transposed, items × users of the batch, so that every product is CSR × C-ordered dense.
    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        r = self._binary_rows(history, users)
        s0 = np.ascontiguousarray(r.T.toarray(), dtype=np.float32)  # items × batch
        R = self.normalized_
        Rt = R.T.tocsr()

        def linear(s: np.ndarray) -> np.ndarray:  # (s P̃)ᵀ = R̃ᵀ(R̃ sᵀ)
            return np.asarray(Rt @ (R @ s))

        blur = integrate(lambda s: linear(s) - s, s0, self.T_b, int(self.K_b), self.blur_solver)
        if self.beta and self.components_.shape[1]:
            ideal_end = integrate(lambda s: self._ideal(s) - s, s0, self.T_i, int(self.K_i), self.ideal_solver)[-1]
            merged = self.beta * ideal_end
        else:
            merged = np.zeros_like(s0)
        if self.sharpen_power == 1:
            sharpen_field: Field = lambda s: -linear(s)  # noqa: E731
        else:
            sharpen_field = lambda s: -linear(linear(s))  # noqa: E731
        start = blur[-1] + merged if self.merge == "early" else blur[-1]
        sharp = integrate(sharpen_field, start, self.T_s, int(self.K_s), self.sharpen_solver)
        end = np.mean(blur + sharp, axis=0) if self.time_average else sharp[-1]
        if self.merge == "late":
            end = end + merged
        return np.ascontiguousarray(end.T)

    def _ideal(self, s: np.ndarray) -> np.ndarray:
        """(s P_I)ᵀ = D_I^{1/2} V Vᵀ D_I^{-1/2} sᵀ for transposed states s (items × batch)."""
        sqrt_d = np.sqrt(self.item_degree_)
        inv_sqrt = np.divide(1.0, sqrt_d, out=np.zeros_like(sqrt_d), where=sqrt_d > 0)
        V = self.components_
        return np.asarray(sqrt_d[:, None] * (V @ (V.T @ (inv_sqrt[:, None] * s))), dtype=np.float32)
