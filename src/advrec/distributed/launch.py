"""Starting a command on several processes and nodes through torch's elastic launcher (torchrun's own code), and
what a worker of such a job joins, agrees on and records.

Threads: each worker runs max(1, cores // processes on its node) torch and BLAS threads, so the processes of a
node share its cores without oversubscribing them. torchrun alone would give every worker one thread (it sets
`OMP_NUM_THREADS=1` with a warning); a user's own `OMP_NUM_THREADS` is always kept. Under a plain `torchrun`
command, torchrun's choice applies: set `OMP_NUM_THREADS` there yourself.

Trust: the rendezvous store listens on the endpoint's port while the job runs and, like the process group,
accepts any peer without credentials; ranks exchange pickled objects. Run jobs where only their own machines
reach those ports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from advrec import distributed
from advrec.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger(__name__)

LOOPBACK_ENDPOINT = "127.0.0.1:0"
"""The rendezvous of a one-node job: port 0, so the launcher's store binds a port the system finds free."""


@dataclass(frozen=True)
class LaunchPlan:
    """How many processes on how many nodes, and where they meet (c10d rendezvous at `rdzv_endpoint`).

    `node_rank` 0 hosts the rendezvous store at the endpoint; the others connect to it. Global ranks are given
    out by the rendezvous, so rank 0 (the one that writes) is on any one of the nodes.
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    max_restarts: int = 0

    @property
    def wanted(self) -> bool:
        """Whether this process should start a job: several processes asked for, and not already in one."""
        return (self.nproc_per_node > 1 or self.nnodes > 1) and not distributed.launched()

    def check(self) -> None:
        """Raises `ConfigError` naming the option at fault."""
        for name in ("nproc_per_node", "nnodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(
                f"--node-rank must be in 0..{self.nnodes - 1} (--nnodes {self.nnodes}), got {self.node_rank}"
            )
        if self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be ≥ 0, got {self.max_restarts}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ConfigError(
                f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT, where node 0 hosts the rendezvous"
            )
        if self.rdzv_endpoint:
            _check_endpoint(self.rdzv_endpoint, self.nnodes)

    @property
    def endpoint(self) -> str:
        return self.rdzv_endpoint or LOOPBACK_ENDPOINT

    def torchrun_args(self, module: str, module_args: list[str]) -> list[str]:
        """torchrun's command line that runs `python -m module *module_args` in every worker."""
        args = [f"--nnodes={self.nnodes}", f"--nproc-per-node={self.nproc_per_node}"]
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={self.endpoint}", f"--max-restarts={self.max_restarts}"]
        if self.nnodes > 1:
            args.append(f"--rdzv-conf=is_host={'true' if self.node_rank == 0 else 'false'}")
        return [*args, "-m", module, *module_args]


def _check_endpoint(endpoint: str, nnodes: int) -> None:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--rdzv-endpoint must be HOST:PORT (e.g. 10.0.0.1:29400), got {endpoint!r}")
    if int(port) == 0 and nnodes > 1:
        raise ConfigError(f"--rdzv-endpoint {endpoint}: with --nnodes {nnodes} the other nodes need a fixed port")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_process(local_world_size: int, cores: int | None = None) -> int:
    """max(1, cores // processes on the node)."""
    return max(1, (available_cores() if cores is None else cores) // max(1, local_world_size))


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`os.environ` with `values` set for the block (workers inherit it), as it was after it."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def launch(plan: LaunchPlan, module: str, module_args: list[str]) -> int:
    """Runs `python -m module *module_args` as the workers of `plan` through the elastic launcher; returns the
    job's exit status (a failed worker's own status, the first to fail; 128 + N for a worker killed by signal N).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torch_run

    plan.check()
    env = {}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads_per_process(plan.nproc_per_node))
    argv = plan.torchrun_args(module, module_args)
    log.info(
        "torchrun %s (OMP_NUM_THREADS=%s)",
        " ".join(argv),
        env.get("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS")),
    )
    try:
        with _environment(env):
            torch_run(get_args_parser().parse_args(argv))
    except ChildFailedError as err:
        code = err.get_first_failure()[1].exitcode
        if code < 0:  # killed by signal -code
            return 128 - code
        return code or 1
    except RendezvousError as err:
        raise ConfigError(f"rendezvous at {plan.endpoint} failed ({plan.nnodes} node(s) expected): {err}") from None
    return 0


def from_main(make: Callable[[], T]) -> T:
    """`make()` run on rank 0 alone, its result given to every rank (`make()` itself outside a job)."""
    return distributed.broadcast_object(make() if distributed.is_main() else None)  # type: ignore[return-value]


def job_setting() -> dict[str, Any]:
    """What a run records of its job: world size, nodes, processes per node, backend, threads, restart count."""
    env, size = os.environ, distributed.world_size()
    local = int(env.get("LOCAL_WORLD_SIZE", size))
    return {
        "world_size": size,
        "nnodes": int(env.get("GROUP_WORLD_SIZE", max(1, size // max(1, local)))),
        "nproc_per_node": local,
        "backend": str(dist.get_backend()) if dist.is_initialized() else None,
        "threads_per_process": torch.get_num_threads(),
        "restart": int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
    }
