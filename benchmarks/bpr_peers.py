"""advrec's BPRMF beside implicit's BPR on RecBole's ml-1m protocol: fit seconds and NDCG@10, 1 and 2 threads.

Protocol as benchmarks/recbole_ml1m.py: ratings ≥ 3, 10-core, per-user random 8:1:1 split (seed 2020), full ranking
with the user's training and validation items excluded, 64 factors for both. Epochs are chosen on validation
NDCG@10 for each library and thread count: advrec's by its early stopping (a validation every epoch), implicit's
from its validation curve (every `--every` iterations up to `--max-iterations`, defaults lr 0.01, reg 0.01).
Timed: `--rounds` rounds, the libraries' order alternating, each fit in a fresh process whose OpenMP, MKL, torch
and implicit threads are all set to T: a fit of the chosen epochs from scratch without validation, then its test
NDCG@10 (not timed). advrec is also timed with its early stopping (fit(train, valid=split)), and with uniform
negatives (negative_pool=1, implicit's sampler) as a second row. The load average before each fit is recorded.

Usage: python benchmarks/bpr_peers.py [--rounds 3] [--threads 1 2] [--quick]
Results: benchmarks/results/bpr_peers.json and .md. implicit 0.7.3 (`pip install implicit==0.7.3`) is a peer
only: without it the advrec rows are run and the implicit rows are skipped with a message.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 2020
FACTORS = 64
VARIANTS = {"advrec BPRMF": {}, "advrec BPRMF, uniform negatives": {"negative_pool": 1}}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _split() -> Any:
    from advrec.data import load_movielens
    from advrec.data.splits import ratio_split

    return ratio_split(load_movielens("ml-1m", min_rating=3, core=10), (0.8, 0.1, 0.1), random_state=SEED)


def _ndcg(score: Any, split: Any, on: str) -> float:
    from advrec.data.splits import EvalSet
    from advrec.evaluation.evaluate import evaluate_scores

    es: EvalSet = split.eval_set(on)
    return float(evaluate_scores(score, es, ks=(10,), metrics=("ndcg",)).summary["ndcg@10"])


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def advrec_fit(params: dict, threads: int, epochs: int | None) -> dict:
    """advrec's BPRMF: with `epochs`, that many epochs without validation; else early stopping on validation."""
    _threads(threads)
    from advrec.models import BPRMF

    split = _split()
    model = BPRMF(factors=FACTORS, device="cpu", random_state=SEED, **params)
    if epochs is not None:
        model.set_params(epochs=epochs)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    model.fit(split.train, valid=None if epochs is not None else split)
    seconds = time.perf_counter() - t0

    def score(h: Any, users: np.ndarray) -> np.ndarray:
        return model.score(h, users)

    out = {"fit_s": seconds, "load": load, "epochs": int(model.epochs_run_), "test": _ndcg(score, split, "test")}
    if epochs is None:
        out.update(best_epoch=int(model.best_epoch_), valid=float(model.best_valid_))
    return out


def _implicit_scorer(model: Any) -> Any:
    def score(h: Any, users: np.ndarray) -> np.ndarray:
        return np.asarray(model.user_factors[users] @ model.item_factors.T)  # its last column is the item bias

    return score


