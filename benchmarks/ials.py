"""advrec's IALS against implicit's ALS, side by side: seconds per iteration and Recall@20 / NDCG@20.

Protocol (Gowalla as LightGCN released it): fit on the official `train.txt`, rank every item for each user of
`test.txt` with the user's training items excluded, Recall@20 and NDCG@20 as in DESIGN §5. Both libraries get
the same factors, regularisation, confidence, iterations, CG steps, dtype (float32) and thread count: torch's
intra-op threads for advrec, `num_threads` (with BLAS held to one thread, as implicit asks) for implicit. Each
fit runs in a fresh process (so its peak RSS is its own), the two libraries alternate over `--rounds` rounds
(the order flipped every round) to share out the noise of a busy machine, and the load average is recorded
before each fit. Round r starts both libraries from seed 2020 + r, so Recall@20 is reported over
seeds. Seconds per iteration: the median over a fit's iterations (user step + item step).

Equal settings: implicit 0.7.3 (`implicit/cpu/als.py`, `least_squares_cg`) solves
(YᵀY + regularization·I + Σ_i (c_ui − 1) y_i y_iᵀ) x_u = Σ_i c_ui y_i with c_ui = alpha·r_ui (no added 1) and an
unscaled regularization. advrec's c_ui = 1 + alpha·r_ui, so on binary data advrec (alpha=a, reg=λ,
reg_scaling="none") and implicit (alpha=1 + a, regularization=λ) solve the same systems. Both start from factors
uniform on [0, 0.01) (different random streams).

`--tune` selects advrec's settings on a validation carve of the training data (10% of each user's training
items, `gowalla_split`'s carve), by validation Recall@20, then fits the chosen settings on all of train and
evaluates on test once; this is reported apart from the equal-settings comparison.

Usage: python benchmarks/ials.py [--rounds 3] [--threads 1 2] [--datasets gowalla synthetic] [--tune] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
# the equal-settings comparison: advrec's default reg and alpha (tuned on validation, see `tune`), no frequency
# scaling, 64 factors, 15 iterations, 3 CG steps; implicit's settings are derived from them (see the docstring)
EQUAL: dict[str, Any] = {
    "factors": 64,
    "reg": 10.0,
    "alpha": 100.0,
    "reg_scaling": "none",
    "iterations": 15,
    "cg_steps": 3,
}
KS = (20,)
SEED = 2020
INIT = "uniform [0, 0.01)"  # advrec's and implicit's initial factors
NO_IMPLICIT = "implicit is not installed (pip install implicit==0.7.3): the peer's rows are skipped"


# ---------------------------------------------------------------------------------------------- data
def data_dir() -> Path:
    return Path(os.environ.get("ADVREC_DATA_DIR", "/work/shared/data"))


def gowalla_split(valid_share: float | None) -> Any:
    """Gowalla's official split (validation carved from train when `valid_share` is set)."""
    from advrec.data import official_split

    return official_split("gowalla", data_dir=data_dir(), valid_share=valid_share)


def synthetic_split() -> Any:
    """The 100k × 10k × 5M synthetic set (Gowalla's power laws), per user 8:2 train/test, as benchmarks/scale.py."""
    from advrec.data import synthetic_interactions
    from advrec.data.splits import ratio_split

    X = synthetic_interactions(100_000, 10_000, 5_000_000, random_state=0)
    return ratio_split(X, (0.8, 0.0, 0.2), random_state=0)


def load_split(dataset: str, valid_share: float | None = None) -> Any:
    if dataset == "gowalla":
        return gowalla_split(valid_share)
    return synthetic_split()


