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
product, column block by column block (`SparseRows`). Rows go in chunks of at most max(`_CHUNK_NNZ`,
`_BLOCK_NNZ` · blocks) nonzeros and `_BUDGET` bytes of temporaries, which `torch.get_num_threads()` worker
threads share (`ChunkRunner`). Cost of
one iteration (both half-steps): (cg_steps + 1) · (4·nnz·d + (n_users + n_items)·d²) multiply-adds plus the two
Gramians; memory: the factors, one copy of the matrix per side, and per chunk in flight 4·rows·d + nnz floats.

Under torchrun (a process group of several ranks, joined by `fit`) every rank holds all factors and solves a
contiguous share of each side's rows: whole chunks of about equal cost for CG (so every row is solved in the chunk
it has in one process, and the factors are the same numbers as one process gives), rows of about equal cost for
Cholesky; an all-gather then gives every rank the other shares (`advrec.distributed.factors`). Each rank sends
(ranks − 1) · max share · d · itemsize bytes per half-step (`comm_bytes_per_iteration_`; 0 in one process; each
epoch of `training_log_` adds "comm_bytes", with the 8 bytes of a validation result sent by rank 0). Every rank
takes part in the validation (evaluation is shared out by user) and rank 0's result is sent to all, so every rank
stops at the same iteration; rank 0 alone shows progress.
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from advrec import distributed
from advrec.data.interactions import Interactions, as_csr
from advrec.data.splits import EvalSet, Split, as_generator
from advrec.devices import resolve_device
from advrec.distributed.factors import ALL_GATHER, RowShares, check_same_matrix, common_seed, value_of_rank0
from advrec.errors import DataError, ModelFileError
from advrec.evaluation.evaluate import evaluate_scores
from advrec.io import ARRAYS_FILE
from advrec.models.base import Learned, Recommender
from advrec.models.params import RANDOM_STATE, Dimension, Float, Int, Interval, Options, declare
from advrec.models.torch_base import as_eval_set
from advrec.progress import Steps, progress_wanted

log = logging.getLogger(__name__)

SOLVERS = ("cg", "cholesky")
REG_SCALINGS = ("none", "frequency")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_BUDGET = 256 << 20  # bytes of temporaries per chunk of rows
_CACHE = 2 << 20  # bytes of fixed factors per column block (best of 1, 2, 4, 8 MiB measured here)
_CHUNK_NNZ = 1 << 17  # nonzeros per chunk of rows: enough chunks to share among threads, but at least
_BLOCK_NNZ = 1 << 15  # nonzeros per column block of a chunk on average, so each kernel outweighs its overhead
_TINY = 1e-20  # squared residual below which a row's CG stops moving (as implicit)


