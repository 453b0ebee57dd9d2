"""`IALS`: implicit alternating least squares (Hu, Koren & Volinsky, ICDM 2008) with confidence weights.

The objective, over every user–item pair::

    L(X, Y) = Σ_{u,i} c_ui (p_ui − x_u·y_i)² + Σ_u λ_u ‖x_u‖² + Σ_i λ_i ‖y_i‖²

with p_ui = 1 where the training matrix holds r_ui > 0 (else 0) and c_ui = 1 + alpha·r_ui (r_ui = 1 for binary
data; counts or other weights are used as given). With `reg_scaling="none"`, λ_u = λ_i = `reg`. With
`reg_scaling="frequency"` each row's weight is scaled by the total confidence of its terms (Rendle, Krichene,
Zhang & Koren, "Revisiting the Performance of iALS on Item Recommendation Benchmarks", RecSys 2022, frequency
scaling with ν = 1): λ_u = reg · f_u / mean_v f_v with f_u = Σ_i c_ui = n_items + alpha·Σ_i r_ui, and likewise
λ_i over users; the division by the mean keeps `reg` on the scale of the unscaled setting (their shifted λ*).

Each half-step solves, for all users at once (the item step is the same on the transpose),
(YᵀY + Yᵀ(C_u − I)Y + λ_u I) x_u = Yᵀ C_u p_u, by `cg_steps` steps of conjugate gradient warm-started from the
previous factors (Takács, Pilászy & Tikk, RecSys 2011, as `implicit` does) or exactly (`solver="cholesky"`).
A CG step needs A_u v_u for every user: v @ YᵀY (one dense product), plus Σ_{i∈I_u} (c_ui − 1)(y_i·v_u) y_i,
computed as a sampled dense product at the nonzeros (`torch.sparse.sampled_addmm`) followed by a sparse × dense
product; rows are processed in chunks so that temporaries stay within `_BUDGET` bytes. Cost of one iteration
(both half-steps): (cg_steps + 1) · (4·nnz·d + (n_users + n_items)·d²) multiply-adds, plus the two Gramians.
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from advrec.data.interactions import Interactions, as_csr
from advrec.data.splits import EvalSet, Split, as_generator
from advrec.devices import resolve_device
from advrec.errors import ConfigError, DataError, ModelFileError
from advrec.evaluation.evaluate import evaluate_scores
from advrec.io import ARRAYS_FILE
from advrec.models.base import Learned, Recommender
from advrec.models.torch_base import as_eval_set
from advrec.progress import progress_bar

log = logging.getLogger(__name__)

SOLVERS = ("cg", "cholesky")
REG_SCALINGS = ("none", "frequency")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_BUDGET = 256 << 20  # bytes of temporaries per chunk of rows
_TINY = 1e-20  # squared residual below which a row's CG stops moving (as implicit)


@dataclass
class SparseRows:
    """One side of the training matrix as torch CSR arrays: rows are solved for, columns are held fixed.

    `weight` holds alpha·r (= c − 1) at each nonzero; `reg` the per-row regularisation, shape (rows, 1).
    """

    crow: torch.Tensor
    col: torch.Tensor
    weight: torch.Tensor
    reg: torch.Tensor
    n_cols: int

    @classmethod
    def build(
        cls, m: sp.csr_matrix, alpha: float, reg: torch.Tensor, dtype: torch.dtype, device: torch.device
    ) -> SparseRows:
        def to(a: np.ndarray, dt: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dt)

        w = to(m.data, dtype) * alpha
        return cls(to(m.indptr, torch.int64), to(m.indices, torch.int64), w, reg.reshape(-1, 1), m.shape[1])

    @property
    def n_rows(self) -> int:
        return len(self.crow) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.crow.cpu().numpy())

    def block(self, start: int, stop: int) -> SparseRows:
        """Rows start..stop-1 (views of the arrays, indices rebased)."""
        a, b = int(self.crow[start]), int(self.crow[stop])
        crow = self.crow[start : stop + 1] - a
        return SparseRows(crow, self.col[a:b], self.weight[a:b], self.reg[start:stop], self.n_cols)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """A sparse CSR tensor with this pattern and `values` (torch's note that CSR support is in beta silenced)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
            return torch.sparse_csr_tensor(
                self.crow, self.col, values, size=(self.n_rows, self.n_cols), check_invariants=False
            )


def frequency_reg(
    m: sp.csr_matrix, alpha: float, reg: float, scaling: str, mean: float | None = None
) -> tuple[np.ndarray, float]:
    """Per-row λ of the rows of `m` and the mean row frequency f it divides by (that of `m` unless given; 1.0
    when unscaled); see the module docstring."""
    if scaling == "none":
        return np.full(m.shape[0], reg, dtype=np.float64), 1.0
    f = m.shape[1] + alpha * np.asarray(m.sum(axis=1), dtype=np.float64).ravel()
    mean = float(f.mean()) if mean is None else mean
    return reg * f / mean, mean


def row_chunks(lengths: np.ndarray, per_row: int, per_nnz: int, chunk_size: int | None) -> list[tuple[int, int]]:
    """Consecutive row ranges of at most `chunk_size` rows, or (None) of at most `_BUDGET` bytes each."""
    n = len(lengths)
    if chunk_size is not None:
        return [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
    cost = np.cumsum(per_row + per_nnz * lengths.astype(np.int64))
    bounds, start = [0], 0
    while start < n:
        base = cost[start - 1] if start else 0
        stop = max(int(np.searchsorted(cost, base + _BUDGET, side="right")), start + 1)
        bounds.append(min(stop, n))
        start = bounds[-1]
    return list(itertools.pairwise(bounds))


def cg_solve(rows: SparseRows, x: torch.Tensor, Y: torch.Tensor, gram: torch.Tensor, steps: int) -> None:
    """`steps` conjugate-gradient steps on every row's system, in place on `x` (warm start).

    A_u v = v·YᵀY + λ_u v + Σ_i w_ui (y_i·v) y_i; the right-hand side is Σ_i (1 + w_ui) y_i.
    """
    Yt = Y.T

    def sparse_term(v: torch.Tensor, values: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        dots = torch.sparse.sampled_addmm(rows.matrix(rows.weight), v, Yt, beta=0.0).values()
        return rows.matrix(values(dots)) @ Y

    w = rows.weight
    r = sparse_term(x, lambda d: 1.0 + w - w * d)  # b − (A − YᵀY − λ) x
    r.sub_(x @ gram).addcmul_(rows.reg, x, value=-1.0)
    p = r.clone()
    rs = torch.linalg.vecdot(r, r)
    for _ in range(steps):
        ap = sparse_term(p, lambda d: w * d)
        ap.addmm_(p, gram).addcmul_(rows.reg, p)
        moving = rs > _TINY
        a = torch.where(moving, rs / torch.where(moving, torch.linalg.vecdot(p, ap), 1.0), 0.0)[:, None]
        x.addcmul_(a, p)
        r.addcmul_(a, ap, value=-1.0)
        rs_new = torch.linalg.vecdot(r, r)
        beta = torch.where(moving, rs_new / torch.where(moving, rs, 1.0), 0.0)[:, None]
        p.mul_(beta).add_(r)
        rs = rs_new


def exact_solve(rows: SparseRows, Y: torch.Tensor, gram: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The exact solution of the rows `order` (indices into `rows`): Cholesky of the d×d systems, batched.

    Each row's items are gathered into a padded (rows, L, d) block, L the longest row of the batch.
    """
    start = rows.crow[order]
    lens = rows.crow[order + 1] - start
    width = int(lens.max()) if len(order) else 0
    offs = torch.arange(width, device=Y.device)
    valid = offs[None, :] < lens[:, None]
    pos = torch.where(valid, start[:, None] + offs[None, :], 0)
    Yp = Y[rows.col[pos]] * valid[..., None]
    wp = torch.where(valid, rows.weight[pos], 0.0)
    A = torch.bmm(Yp.transpose(1, 2), wp[..., None] * Yp)
    A += gram
    A.diagonal(dim1=1, dim2=2).add_(rows.reg[order])
    b = torch.bmm(((1.0 + wp) * valid)[:, None, :], Yp).transpose(1, 2)
    chol, info = torch.linalg.cholesky_ex(A)
    if int(info.max()) > 0:
        raise FloatingPointError("IALS: a least-squares system is not positive definite; increase reg")
    return torch.cholesky_solve(b, chol)[..., 0]


def exact_chunks(lengths: np.ndarray, d: int, itemsize: int, chunk_size: int | None) -> list[np.ndarray]:
    """Rows in order of length, cut into batches whose padded blocks fit `_BUDGET` (or of `chunk_size` rows)."""
    order = np.argsort(lengths, kind="stable")
    if chunk_size is not None:
        return [order[a : a + chunk_size] for a in range(0, len(order), chunk_size)]
    ls = lengths[order].astype(np.int64)
    out, start = [], 0
    while start < len(order):
        cost = np.arange(1, len(order) - start + 1) * ((ls[start:] + 1) * d + 3 * d * d) * itemsize
        stop = start + max(int(np.searchsorted(cost, _BUDGET, side="right")), 1)
        out.append(order[start:stop])
        start = stop
    return out


class IALS(Recommender):
    """iALS matrix factorisation for implicit feedback; score(u, i) = ⟨user_factors_[u], item_factors_[i]⟩.

    `reg` is λ of the objective in the module docstring (added to the diagonal of every row's d×d system,
    scaled per row when `reg_scaling="frequency"`); `alpha` the confidence slope, c = 1 + alpha·r. `solver`:
    "cg" (`cg_steps` warm-started conjugate-gradient steps per half-step) or "cholesky" (exact; for small data
    and tests). Factors start from N(0, init_std²), init_std defaulting to 0.1/√factors (Rendle et al.).
    `chunk_size`: rows solved together (None: as many as fit a 256 MiB budget of temporaries). With `valid`,
    NDCG@10 is measured every `eval_every` iterations, the best factors are kept and training stops after
    `patience` evaluations without improvement. An iteration (a user step and an item step) is an epoch of
    `training_log_`. New users get vectors from `fold_in`.
    """

    uses_history = False
    _required_state: ClassVar[dict[str, Learned]] = {
        "user_factors_": Learned("float", ("users", None)),
        "item_factors_": Learned("float", ("items", None)),
        "mean_frequency_": Learned("value"),
    }

    def __init__(
        self,
        factors: int = 64,
        reg: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        cg_steps: int = 3,
        solver: str = "cg",
        init_std: float | None = None,
        reg_scaling: str = "none",
        chunk_size: int | None = None,
        patience: int = 3,
        eval_every: int = 1,
        random_state: int | None = 2020,
        device: str = "auto",
        verbose: bool = False,
        dtype: str = "float32",
    ) -> None:
        self.factors = factors
        self.reg = reg
        self.alpha = alpha
        self.iterations = iterations
        self.cg_steps = cg_steps
        self.solver = solver
        self.init_std = init_std
        self.reg_scaling = reg_scaling
        self.chunk_size = chunk_size
        self.patience = patience
        self.eval_every = eval_every
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.dtype = dtype
        self._check_params()

    def _check_params(self) -> None:
        """Refuses bad hyper-parameters (at construction and again at fit, after `set_params`)."""
        for name, allowed in (("solver", SOLVERS), ("reg_scaling", REG_SCALINGS), ("dtype", tuple(DTYPES))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"IALS {name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("factors", "iterations", "cg_steps", "patience", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"IALS {name} must be an integer ≥ 1, got {value!r}")
        if self.chunk_size is not None and (not isinstance(self.chunk_size, int) or self.chunk_size < 1):
            raise ConfigError(f"IALS chunk_size must be None or an integer ≥ 1, got {self.chunk_size!r}")
        if not (np.isfinite(self.reg) and self.reg > 0):
            raise ConfigError(f"IALS reg must be positive, got {self.reg}")
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"IALS alpha must be ≥ 0, got {self.alpha}")
        if self.init_std is not None and not (np.isfinite(self.init_std) and self.init_std > 0):
            raise ConfigError(f"IALS init_std must be None or positive, got {self.init_std}")

    # ------------------------------------------------------------------ data
    def _weights(self, X: Interactions | sp.spmatrix, what: str) -> sp.csr_matrix:
        """`X` as a users×items CSR matrix of non-negative weights r (duplicates summed, zeros dropped)."""
        m = as_csr(X, what).copy()
        if (m.data < 0).any():
            raise DataError(f"{what} has negative values; pass interactions as non-negative weights")
        m.sum_duplicates()
        m.eliminate_zeros()
        m.sort_indices()
        return m

    def _torch(self) -> tuple[torch.device, torch.dtype]:
        return resolve_device(self.device), DTYPES[self.dtype]

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Interactions | sp.spmatrix, valid: EvalSet | Split | None = None) -> IALS:
        """Alternates `iterations` user and item steps; with `valid`, early stopping on validation NDCG@10."""
        self._check_params()
        m = self._weights(X, "training data")
        if m.shape[0] == 0 or m.shape[1] == 0 or m.nnz == 0:
            raise DataError(f"training data is empty (shape {m.shape}, {m.nnz} interactions)")
        es = as_eval_set(valid)
        self._set_shape(m)
        device, dtype = self._torch()
        user_reg, self.mean_frequency_ = frequency_reg(m, self.alpha, self.reg, self.reg_scaling)
        mt = m.T.tocsr()
        mt.sort_indices()
        item_reg, _ = frequency_reg(mt, self.alpha, self.reg, self.reg_scaling)
        sides = [
            SparseRows.build(a, self.alpha, torch.from_numpy(r), dtype, device)
            for a, r in ((m, user_reg), (mt, item_reg))
        ]
        rng = as_generator(self.random_state)
        std = self.init_std if self.init_std is not None else 0.1 / np.sqrt(self.factors)
        U, V = (torch.from_numpy(rng.standard_normal((n, self.factors)) * std).to(device, dtype) for n in m.shape)
        self._loop(sides, U, V, es)
        return self

    def _half_step(self, rows: SparseRows, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Solves every row of `rows` for its vector in `X` (in place) against the fixed `Y`."""
        gram = Y.T @ Y
        d, itemsize = Y.shape[1], Y.element_size()
        if self.solver == "cg":
            for a, b in row_chunks(rows.lengths(), 6 * d * itemsize, 3 * itemsize, self.chunk_size):
                cg_solve(rows.block(a, b), X[a:b], Y, gram, self.cg_steps)
            return
        for idx in exact_chunks(rows.lengths(), d, itemsize, self.chunk_size):
            order = torch.from_numpy(idx).to(X.device)
            X[order] = exact_solve(rows, Y, gram, order)

    def _loop(self, sides: list[SparseRows], U: torch.Tensor, V: torch.Tensor, es: EvalSet | None) -> None:
        self.training_log_: list[dict[str, float]] = []
        best, best_factors, bad = -np.inf, None, 0
        bar = progress_bar(range(1, self.iterations + 1), desc="IALS", disable=not self.verbose)
        for it in bar:
            t0 = time.perf_counter()
            self._half_step(sides[0], U, V)
            self._half_step(sides[1], V, U)
            row: dict[str, float] = {"iteration": it, "seconds": time.perf_counter() - t0}
            if self.verbose:
                row["loss"] = objective(sides[0], U, V, sides[1].reg)
            if not (torch.isfinite(U).all() and torch.isfinite(V).all()):
                raise FloatingPointError(f"IALS: the factors became NaN or infinite at iteration {it}")
            if es is not None and (it % self.eval_every == 0 or it == self.iterations):
                row["valid_ndcg@10"] = ndcg = self._validate(U, V, es)
                if ndcg > best:
                    best, bad, self.best_epoch_ = ndcg, 0, it
                    best_factors = (U.clone(), V.clone())
                else:
                    bad += 1
            self.training_log_.append(row)
            bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k != "iteration"})
            log.debug("IALS iteration %d: %s", it, row)
            if es is not None and bad >= self.patience:
                break
        if best_factors is not None:
            U, V = best_factors
            self.best_valid_ndcg_ = float(best)
        self.user_factors_ = U.cpu().numpy()
        self.item_factors_ = V.cpu().numpy()
        self.epochs_run_ = len(self.training_log_)
        self.epoch_seconds_ = float(np.median([r["seconds"] for r in self.training_log_]))

    @staticmethod
    def _validate(U: torch.Tensor, V: torch.Tensor, es: EvalSet) -> float:
        def score(history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
            return (U[torch.from_numpy(users).to(U.device)] @ V.T).float().cpu().numpy()

        return evaluate_scores(score, es, ks=(10,), metrics=("ndcg",)).summary["ndcg@10"]

    # ------------------------------------------------------------------ using the factors
    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item factor matrices (float32)."""
        self._check_fitted()
        return self.user_factors_.astype(np.float32), self.item_factors_.astype(np.float32)

    def fold_in(self, history_rows: Interactions | sp.spmatrix) -> np.ndarray:
        """User vectors for new rows (users×items, weights as in `fit`), item factors held fixed.

        Each row's user step is solved exactly (a d×d system per row), with the row's λ_u computed from its
        own frequency under `reg_scaling="frequency"`; a row without interactions gets the zero vector. Scores
        of the new users: `fold_in(rows) @ item_factors_.T`. A training row gives what one more exact user step
        would give its vector.
        """
        self._check_fitted()
        m = self._weights(history_rows, "history rows")
        if m.shape[1] != self.n_items_:
            raise DataError(f"history rows have {m.shape[1]} items but the model was fitted on {self.n_items_} items")
        device, dtype = self._torch()
        reg, _ = frequency_reg(m, self.alpha, self.reg, self.reg_scaling, mean=self.mean_frequency_)
        rows = SparseRows.build(m, self.alpha, torch.from_numpy(reg), dtype, device)
        Y = torch.from_numpy(self.item_factors_).to(device, dtype)
        out = torch.zeros((m.shape[0], self.factors), dtype=dtype, device=device)
        gram = Y.T @ Y
        for idx in exact_chunks(rows.lengths(), self.factors, Y.element_size(), self.chunk_size):
            order = torch.from_numpy(idx).to(device)
            out[order] = exact_solve(rows, Y, gram, order)
        return out.cpu().numpy().astype(np.float32)

    def loss(self, X: Interactions | sp.spmatrix) -> float:
        """The objective of the module docstring on the training matrix `X` (for diagnostics and tests)."""
        self._check_fitted()
        m = self._weights(X, "training data")
        if m.shape != (self.n_users_, self.n_items_):
            raise DataError(f"X has shape {m.shape}, the model was fitted on {(self.n_users_, self.n_items_)}")
        device, dtype = self._torch()
        mt = m.T.tocsr()
        user_reg = frequency_reg(m, self.alpha, self.reg, self.reg_scaling)[0]
        item_reg = frequency_reg(mt, self.alpha, self.reg, self.reg_scaling)[0]
        rows = SparseRows.build(m, self.alpha, torch.from_numpy(user_reg), dtype, device)
        U, V = (torch.from_numpy(a).to(device, dtype) for a in (self.user_factors_, self.item_factors_))
        return objective(rows, U, V, torch.from_numpy(item_reg).to(device, dtype).reshape(-1, 1))

    # ------------------------------------------------------------------ persistence
    def _check_state(self, state: dict[str, Any], folder: Path) -> None:
        """Also refuses factor matrices whose width is not `factors`."""
        super()._check_state(state, folder)
        for name in ("user_factors_", "item_factors_"):
            if state[name].shape[1] != self.factors:
                raise ModelFileError(
                    f"{folder / ARRAYS_FILE}: array {name!r} has {state[name].shape[1]} columns, "
                    f"expected factors = {self.factors}"
                )


def objective(rows: SparseRows, U: torch.Tensor, V: torch.Tensor, item_reg: torch.Tensor) -> float:
    """L(U, V) of the module docstring: Σ_all s² by the Gramians, corrected at the nonzeros, plus the L2 terms."""
    s = torch.sparse.sampled_addmm(rows.matrix(rows.weight), U, V.T, beta=0.0).values()
    c = 1.0 + rows.weight
    total = ((U.T @ U) * (V.T @ V)).sum() + (c * (1.0 - s) ** 2 - s**2).sum()
    total += (rows.reg * U * U).sum() + (item_reg.reshape(-1, 1) * V * V).sum()
    return float(total)