def implicit_fit(threads: int, iterations: int, every: int | None) -> dict:
    """implicit's BPR: `iterations` epochs; with `every`, the validation curve every that many epochs (not timed)."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    _threads(threads)
    split = _split()
    X = split.train.matrix.tocsr().astype(np.float32)
    model = BayesianPersonalizedRanking(factors=FACTORS, iterations=iterations, num_threads=threads, random_state=SEED)
    curve: list[tuple[int, float]] = []
    spent = [0.0]

    def callback(epoch: int, elapsed: float, *_: Any) -> None:  # BPR also passes (correct, skipped)
        if every and (epoch + 1) % every == 0:
            t0 = time.perf_counter()
            curve.append((epoch + 1, _ndcg(_implicit_scorer(model), split, "valid")))
            spent[0] += time.perf_counter() - t0

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    model.fit(X, show_progress=False, callback=callback if every else None)
    seconds = time.perf_counter() - t0 - spent[0]
    out = {"fit_s": seconds, "load": load, "epochs": iterations, "test": _ndcg(_implicit_scorer(model), split, "test")}
    if every:
        best = max(curve, key=lambda c: c[1])
        out.update(best_epoch=best[0], valid=best[1], curve=curve)
    return out


def in_process(fn: Any, threads: int, *args: Any) -> dict:
    """`fn(threads, ...)` in a fresh process whose thread variables say `threads` (set before torch loads)."""
    saved = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update({v: str(threads) for v in THREAD_VARS})
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            return pool.submit(fn, *args).result()
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def select(threads: int, args: argparse.Namespace, peer: bool) -> dict[str, dict]:
    """Epochs chosen on validation per library (and advrec variant) at `threads` threads."""
    chosen = {}
    for name, params in VARIANTS.items():
        chosen[name] = in_process(advrec_fit, threads, params, threads, None)
        print(f"  select {name} ({threads} thr): epoch {chosen[name]['best_epoch']}, valid "
              f"{chosen[name]['valid']:.4f}, early-stopped fit {chosen[name]['fit_s']:.1f}s", flush=True)  # fmt: skip
    if peer:
        chosen["implicit BPR"] = in_process(implicit_fit, threads, threads, args.max_iterations, args.every)
        print(f"  select implicit BPR ({threads} thr): iterations {chosen['implicit BPR']['best_epoch']}, valid "
              f"{chosen['implicit BPR']['valid']:.4f}", flush=True)  # fmt: skip
    return chosen


def timed_round(threads: int, chosen: dict[str, dict], flip: bool, peer: bool) -> list[dict]:
    jobs: list[tuple[str, Any, tuple]] = [
        (name, advrec_fit, (params, threads, chosen[name]["best_epoch"])) for name, params in VARIANTS.items()
    ]
    if peer:
        jobs.append(("implicit BPR", implicit_fit, (threads, chosen["implicit BPR"]["best_epoch"], None)))
    rows = []
    for name, fn, fargs in reversed(jobs) if flip else jobs:
        r = in_process(fn, threads, *fargs)
        rows.append({"library": name, "threads": threads, **r})
        print(f"  {name} ({threads} thr): {r['fit_s']:.1f}s, test ndcg@10 {r['test']:.4f}, load {r['load']:.2f}",
              flush=True)  # fmt: skip
    return rows


def table(selected: dict[int, dict[str, dict]], rows: list[dict]) -> str:
    head = ["library", "threads", "epochs (chosen on valid)", "valid ndcg@10", "test ndcg@10",
            "fit s, median (min–max)", "fit s with early stopping", "load avg at start (min–max)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for threads, chosen in selected.items():
        for name, sel in chosen.items():
            rs = [r for r in rows if r["library"] == name and r["threads"] == threads]
            secs, loads = [r["fit_s"] for r in rs], [r["load"] for r in rs]
            early = f"{sel['fit_s']:.1f}" if name.startswith("advrec") else "–"
            test = np.mean([r["test"] for r in rs])
            lines.append(
                f"| {name} | {threads} | {sel['best_epoch']} | {sel['valid']:.4f} | {test:.4f} | "
                f"{np.median(secs):.1f} ({min(secs):.1f}–{max(secs):.1f}) | {early} | "
                f"{min(loads):.2f}–{max(loads):.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-iterations", type=int, default=300, help="implicit's validation curve runs this far")
    ap.add_argument("--every", type=int, default=10, help="implicit's validation curve step (iterations)")
    ap.add_argument("--quick", action="store_true", help="one round, curve to 20 iterations; nothing written")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.max_iterations, args.every = 1, 20, 10
    peer = importlib.util.find_spec("implicit") is not None
    if not peer:
        print("implicit is not installed (pip install implicit==0.7.3): its rows are skipped", flush=True)
    selected = {t: select(t, args, peer) for t in args.threads}
    rows: list[dict] = []
    for r in range(args.rounds):
        print(f"round {r + 1} of {args.rounds}", flush=True)
        for threads in args.threads:
            rows += timed_round(threads, selected[threads], flip=r % 2 == 1, peer=peer)
    md = table(selected, rows)
    print(md)
    if args.quick:
        return
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
    if peer:
        import implicit

        versions["implicit"] = implicit.__version__
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    intro = (
        f"ml-1m, RecBole protocol (ratings ≥ 3, 10-core, per-user random 8:1:1, seed {SEED}), full ranking, "
        f"{FACTORS} factors; {args.rounds} timed rounds per row, libraries alternating, each fit in a fresh process "
        f"with every thread pool set to the row's threads; fit s = a fit of the chosen epochs without validation. "
        f"Machine: {versions['cpus']} cores; versions: {json.dumps(versions)}."
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bpr_peers.md").write_text(f"# advrec BPRMF beside implicit's BPR ({stamp})\n\n{intro}\n\n{md}\n")
    payload = {"selected": {str(t): s for t, s in selected.items()}, "rounds": rows, "versions": versions}
    (RESULTS / "bpr_peers.json").write_text(json.dumps(payload, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