@dataclass
class ColumnBlock:
    """The nonzeros of columns start..stop-1 as a CSR over all rows (column indices rebased to the block).

    `weight` holds alpha·r (= c − 1) at each nonzero.
    """

    start: int
    stop: int
    crow: torch.Tensor
    col: torch.Tensor
    weight: torch.Tensor

    def rows(self, a: int, b: int) -> ColumnBlock:
        """Rows a..b-1 (views, offsets rebased)."""
        lo, hi = int(self.crow[a]), int(self.crow[b])
        return ColumnBlock(self.start, self.stop, self.crow[a : b + 1] - lo, self.col[lo:hi], self.weight[lo:hi])

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """A sparse CSR tensor with this pattern and `values` (torch's note that CSR support is in beta silenced)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
            size = (len(self.crow) - 1, self.stop - self.start)
            return torch.sparse_csr_tensor(self.crow, self.col, values, size=size, check_invariants=False)


@dataclass
class SparseRows:
    """One side of the training matrix: rows are solved for, the columns' factors are held fixed.

    The columns are cut into blocks whose factors fit a core's cache (`_CACHE` bytes): a sparse product that
    gathers a factor row per nonzero then reads from cache instead of memory, which on the 100k × 10k synthetic
    set made the item step's products 3-5× faster. `reg` is the per-row λ, shape (rows, 1); `lengths` the
    nonzeros of each row.
    """

    blocks: list[ColumnBlock]
    reg: torch.Tensor
    lengths: np.ndarray

    @classmethod
    def build(
        cls, m: sp.csr_matrix, alpha: float, reg: np.ndarray, dtype: torch.dtype, device: torch.device, width: int
    ) -> SparseRows:
        """`m` (sorted indices) in equal blocks of at most `width` columns."""
        n_rows, n_cols = m.shape
        n_blocks = max(1, -(-n_cols // width))
        width = max(1, -(-n_cols // n_blocks))  # blocks of equal width
        lengths = np.diff(m.indptr)
        reg_t = torch.from_numpy(reg).to(device, dtype).reshape(-1, 1)
        if n_blocks == 1:
            crow1, col1 = (torch.from_numpy(a.astype(np.int64)).to(device) for a in (m.indptr, m.indices))
            weight1 = torch.from_numpy(m.data).to(device, dtype) * alpha
            return cls([ColumnBlock(0, n_cols, crow1, col1, weight1)], reg_t, lengths)
        block = m.indices // width
        order = np.argsort(block, kind="stable")  # by block, then as in m (by row, then column)
        keys = block.astype(np.int64) * n_rows + np.repeat(np.arange(n_rows), np.diff(m.indptr))
        counts = np.bincount(keys, minlength=n_blocks * n_rows).reshape(n_blocks, n_rows)
        crow = np.zeros((n_blocks, n_rows + 1), dtype=np.int64)
        np.cumsum(counts, axis=1, out=crow[:, 1:])
        ends = np.cumsum(crow[:, -1])
        col = torch.from_numpy((m.indices[order] - block[order] * width).astype(np.int64)).to(device)
        weight = torch.from_numpy(m.data[order]).to(device, dtype) * alpha
        crow_t = torch.from_numpy(crow).to(device)
        blocks = [
            ColumnBlock(k * width, min((k + 1) * width, n_cols), crow_t[k], col[e - n : e], weight[e - n : e])
            for k, (e, n) in enumerate(zip(ends.tolist(), crow[:, -1].tolist(), strict=True))
        ]
        return cls(blocks, reg_t, lengths)

    @property
    def n_rows(self) -> int:
        return len(self.reg)

    def rows(self, a: int, b: int) -> SparseRows:
        """Rows a..b-1."""
        return SparseRows([blk.rows(a, b) for blk in self.blocks], self.reg[a:b], self.lengths[a:b])


@dataclass
class Side:
    """The rows of one side that this process solves: rows start..start+n-1 of the matrix (all of them in one
    process), their chunks (row ranges for CG, index arrays for Cholesky, both counted from `start`) and every
    rank's share."""

    rows: SparseRows
    start: int
    chunks: list[Any]
    shares: RowShares