# ---------------------------------------------------------------------------------------------- fitting
def fit_advrec(train: Any, params: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    from advrec.models.ials import IALS

    model = IALS(**params, device="cpu", random_state=seed).fit(train)
    return model.user_factors_, model.item_factors_, [r["seconds"] for r in model.training_log_]


def fit_implicit(
    train: Any, params: dict[str, Any], threads: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    m = train.matrix.tocsr()
    if not np.all(m.data == 1.0):
        raise ValueError("the equal-settings mapping of alpha holds for binary data only")
    model = AlternatingLeastSquares(
        factors=params["factors"], regularization=params["reg"], alpha=1.0 + params["alpha"],
        iterations=params["iterations"], num_threads=threads, random_state=seed, dtype=np.float32,
    )  # fmt: skip
    model.cg_steps = params["cg_steps"]
    seconds: list[float] = []
    with threadpool_limits(1, user_api="blas"):
        model.fit(m, show_progress=False, callback=lambda it, elapsed, loss: seconds.append(elapsed))
    return np.asarray(model.user_factors), np.asarray(model.item_factors), seconds


def metrics(split: Any, U: np.ndarray, V: np.ndarray, on: str) -> dict[str, float]:
    from advrec.evaluation.evaluate import evaluate_scores

    es = split.eval_set(on)
    report = evaluate_scores(lambda h, u: U[u] @ V.T, es, ks=KS, metrics=("recall", "ndcg"))
    return {k: report.summary[k] for k in ("recall@20", "ndcg@20")}


def job(
    library: str, dataset: str, params: dict[str, Any], threads: int, valid_share: float | None, seed: int = SEED
) -> dict:
    """One fit and its evaluation, in a fresh process with `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    split = load_split(dataset, valid_share)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    if library == "advrec":
        U, V, seconds = fit_advrec(split.train, params, seed)
    else:
        U, V, seconds = fit_implicit(split.train, params, threads, seed)
    fit_s = time.perf_counter() - t0
    on = "test" if valid_share is None else "valid"
    return {
        "library": library, "dataset": dataset, "params": params, "threads": threads, "on": on, "seed": seed,
        "iteration_s": float(np.median(seconds)), "iterations_s": seconds, "fit_s": fit_s,
        **metrics(split, U, V, on), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "init": INIT,
        "load_before": load, "load_after": os.getloadavg()[0],
        "data": {"users": split.n_users, "items": split.n_items, "train_nnz": split.train.nnz},
    }  # fmt: skip


def in_fresh_process(*args: Any) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(job, *args).result()


# ---------------------------------------------------------------------------------------------- runs
def side_by_side(datasets: list[str], threads: list[int], rounds: int, params: dict[str, Any]) -> list[dict]:
    libraries = ["advrec", "implicit"] if importlib.util.find_spec("implicit") else ["advrec"]
    if len(libraries) == 1:
        print(NO_IMPLICIT, flush=True)
    rows = []
    for dataset in datasets:
        for t in threads:
            for r in range(rounds):
                for lib in libraries if r % 2 == 0 else libraries[::-1]:
                    # round r: seed SEED + r for both libraries, so recall varies with the start as timing does
                    row = in_fresh_process(lib, dataset, params, t, None, SEED + r) | {"round": r}
                    rows.append(row)
                    print(
                        f"{dataset} {lib} threads={t} round {r}: {row['iteration_s']:.3f} s/iteration, fit "
                        f"{row['fit_s']:.1f} s, recall@20 {row['recall@20']:.4f}, ndcg@20 {row['ndcg@20']:.4f}, "
                        f"peak {row['peak_rss_mb']:.0f} MB, load {row['load_before']:.2f}",
                        flush=True,
                    )
    return rows


# advrec's settings searched on validation: a grid at 64 factors, then around its best at larger sizes
TUNE_GRID: list[dict[str, Any]] = [
    {"factors": 64, "reg": reg, "alpha": alpha, "reg_scaling": scaling, "iterations": 15}
    for scaling in ("none", "frequency")
    for alpha in (10.0, 30.0, 100.0, 300.0)
    for reg in (1.0, 10.0, 100.0)
]
TUNE_SIZES = (128, 256)
TUNE_REG_FACTORS = (1.0, 3.0, 10.0, 30.0)


def key(on: str, params: dict[str, Any]) -> str:
    return json.dumps([on, params], sort_keys=True)


def tune(threads: int, quick: bool, done: list[dict]) -> list[dict]:
    """The grid on validation, its best at `TUNE_SIZES` with reg × `TUNE_REG_FACTORS` and both reg scalings, then
    the best at 64 factors and the best overall fitted on all of train and evaluated on test. Validation rows
    already in `done` (an earlier run) are not fitted again; the test fits always are."""
    known = {key(r["on"], r["params"]): r for r in done if r["on"] == "valid"}

    def run(params: dict[str, Any], on: str) -> dict:
        if key(on, params) not in known:
            known[key(on, params)] = in_fresh_process(
                "advrec", "gowalla", params, threads, 0.1 if on == "valid" else None
            )
        row = known[key(on, params)]
        print(f"{on} {params}: recall@20 {row['recall@20']:.4f}, ndcg@20 {row['ndcg@20']:.4f}", flush=True)
        return row

    rows = [run(p, "valid") for p in (TUNE_GRID[:2] if quick else TUNE_GRID)]
    best64 = max(rows, key=lambda r: r["recall@20"])["params"]
    for size in () if quick else TUNE_SIZES:
        for mult in TUNE_REG_FACTORS:
            for scaling in ("none", "frequency"):
                params = {**best64, "factors": size, "reg": best64["reg"] * mult, "reg_scaling": scaling}
                rows.append(run(params, "valid"))
    best = max(rows, key=lambda r: r["recall@20"])["params"]
    return rows + [run(p, "test") for p in ([best64, best] if best != best64 else [best64])]


# ---------------------------------------------------------------------------------------------- report
def spread(values: list[float]) -> str:
    """Median (min–max) over the rounds' seeds."""
    return f"{np.median(values):.4f} ({min(values):.4f}–{max(values):.4f})"


def pairs_table(rows: list[dict]) -> str:
    head = (
        "| data | threads | library | s/iteration, median of rounds (min–max) | advrec ÷ implicit, median of rounds "
        "| fit s | recall@20, median (min–max) of seeds | ndcg@20 | peak MB | load average before |"
    )
    lines = [head, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key_ in sorted({(r["dataset"], r["threads"]) for r in rows}):
        group = [r for r in rows if (r["dataset"], r["threads"]) == key_]
        its = {
            lib: {r["round"]: r["iteration_s"] for r in group if r["library"] == lib} for lib in ("advrec", "implicit")
        }
        ratios = [its["advrec"][k] / its["implicit"][k] for k in its["advrec"] if k in its["implicit"]]
        for lib in ("advrec", "implicit"):
            rs = [r for r in group if r["library"] == lib]
            if not rs:
                continue
            s = np.array([r["iteration_s"] for r in rs])
            loads = [r["load_before"] for r in rs]
            cells = [
                key_[0], str(key_[1]), lib, f"{np.median(s):.3f} ({s.min():.3f}–{s.max():.3f})",
                f"{np.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})" if ratios and lib == "advrec" else "",
                f"{np.median([r['fit_s'] for r in rs]):.1f}", spread([r["recall@20"] for r in rs]),
                spread([r["ndcg@20"] for r in rs]), f"{max(r['peak_rss_mb'] for r in rs):.0f}",
                f"{min(loads):.1f}–{max(loads):.1f}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tune_table(rows: list[dict]) -> str:
    lines = [
        "| on | factors | reg | alpha | reg_scaling | recall@20 | ndcg@20 | s/iteration | initial factors |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        p = r["params"]
        lines.append(
            f"| {r['on']} | {p['factors']} | {p['reg']} | {p['alpha']} | {p.get('reg_scaling', 'none')} | "
            f"{r['recall@20']:.4f} | {r['ndcg@20']:.4f} | {r['iteration_s']:.3f} | {r.get('init', INIT)} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if importlib.util.find_spec("implicit"):
        from importlib.metadata import version

        env["implicit"] = version("implicit")
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--datasets", nargs="+", default=["gowalla", "synthetic"], choices=["gowalla", "synthetic"])
    ap.add_argument("--tune", action="store_true", help="select advrec's settings on validation (slow)")
    ap.add_argument("--quick", action="store_true", help="one round, 2 iterations, nothing written: a smoke test")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    datasets = list(args.datasets)
    params = {**EQUAL, "iterations": 2} if args.quick else EQUAL
    doc: dict[str, Any] = {"environment": environment(), "equal_settings": params}
    rounds = 1 if args.quick else args.rounds
    doc["side_by_side"] = side_by_side(datasets, args.threads, rounds, params) if rounds else []
    tuned = args.out / "ials.tune.json"
    if args.tune:
        done = json.loads(tuned.read_text())["rows"] if tuned.exists() and not args.quick else []
        doc["tuning"] = tune(args.threads[0], args.quick, done)
        if not args.quick:
            tuned.write_text(json.dumps({"environment": doc["environment"], "rows": doc["tuning"]}, indent=2))
    elif tuned.exists():
        doc["tuning"] = json.loads(tuned.read_text())["rows"]
    out = [f"# advrec IALS vs implicit ALS ({doc['environment']['date']})", "", pairs_table(doc["side_by_side"])]
    if doc.get("tuning"):
        out += ["", "## advrec tuned on validation (Gowalla)", "", tune_table(doc["tuning"])]
    print("\n".join(out))
    if not args.quick and rounds:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ials.json").write_text(json.dumps(doc, indent=2))
        (args.out / "ials.md").write_text("\n".join(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
