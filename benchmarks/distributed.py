"""Training on one process against two under torchrun, on this machine: epoch time, test metrics, bytes sent.

For ml-1m (every rating, ratio split 0.8/0.1/0.1, seed 2020) and Gowalla (the official LightGCN split), each of
BPRMF, MultVAE (torch models, DDP in the training loop) and IALS (factors shared by all-gather) is trained for a
fixed number of epochs (no early stopping) in three settings of the same 2 cores: 1 process × 1 thread,
1 process × 2 threads, 2 processes × 1 thread (torchrun, gloo on 127.0.0.1). Reported: median seconds per epoch,
test Recall@20 and NDCG@10 (full ranking, evaluation shared out by user), bytes each process sent per epoch
(DDP: counted by a comm hook on every gradient all-reduce, 2(w − 1)/w of each bucket; IALS: its all-gathers),
peak RSS per process. Results: benchmarks/results/distributed.{json,md}.

    python benchmarks/distributed.py [--only ml-1m]         # all settings (about 30 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = [(1, 1), (1, 2), (2, 1)]  # (processes, threads per process)
MODELS: dict[str, dict[str, dict[str, Any]]] = {
    "ml-1m": {
        "BPRMF": {"epochs": 20},
        "MultVAE": {"epochs": 20},
        "IALS": {"iterations": 10},
    },
    "gowalla": {
        "BPRMF": {"epochs": 5},
        "MultVAE": {"epochs": 2},
        "IALS": {"iterations": 5},
    },
}


def worker(dataset: str, model_name: str, out: Path) -> None:
    """Fits and evaluates one model (in every rank of a torchrun job), rank 0 writes the result."""
    import torch

    from advrec import distributed
    from advrec.data import load_dataset
    from advrec.data.datasets import official_split
    from advrec.data.splits import ratio_split
    from advrec.evaluation import evaluate
    from advrec.models import model_class

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if dataset == "gowalla":
        split = official_split("gowalla", valid_share=None)
    else:
        split = ratio_split(load_dataset(dataset), (0.8, 0.1, 0.1), random_state=2020)
    params = {**MODELS[dataset][model_name], "device": "cpu", "random_state": 2020}
    model = model_class(model_name)(**params)
    with distributed.process_group("cpu"):
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_seconds = time.perf_counter() - t0
        report = evaluate(model, split, ks=(10, 20), metrics=("ndcg", "recall"))
        peak = distributed.gather_objects(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if not distributed.is_main():
        return
    log = model.training_log_
    comm = [r.get("comm_bytes", 0) for r in log]
    row = {
        "dataset": dataset, "model": model_name, "params": MODELS[dataset][model_name],
        "processes": distributed.world_size(), "threads": torch.get_num_threads(),
        "epochs": len(log), "s_per_epoch": float(np.median([r["seconds"] for r in log])), "fit_s": fit_seconds,
        "recall@20": report.summary["recall@20"], "ndcg@10": report.summary["ndcg@10"],
        "bytes_per_epoch": float(np.median(comm)) if comm else 0.0, "peak_rss_bytes": max(peak),  # type: ignore[type-var]
        "users": split.train.n_users, "items": split.train.n_items, "train_nnz": split.train.nnz,
    }  # fmt: skip
    out.write_text(json.dumps(row))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_one(dataset: str, model: str, processes: int, threads: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{dataset}-{model}-{processes}x{threads}.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    me = [str(Path(__file__).resolve()), "--worker", dataset, model, str(out)]
    if processes == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{free_port()}", *me]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{dataset} {model} {processes}×{threads} failed:\n{done.stderr[-4000:]}")
    row = json.loads(out.read_text())
    row["wall_s"] = time.perf_counter() - t0
    row["load_after"] = os.getloadavg()[0]
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# One process against two on this machine (2 cores)",
        "",
        "Written by `benchmarks/distributed.py`. Fixed epochs, no early stopping; test metrics on full ranking.",
        "Bytes: what each process sent per epoch in gradient all-reduces (DDP) or factor all-gathers (IALS).",
        "",
        "| dataset | model | processes × threads | s/epoch | Recall@20 | NDCG@10 | MB sent/epoch | peak RSS (GB) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['model']} {json.dumps(r['params'])} | {r['processes']} × {r['threads']} | "
            f"{r['s_per_epoch']:.2f} | {r['recall@20']:.4f} | {r['ndcg@10']:.4f} | {r['bytes_per_epoch'] / 1e6:,.1f} | "
            f"{r['peak_rss_bytes'] / 1e9:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=3, metavar=("DATASET", "MODEL", "OUT"))
    parser.add_argument("--only", choices=sorted(MODELS))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], Path(args.worker[2]))
        return
    tmp = RESULTS / ".distributed-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset, models in MODELS.items():
        if args.only and dataset != args.only:
            continue
        for model in models:
            for processes, threads in SETTINGS:
                rows.append(run_one(dataset, model, processes, threads, tmp))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "distributed.md").write_text(markdown(rows))
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
