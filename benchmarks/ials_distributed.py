"""iALS in one process against several processes under torchrun: seconds and bytes sent per iteration on ml-1m.

One fit per call: every ml-1m rating (no threshold, no k-core), ratio split 0.8/0.1/0.1 (seed 2020), IALS with
factors 64, float32, CG (3 steps), 10 iterations, seed 2020, validation NDCG@10 every iteration (its time is not
in the seconds). Each rank prints one JSON line: ranks, torch threads, median seconds per iteration (user step +
item step + the all-gathers), bytes this rank sent per iteration, final validation NDCG@10, a digest of the
factors, and the load average before the fit.

Usage (ADVREC_DATA_DIR holding ml-1m/):
    OMP_NUM_THREADS=1 python benchmarks/ials_distributed.py                  # 1 process × 1 thread
    OMP_NUM_THREADS=2 python benchmarks/ials_distributed.py                  # 1 process × 2 threads
    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 benchmarks/ials_distributed.py   # 2 processes × 1 thread
"""

from __future__ import annotations

import hashlib
import json
import os

import torch

from advrec import distributed
from advrec.data import load_dataset
from advrec.data.splits import ratio_split
from advrec.models import IALS


def main() -> None:
    X = load_dataset("ml-1m")
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=2020)
    load = os.getloadavg()[0]
    model = IALS(factors=64, iterations=10, patience=100, device="cpu", random_state=2020)
    model.fit(split.train, valid=split)
    digest = hashlib.sha256(model.user_factors_.tobytes() + model.item_factors_.tobytes()).hexdigest()[:16]
    row = {
        "ranks": distributed.world_size(),
        "rank": distributed.rank(),
        "threads": torch.get_num_threads(),
        "users": split.train.n_users,
        "items": split.train.n_items,
        "train_nnz": split.train.nnz,
        "seconds_per_iteration": round(model.epoch_seconds_, 3),
        "seconds": [round(r["seconds"], 3) for r in model.training_log_],
        "bytes_per_iteration": model.comm_bytes_per_iteration_,
        "valid_ndcg@10": round(model.training_log_[-1]["valid_ndcg@10"], 6),
        "factors_sha256": digest,
        "load_before": round(load, 2),
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    with distributed.process_group("cpu"):
        main()
