"""Training past one process on `torch.distributed`, as launched by torchrun: the process group, ranks,
sharding users across ranks, per-rank seeds and gathering results.

A process is distributed when torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`) is set;
`init()` then joins the process group (gloo on the CPU, NCCL when the device is CUDA) once. Everything here is a
no-op in a plain single process (rank 0 of 1), so the same code runs both ways.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist

from advrec.errors import ConfigError


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its environment)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device_type: str = "cpu") -> bool:
    """Joins torchrun's process group (once); returns whether this process is one of several.

    The backend is NCCL for CUDA tensors (with gloo for CPU ones) on CUDA, gloo otherwise; CUDA processes each take
    the GPU of their local rank.
    """
    if not launched():
        return False
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; distributed training needs it")
    if not dist.is_initialized():
        # on CUDA, NCCL for CUDA tensors and gloo for the CPU arrays that evaluation and checkpoints gather
        backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank())
        r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        store, _, _ = next(dist.rendezvous("env://", r, w))
        # after torchrun restarts the workers the store still holds the last attempt's addresses: keys of their own
        attempt = dist.PrefixStore(f"advrec/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group(backend=backend, store=attempt, rank=r, world_size=w)
    return world_size() > 1


def active() -> bool:
    """Whether a process group of more than one process is in use."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Whether this process writes files and prints results (rank 0, or the only process)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """The CUDA device of this process's local rank when `device` is CUDA without an index; else `device`."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", local_rank())
    return device


def rank_seed(seed: int, which: int | None = None) -> int:
    """A seed of its own for rank `which` (default: this rank), derived from `seed`; rank 0 of 1 keeps `seed`."""
    r = rank() if which is None else which
    if world_size() == 1 and r == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), r]).generate_state(1)[0] & 0x7FFFFFFF)


def shard(items: np.ndarray, seed: int, epoch: int, pad: bool = True) -> np.ndarray:
    """This rank's part of `items` for `epoch`: one permutation drawn from (seed, epoch), the same on every rank,
    dealt out round-robin. With `pad`, every rank gets the same count (the first items repeat), so all ranks take
    the same number of steps; otherwise the parts are disjoint and cover `items` exactly once."""
    n, w, r = len(items), world_size(), rank()
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    if pad and n % w:
        order = np.concatenate([order, order[: w - n % w]])
    return np.asarray(items)[order[r::w]]


def split_evenly(n: int, which: int | None = None) -> tuple[int, int]:
    """The contiguous range [a, b) of rank `which` (default: this rank) when 0..n-1 is cut in equal parts."""
    r, w = (rank() if which is None else which), world_size()
    return r * n // w, (r + 1) * n // w


def all_sum(value: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """The element-wise sum over ranks (float64)."""
    t = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.numpy()


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """The rows of every rank, concatenated in rank order (row counts may differ between ranks)."""
    if not active():
        return rows
    rows = np.ascontiguousarray(rows)
    counts = [None] * world_size()
    dist.all_gather_object(counts, len(rows))
    width = rows.shape[1:]
    padded = np.zeros((max(counts), *width), dtype=rows.dtype)  # type: ignore[type-var]
    padded[: len(rows)] = rows
    t = torch.from_numpy(padded)
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t)
    return np.concatenate([p.numpy()[:c] for p, c in zip(parts, counts, strict=True)])  # type: ignore[misc]


def gather_objects(obj: object) -> list[object]:
    """`obj` of every rank, in rank order (a list of one in a single process)."""
    if not active():
        return [obj]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, src: int = 0) -> object:
    """`obj` of rank `src`, on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leaves the process group: every rank waits for the others (no rank tears its connections down while a peer
    still uses them), then the group is destroyed. A no-op without a group."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def exit_worker(code: int = 0) -> NoReturn:
    """Ends a torchrun worker whose work is done: the process group shut down, output flushed, and the process
    left without running the C++ runtime's exit-time destructors. Those can abort a worker that finished its work
    (SIGABRT, "terminate called without an active exception": 1 of 155 runs of a 2-process gloo job on a loaded
    2-core machine, and once in CI), which torchrun reports as a failed job."""
    try:
        shutdown()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


@contextmanager
def process_group(device_type: str = "cpu") -> Iterator[bool]:
    """`init()` for the block, the group shut down after it when this block created it."""
    created = launched() and not (dist.is_available() and dist.is_initialized())
    on = init(device_type)
    yield on  # on an error, no collective teardown: peers may be blocked in a collective (torchrun ends them)
    if created:
        shutdown()
