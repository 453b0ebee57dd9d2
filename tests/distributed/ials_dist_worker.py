"""One rank of the distributed iALS test, started by torchrun: fits every case of `CASES` and writes, per case,
the factors after every half-step and the fitted model's numbers to `<out>/<case>-rank<r>.npz`, then the error of
a fit on data that differ between ranks to `<out>/other-data-rank<r>.txt`.

`python ials_dist_worker.py OUT` (under `torchrun --nproc-per-node 2`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advrec import distributed
from advrec.data.splits import Split, ratio_split
from advrec.errors import DataError
from advrec.models.ials import IALS, ChunkRunner, Side
from advrec.testing import two_communities

CASES: dict[str, dict[str, Any]] = {
    "cg-chunks-of-5": {"chunk_size": 5, "iterations": 4},
    "cg-one-chunk": {"iterations": 3},  # each side is one chunk: rank 1 solves no rows
    "cholesky-frequency": {"solver": "cholesky", "reg_scaling": "frequency", "iterations": 3, "verbose": True},
    "cg-early-stop": {"chunk_size": 4, "iterations": 12, "patience": 1, "reg": 0.5},
    "cg-unseeded": {"chunk_size": 5, "iterations": 2, "random_state": None},
}


def data() -> Split:
    return ratio_split(two_communities(48, 24, density=0.4, random_state=3), (0.8, 0.1, 0.1), random_state=5)


class Recording(IALS, register=False):
    """IALS that keeps a copy of the solved factor matrix after every half-step."""

    def _half_step(self, side: Side, X: torch.Tensor, Y: torch.Tensor, runner: ChunkRunner) -> int:
        sent = super()._half_step(side, X, Y, runner)
        self.__dict__.setdefault("half_steps", []).append(X.cpu().numpy().copy())
        return sent


def fit(case: str) -> Recording:
    params = {"factors": 8, "device": "cpu", "random_state": 7, **CASES[case]}
    split = data()
    return Recording(**params).fit(split.train, valid=split)


def record(model: Recording) -> dict[str, np.ndarray]:
    """The numbers the test compares, as arrays."""
    log = model.training_log_
    out = {f"half_step_{k:03d}": x for k, x in enumerate(model.half_steps)}  # type: ignore[attr-defined]
    out |= {
        "user_factors": model.user_factors_,
        "item_factors": model.item_factors_,
        "ndcg": np.array([r.get("valid_ndcg@10", np.nan) for r in log]),
        "loss": np.array([r.get("loss", np.nan) for r in log]),
        "comm_bytes": np.array([r.get("comm_bytes", 0) for r in log]),
        "scalars": np.array([model.comm_bytes_per_iteration_, model.epochs_run_, model.best_epoch_]),
    }
    return out


def refusal_of_other_data() -> str:
    """The error of a fit whose training data differ between ranks (rank 1 drops one interaction)."""
    X = data().train.matrix.tolil()
    if distributed.rank() == 1:
        X[0, X.rows[0][0]] = 0
    try:
        IALS(factors=4, iterations=1, device="cpu").fit(X.tocsr())
    except DataError as exc:
        return str(exc)
    return "no error"


def main(out: Path) -> None:
    for case in CASES:
        model = fit(case)
        np.savez(out / f"{case}-rank{distributed.rank()}.npz", **record(model))
    (out / f"other-data-rank{distributed.rank()}.txt").write_text(refusal_of_other_data())
    distributed.barrier()


if __name__ == "__main__":
    with distributed.process_group("cpu") as several:
        if not several:
            sys.exit("expected a process group of several ranks (run under torchrun --nproc-per-node 2)")
        main(Path(sys.argv[1]))
    distributed.exit_worker()
