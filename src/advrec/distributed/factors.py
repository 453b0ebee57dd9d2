"""Factor models trained across ranks: contiguous shares of the rows, reassembled by an all-gather.

Every rank holds all factors; it solves the rows of its share, then one all-gather of equal-size (padded)
blocks gives every rank every share. The bytes are counted as gloo's ring all-gather sends them: w − 1 blocks
per process and gather. Everything here also works in a plain single process (one share, nothing sent).

How a model trains across ranks is its class attribute `scale_out`: `SINGLE_NODE` (closed-form models, which
`refuse_single_node` stops under a process group), `DATA_PARALLEL` (the torch models: DDP in the training loop)
or `ALL_GATHER` (factor models such as iALS).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from advrec.distributed import active, broadcast_object, rank, world_size
from advrec.errors import ConfigError, DataError

SINGLE_NODE = "single-node"
ALL_GATHER = "data-parallel (all-gather)"
DATA_PARALLEL = "data-parallel (DDP)"
_SCALAR_BYTES = 8  # one float64


def refuse_single_node(name: str) -> None:
    """Raises ConfigError when a single-node model (`name`) is fitted under a process group of several ranks."""
    if active():
        raise ConfigError(
            f"{name} is fitted in one process ({SINGLE_NODE}); run it without torchrun, or with --nproc-per-node 1 "
            f"(this process is rank {rank()} of {world_size()})"
        )


def balanced_cuts(weights: np.ndarray, parts: int) -> np.ndarray:
    """`parts + 1` cut points 0 = c_0 ≤ … ≤ c_parts = len(weights): part k holds units c_k..c_{k+1}−1, each cut at
    the unit boundary whose cumulative weight is nearest k/parts of the total (ties to the earlier boundary)."""
    ends = np.concatenate([[0.0], np.cumsum(np.asarray(weights, dtype=np.float64))])
    targets = ends[-1] * np.arange(1, parts) / parts
    after = np.clip(np.searchsorted(ends, targets, side="left"), 1, len(ends) - 1)
    nearer_before = targets - ends[after - 1] <= ends[after] - targets
    inner = np.where(nearer_before, after - 1, after)
    return np.concatenate([[0], inner, [len(weights)]]).astype(np.int64)


@dataclass
class RowShares:
    """Each rank's contiguous rows [starts[r], starts[r+1]) of one side's factor matrix."""

    starts: np.ndarray

    @classmethod
    def of_units(cls, unit_starts: np.ndarray, weights: np.ndarray) -> RowShares:
        """Shares of whole units (`unit_starts`: len(weights)+1 row boundaries) of about equal total weight."""
        return cls(np.asarray(unit_starts, dtype=np.int64)[balanced_cuts(weights, world_size())])

    @property
    def own(self) -> tuple[int, int]:
        """This rank's rows [a, b)."""
        r = rank()
        return int(self.starts[r]), int(self.starts[r + 1])

    @property
    def block_rows(self) -> int:
        """Rows of every rank's block in the all-gather (the largest share)."""
        return int(np.diff(self.starts).max())

    def gather_bytes(self, factors: int, itemsize: int) -> int:
        """Bytes this process sends per `gather` (0 in one process)."""
        return (world_size() - 1) * self.block_rows * factors * itemsize

    def gather(self, X: torch.Tensor) -> int:
        """Every rank's share of `X` (n_rows × d) written into `X` on every rank; returns the bytes sent."""
        if not active():
            return 0
        a, b = self.own
        blocks = X.new_zeros((world_size(), self.block_rows, X.shape[1]))
        blocks[rank(), : b - a] = X[a:b]
        dist.all_gather(list(blocks.unbind(0)), blocks[rank()].clone())
        for r, (lo, hi) in enumerate(zip(self.starts[:-1].tolist(), self.starts[1:].tolist(), strict=True)):
            if r != rank():
                X[lo:hi] = blocks[r, : hi - lo]
        return self.gather_bytes(X.shape[1], X.element_size())


def common_seed(random_state: int | np.random.Generator | None) -> int | np.random.Generator | None:
    """`random_state` where it already means the same numbers on every rank (an int, or any value in one
    process); otherwise (None or a Generator under a process group) a seed drawn from it on rank 0, sent to all."""
    if not active() or (isinstance(random_state, int | np.integer) and not isinstance(random_state, bool)):
        return random_state
    drawn = int(np.random.default_rng(random_state).integers(2**63 - 1))
    return int(broadcast_object(drawn))  # type: ignore[call-overload]


def value_of_rank0(value: float) -> tuple[float, int]:
    """Rank 0's `value` on every rank (a decision all ranks must share) and the bytes this process sent."""
    if not active():
        return value, 0
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item()), _SCALAR_BYTES * (world_size() - 1) if rank() == 0 else 0


def check_same_matrix(m: sp.csr_matrix, what: str) -> None:
    """Raises DataError unless every rank passed the same matrix (shape, nonzeros and a checksum of each part)."""
    if not active():
        return
    mine = [*m.shape, m.nnz, *(zlib.crc32(np.ascontiguousarray(a).tobytes()) for a in (m.indptr, m.indices, m.data))]
    everyone = torch.zeros((world_size(), len(mine)), dtype=torch.int64)
    dist.all_gather(list(everyone.unbind(0)), torch.tensor(mine, dtype=torch.int64))
    differ = [r for r in range(world_size()) if everyone[r].tolist() != everyone[0].tolist()]
    if differ:
        raise DataError(
            f"{what} differs between ranks: ranks {differ} do not hold rank 0's matrix "
            f"(shape {m.shape}, {m.nnz} nonzeros here on rank {rank()}); every rank must load and split the same data"
        )