def block_width(factors: int, dtype: torch.dtype, device: torch.device) -> int:
    """Columns per block: as many factor rows as fit `_CACHE` bytes on a CPU; one block on a GPU."""
    if device.type != "cpu":
        return 2**62
    return max(1, _CACHE // (factors * torch.empty((), dtype=dtype).element_size()))


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


def row_chunks(
    lengths: np.ndarray, per_row: int, per_nnz: int, max_nnz: int, chunk_size: int | None
) -> list[tuple[int, int]]:
    """Consecutive row ranges: of `chunk_size` rows, or (None) of at most `max_nnz` nonzeros and `_BUDGET` bytes
    of temporaries (per_row + per_nnz · nonzeros), at least one row each. The cut depends on the data only,
    never on the thread count."""
    n = len(lengths)
    if chunk_size is not None:
        return [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
    nnz = np.cumsum(lengths.astype(np.int64))
    cost = np.cumsum(per_row + per_nnz * lengths.astype(np.int64))
    bounds = [0]
    while bounds[-1] < n:
        a = bounds[-1]
        by_nnz = np.searchsorted(nnz, (nnz[a - 1] if a else 0) + max_nnz, side="right")
        by_cost = np.searchsorted(cost, (cost[a - 1] if a else 0) + _BUDGET, side="right")
        bounds.append(min(max(int(min(by_nnz, by_cost)), a + 1), n))
    return list(itertools.pairwise(bounds))


class ChunkRunner:
    """Runs a half-step's independent row chunks, on `threads` worker threads when there are several.

    Each worker runs torch's kernels on one thread and takes the next chunk when done: a core that another
    process holds only slows the chunks it has, where torch's own threads would wait for it at the end of every
    kernel (on this shared 2-core machine: 3.7 s instead of 0.45 s per Gowalla iteration with 2 threads). The
    chunks are cut the same way for any thread count, so the numbers do not depend on it.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="ials") if threads > 1 else None

    @contextmanager
    def one_thread(self) -> Iterator[None]:
        """torch on one thread in the calling thread inside the block (the Gramians; the caller's count after)."""
        before = torch.get_num_threads()
        if self.pool is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def map(self, fn: Callable[[int, int], None], chunks: list[tuple[int, int]]) -> None:
        if self.pool is None:
            for a, b in chunks:
                fn(a, b)
            return

        def task(chunk: tuple[int, int]) -> None:
            torch.set_num_threads(1)  # this worker's kernels on one thread
            fn(*chunk)

        for _ in self.pool.map(task, chunks):
            pass

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def cg_solve(rows: SparseRows, x: torch.Tensor, Y: torch.Tensor, gram: torch.Tensor, steps: int) -> None:
    """`steps` conjugate-gradient steps on every row's system, in place on `x` (warm start).

    A_u v = v·YᵀY + λ_u v + Σ_i w_ui (y_i·v) y_i; the right-hand side is Σ_i (1 + w_ui) y_i. The products write
    into buffers made once per call (fresh arrays of this size cost page faults on every step).
    """
    parts = [
        (blk, Y[blk.start : blk.stop], blk.matrix(blk.weight), blk.matrix(torch.empty_like(blk.weight)))
        for blk in rows.blocks
    ]

    def sparse_term(v: torch.Tensor, out: torch.Tensor, residual: bool) -> torch.Tensor:
        """Σ_i w_ui (y_i·v_u) y_i per row into `out`, or Σ_i (1 + w_ui − w_ui (y_i·v_u)) y_i when `residual`."""
        out.zero_()
        for blk, Yb, pattern, prod in parts:
            torch.sparse.sampled_addmm(pattern, v, Yb.T, beta=0.0, out=prod)  # y_i·v_u at the nonzeros
            values = prod.values().mul_(blk.weight)
            if residual:
                values.neg_().add_(blk.weight).add_(1.0)
            torch.addmm(out, prod, Yb, out=out)
        return out

    r = sparse_term(x, torch.empty_like(x), residual=True)  # b − (A − YᵀY − λ) x
    r.addmm_(x, gram, alpha=-1.0).addcmul_(rows.reg, x, value=-1.0)
    p, ap = r.clone(), torch.empty_like(x)
    rs = torch.linalg.vecdot(r, r)
    for _ in range(steps):
        sparse_term(p, ap, residual=False).addmm_(p, gram).addcmul_(rows.reg, p)
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

    A_u = YᵀY + λ_u I + Σ_i w_ui y_i y_iᵀ and b_u = Σ_i (1 + w_ui) y_i, accumulated block by block; each block's
    nonzeros of the rows are gathered into a padded (rows, L, d) array, L the longest row of the batch.
    """
    A = gram.expand(len(order), *gram.shape).clone()
    A.diagonal(dim1=1, dim2=2).add_(rows.reg[order])
    b = Y.new_zeros((len(order), 1, Y.shape[1]))
    for blk in rows.blocks:
        start = blk.crow[order]
        lens = blk.crow[order + 1] - start
        offs = torch.arange(int(lens.max()) if len(order) else 0, device=Y.device)
        valid = offs[None, :] < lens[:, None]
        pos = torch.where(valid, start[:, None] + offs[None, :], 0)
        Yp = Y[blk.start : blk.stop][blk.col[pos]] * valid[..., None]
        wp = torch.where(valid, blk.weight[pos], 0.0)
        A.baddbmm_(Yp.transpose(1, 2), wp[..., None] * Yp)
        b.baddbmm_(((1.0 + wp) * valid)[:, None, :], Yp)
    chol, info = torch.linalg.cholesky_ex(A)
    if int(info.max()) > 0:
        raise FloatingPointError("IALS: a least-squares system is not positive definite; increase reg")
    return torch.cholesky_solve(b.transpose(1, 2), chol)[..., 0]


def solve_users(
    m: sp.csr_matrix, Y: torch.Tensor, alpha: float, reg: np.ndarray, chunk_size: int | None = None
) -> torch.Tensor:
    """The exact user step for rows `m` (weights r, c = 1 + alpha·r) against item factors `Y` held fixed, with
    each row's λ in `reg`: (YᵀY + Yᵀ(C_u − I)Y + λ_u I) x_u = Yᵀ C_u p_u; a row without interactions gets 0."""
    rows = SparseRows.build(m, alpha, reg, Y.dtype, Y.device, block_width(Y.shape[1], Y.dtype, Y.device))
    out = torch.zeros((m.shape[0], Y.shape[1]), dtype=Y.dtype, device=Y.device)
    gram = Y.T @ Y
    for idx in exact_chunks(rows.lengths, Y.shape[1], Y.element_size(), chunk_size):
        order = torch.from_numpy(idx).to(Y.device)
        out[order] = exact_solve(rows, Y, gram, order)
    return out


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
    and tests). Factors start uniform on [0, init_scale), as implicit's do: on Gowalla N(0, (0.1/√d)²) (Rendle et
    al.) gave the same Recall@20 (valid 0.1589 at 64 factors, 0.2035 at 256), on the 100k × 10k synthetic set a
    lower one (test 0.0400-0.0403 against 0.0424-0.0428, two seeds; the nonnegative start leans on popularity,
    all that set holds). `chunk_size`: rows solved together (None: cut by nonzeros and memory, see the module
    docstring). With `valid`, NDCG@10 is measured every `eval_every` iterations, the best factors are kept and
    training stops after `patience` evaluations without improvement. An iteration (a user step and an item step)
    is an epoch of `training_log_`. New users get vectors from `fold_in`. Under torchrun the ranks share the rows
    of every half-step (see the module docstring).

    The defaults (reg 10, alpha 100, no frequency scaling at 64 factors) are the best validation Recall@20 of a
    grid on Gowalla (benchmarks/ials.py); sparser or denser data may want others.
    """

    uses_history = False
    scale_out: ClassVar[str] = ALL_GATHER

    _parameter_constraints = declare(
        {
            name: [Interval(int, 1, None, closed="left")]
            for name in ("factors", "iterations", "cg_steps", "patience", "eval_every")
        },
        reg=[Interval(float, 0, None, closed="neither")],
        alpha=[Interval(float, 0, None, closed="left")],
        init_scale=[Interval(float, 0, None, closed="neither")],
        solver=[Options(SOLVERS)],
        reg_scaling=[Options(REG_SCALINGS)],
        dtype=[Options(DTYPES)],
        chunk_size=[Interval(int, 1, None, closed="left"), None],
        random_state=RANDOM_STATE,
        device=[str],
        verbose=[bool],
    )
    _search_space: ClassVar[dict[str, Dimension]] = {
        "factors": Int(16, 256, log=True),
        "reg": Float(1e-2, 1e3, log=True),
        "alpha": Float(1.0, 1e3, log=True),
    }
    _required_state: ClassVar[dict[str, Learned]] = {
        "user_factors_": Learned("float", ("users", None)),
        "item_factors_": Learned("float", ("items", None)),
        "mean_frequency_": Learned("value"),
    }

    def __init__(
        self,
        factors: int = 64,
        reg: float = 10.0,
        alpha: float = 100.0,
        iterations: int = 15,
        cg_steps: int = 3,
        solver: str = "cg",
        init_scale: float = 0.01,
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
        self.init_scale = init_scale
        self.reg_scaling = reg_scaling
        self.chunk_size = chunk_size
        self.patience = patience
        self.eval_every = eval_every
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.dtype = dtype

    # ------------------------------------------------------------------ data
    def _weights(self, X: Interactions | sp.spmatrix, what: str) -> sp.csr_matrix:
        """`X` as a users×items CSR matrix of non-negative weights r (duplicates summed, zeros dropped)."""
        m = as_csr(X, what)
        if (m.data < 0).any():
            raise DataError(f"{what} has negative values; pass interactions as non-negative weights")
        if not m.has_canonical_format or not m.data.all():  # else used as it is, without a copy
            m = m.copy()
            m.sum_duplicates()
            m.eliminate_zeros()
        return m

    def _torch(self) -> tuple[torch.device, torch.dtype]:
        return distributed.local_device(resolve_device(self.device)), DTYPES[self.dtype]

    # ------------------------------------------------------------------ fitting
    def fit(
        self, X: Interactions | sp.spmatrix, valid: EvalSet | Split | Interactions | sp.spmatrix | None = None
    ) -> IALS:
        """Alternates `iterations` user and item steps; with `valid`, early stopping on validation NDCG@10."""
        self._validate_params()
        m = self._weights(X, "training data")
        if m.shape[0] == 0 or m.shape[1] == 0 or m.nnz == 0:
            raise DataError(f"training data is empty (shape {m.shape}, {m.nnz} interactions)")
        es = as_eval_set(valid, m)
        self._set_shape(m)
        device, dtype = self._torch()
        distributed.init(device.type)
        check_same_matrix(m, "training data")
        user_reg, self.mean_frequency_ = frequency_reg(m, self.alpha, self.reg, self.reg_scaling)
        mt = m.T.tocsr()
        mt.sort_indices()
        item_reg, _ = frequency_reg(mt, self.alpha, self.reg, self.reg_scaling)
        sides = [self._side(a, r, dtype, device) for a, r in ((m, user_reg), (mt, item_reg))]
        rng = as_generator(common_seed(self.random_state))
        U, V = (torch.from_numpy(rng.random((n, self.factors)) * self.init_scale).to(device, dtype) for n in m.shape)
        self._loop(sides, U, V, es)
        return self

    def _side(self, m: sp.csr_matrix, reg: np.ndarray, dtype: torch.dtype, device: torch.device) -> Side:
        """This process's share of the rows of `m` (all of them in one process) and their chunks."""
        n, d = m.shape[0], self.factors
        itemsize = torch.empty((), dtype=dtype).element_size()
        width = block_width(d, dtype, device)
        lengths = np.diff(m.indptr)
        if self.solver == "cg":
            max_nnz = max(_CHUNK_NNZ, _BLOCK_NNZ * max(1, -(-m.shape[1] // width)))
            chunks = row_chunks(lengths, 6 * d * itemsize, 3 * itemsize, max_nnz, self.chunk_size)
            bounds = np.array([0] + [b for _, b in chunks], dtype=np.int64)
            nnz = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])[bounds]
            shares = RowShares.of_units(bounds, 4 * np.diff(nnz) + d * np.diff(bounds))  # multiply-adds / d
        else:
            shares = RowShares.of_units(np.arange(n + 1), lengths + d / 3)  # nnz·d² + d³/3 per row, over d²
        a, b = shares.own
        rows = SparseRows.build(m if (a, b) == (0, n) else m[a:b], self.alpha, reg[a:b], dtype, device, width)
        if self.solver == "cg":
            mine: list[Any] = [(lo - a, hi - a) for lo, hi in chunks if a <= lo and hi <= b]
        else:
            mine = exact_chunks(rows.lengths, d, itemsize, self.chunk_size)
        return Side(rows, a, mine, shares)

    def _half_step(self, side: Side, X: torch.Tensor, Y: torch.Tensor, runner: ChunkRunner) -> int:
        """Solves this process's rows of `side` for their vectors in `X` against the fixed `Y`, then gathers
        every rank's rows into `X` (in place); returns the bytes sent."""
        rows, s = side.rows, side.start
        with runner.one_thread():
            gram = Y.T @ Y
        if self.solver == "cg":
            with runner.one_thread():
                runner.map(
                    lambda a, b: cg_solve(rows.rows(a, b), X[s + a : s + b], Y, gram, self.cg_steps), side.chunks
                )
        else:
            for idx in side.chunks:
                order = torch.from_numpy(idx).to(X.device)
                X[order + s] = exact_solve(rows, Y, gram, order)
        return side.shares.gather(X)

    def _loop(self, sides: list[Side], U: torch.Tensor, V: torch.Tensor, es: EvalSet | None) -> None:
        self.training_log_: list[dict[str, float]] = []
        best: tuple[float, int, torch.Tensor, torch.Tensor] | None = None
        bad = 0
        show = progress_wanted(self.verbose or None) and distributed.is_main()
        bar = Steps(range(1, self.iterations + 1), "IALS", show, "iteration", may_stop_early=es is not None)
        runner = ChunkRunner(torch.get_num_threads() if U.device.type == "cpu" else 1)
        try:
            for it in bar:
                t0 = time.perf_counter()
                sent = self._half_step(sides[0], U, V, runner) + self._half_step(sides[1], V, U, runner)
                row: dict[str, float] = {"iteration": it, "seconds": time.perf_counter() - t0}
                if self.verbose:
                    row["loss"] = self._objective(sides, U, V)
                if not (torch.isfinite(U).all() and torch.isfinite(V).all()):
                    raise FloatingPointError(f"IALS: the factors became NaN or infinite at iteration {it}")
                if es is not None and (it % self.eval_every == 0 or it == self.iterations):
                    # every rank takes part in the (user-sharded) evaluation; rank 0's value decides for all
                    ndcg, n_bytes = value_of_rank0(self._validate(U, V, es))
                    row["valid_ndcg@10"], sent = ndcg, sent + n_bytes
                    if best is None or ndcg > best[0]:
                        best, bad = (ndcg, it, U.clone(), V.clone()), 0
                    else:
                        bad += 1
                if distributed.active():
                    row["comm_bytes"] = sent
                self.training_log_.append(row)
                bar.report(row)
                log.debug("IALS iteration %d: %s", it, row)
                if bad >= self.patience:
                    break
        finally:
            runner.close()
        if best is not None:
            self.best_valid_, self.best_epoch_, U, V = best
        self.user_factors_ = U.cpu().numpy()
        self.item_factors_ = V.cpu().numpy()
        self.epochs_run_ = len(self.training_log_)
        self.epoch_seconds_ = float(np.median([r["seconds"] for r in self.training_log_]))
        self.comm_bytes_per_iteration_ = sum(s.shares.gather_bytes(self.factors, U.element_size()) for s in sides)

    @staticmethod
    def _objective(sides: list[Side], U: torch.Tensor, V: torch.Tensor) -> float:
        """The objective on the whole matrix: in one process directly; across ranks, each rank's user rows and
        item L2 terms summed over ranks."""
        users, items = sides
        if not distributed.active():
            return objective(users.rows, U, V, items.rows.reg)
        a, b = users.start, users.start + users.rows.n_rows
        c, d = items.start, items.start + items.rows.n_rows
        own = objective(users.rows, U[a:b], V, V.new_zeros((len(V), 1))) + float((items.rows.reg * V[c:d] ** 2).sum())
        return float(distributed.all_sum(own))

    @staticmethod
    def _validate(U: torch.Tensor, V: torch.Tensor, es: EvalSet) -> float:
        def score(history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
            return (U[torch.from_numpy(users).to(U.device)] @ V.T).float().cpu().numpy()

        return evaluate_scores(score, es, ks=(10,), metrics=("ndcg",), progress=False).summary["ndcg@10"]

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
        Y = torch.from_numpy(self.item_factors_).to(device, dtype)
        return solve_users(m, Y, self.alpha, reg, self.chunk_size).cpu().numpy().astype(np.float32)

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
        rows = SparseRows.build(m, self.alpha, user_reg, dtype, device, block_width(self.factors, dtype, device))
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
    total = ((U.T @ U) * (V.T @ V)).sum()
    for blk in rows.blocks:
        s = torch.sparse.sampled_addmm(blk.matrix(blk.weight), U, V[blk.start : blk.stop].T, beta=0.0).values()
        total += ((1.0 + blk.weight) * (1.0 - s) ** 2 - s**2).sum()
    total += (rows.reg * U * U).sum() + (item_reg.reshape(-1, 1) * V * V).sum()
    return float(total)
