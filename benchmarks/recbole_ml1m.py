"""RecBole's published ml-1m protocol, side by side with RecBole's published NDCG@10.

Protocol: ratings ≥ 3 as implicit feedback, iterative 10-core on users and items (6,033 users, 3,123 items,
834,449 interactions), per-user random 8:1:1 split, every item ranked with the user's training and
validation items excluded, model selection on validation NDCG@10, test metrics at K = 10; mean ± std over
three split seeds. Each (model, seed) runs in a fresh process so its peak memory is its own.

Usage: python benchmarks/recbole_ml1m.py [--seeds 2020 2021 2022] [--models EASE BPRMF ...] [--quick] [--update]
       [--log-epochs]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

# RecBole's published ml-1m results (full ranking, same protocol), NDCG@10
RECBOLE_NDCG10 = {
    "Pop": 0.1006, "ItemKNN": 0.2389, "BPRMF": 0.2407, "MultVAE": 0.2523, "EASE": 0.2865, "RecVAE": 0.2795,
}  # fmt: skip

# Model selection on validation NDCG@10 over these grids; {} = the defaults only (early stopping on validation).
GRIDS: dict[str, list[dict]] = {
    "Pop": [{}],
    "ItemKNN": [{"k": k, "shrink": s} for k in (50, 100, 200, 300) for s in (0.0, 10.0)],
    "EASE": [{"l2": v} for v in (250.0, 500.0, 1000.0, 2000.0)],
    "BPRMF": [{}],
    "MultVAE": [{}],
    "RecVAE": [{"lr": 1e-3, "dropout": 0.7}],  # chosen on seed 2020 validation (see the notes of the results)
    "TextEASE": [{"blend": b} for b in (0.0, 0.1, 0.2, 0.3)],  # the text hybrid, on warm users and items
    "EDLAE": [{"dropout": p, "l2": v} for p in (0.25, 0.5, 0.67) for v in (100.0, 300.0, 1000.0)],
    "DLAE": [{"variant": "dlae", "dropout": p, "l2": v} for p in (0.25, 0.5, 0.67) for v in (100.0, 300.0, 1000.0)],
}
# table rows that are a configuration of another model class: row name -> class name
MODEL_CLASS = {"DLAE": "EDLAE"}
METRICS = ("ndcg@10", "recall@10", "mrr@10", "hit@10", "precision@10")


def run_one(model_name: str, seed: int, quick: bool, log_epochs: bool = False) -> dict:
    """Selects, fits and evaluates one model on one split seed (in its own process)."""
    if log_epochs:  # the training loop's row of every epoch, on stderr
        import logging

        logging.basicConfig(format="%(asctime)s %(message)s")
        logging.getLogger("advrec.models.torch_base").setLevel(logging.DEBUG)
    from advrec.data import load_movielens
    from advrec.data.splits import ratio_split
    from advrec.evaluation import evaluate
    from advrec.experiment import build_model

    X = load_movielens("ml-1m", min_rating=3, core=10)
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=seed)
    grid = GRIDS[model_name][:1] if quick else GRIDS[model_name]
    best = None
    for params in grid:
        model = build_model(MODEL_CLASS.get(model_name, model_name), dict(params))
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        if quick and "epochs" in model.get_params():
            model.set_params(epochs=3)
        t0 = time.perf_counter()
        model.fit(split.train, valid=split)
        fit_s = time.perf_counter() - t0
        valid = evaluate(model, split, ks=(10,), on="valid").summary["ndcg@10"]
        if best is None or valid > best["valid_ndcg@10"]:
            t0 = time.perf_counter()
            test = evaluate(model, split, ks=(10,))
            eval_s = time.perf_counter() - t0
            best = {
                "model": model_name,
                "seed": seed,
                "params": params,
                "valid_ndcg@10": valid,
                "test": {m: test.summary[m] for m in METRICS},
                "fit_s": fit_s,
                "eval_s": eval_s,
                "epochs_run": getattr(model, "epochs_run_", None),
                "best_epoch": getattr(model, "best_epoch_", None),
                "epoch_s": getattr(model, "epoch_seconds_", None),
            }
    assert best is not None
    best["grid_size"] = len(grid)
    best["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best["data"] = {"users": X.n_users, "items": X.n_items, "nnz": X.nnz}
    return best


def summarize(rows: list[dict]) -> str:
    models = [m for m in GRIDS if any(r["model"] == m for r in rows)]
    seeds = sorted({r["seed"] for r in rows})
    head = ["model", *METRICS, "RecBole ndcg@10", "fit s", "eval s", "epoch s", "peak MB", "chosen params"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for m in models:
        rs = [r for r in rows if r["model"] == m]
        cells = [m]
        for metric in METRICS:
            v = np.array([r["test"][metric] for r in rs])
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        cells.append(f"{RECBOLE_NDCG10[m]:.4f}" if m in RECBOLE_NDCG10 else "–")
        cells.append(f"{np.mean([r['fit_s'] for r in rs]):.1f}")
        cells.append(f"{np.mean([r['eval_s'] for r in rs]):.2f}")
        ep = [r["epoch_s"] for r in rs if r["epoch_s"]]
        cells.append(f"{np.mean(ep):.2f}" if ep else "–")
        cells.append(f"{np.mean([r['peak_rss_mb'] for r in rs]):.0f}")
        cells.append("; ".join(json.dumps(r["params"]) for r in rs))
        lines.append("| " + " | ".join(cells) + " |")
    data = rows[0]["data"]
    intro = (
        f"ml-1m, ratings ≥ 3, 10-core: {data['users']:,} users, {data['items']:,} items, {data['nnz']:,} "
        f"interactions; per-user random 8:1:1 (RecBole RO), full ranking, seeds {seeds}; mean ± std over seeds. "
        "fit s = one fit of the chosen configuration; eval s = full ranking of all test users; "
        "peak MB = peak RSS of the process that ran the model (data included)."
    )
    return intro + "\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    ap.add_argument("--models", nargs="+", default=list(GRIDS))  # run all, or --update a few
    ap.add_argument("--quick", action="store_true", help="one configuration, 3 epochs: a smoke test")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--log-epochs", action="store_true", help="log every epoch's training row (losses, validation)")
    ap.add_argument(
        "--update", action="store_true", help="keep the saved rows of other models and seeds (and the notes)"
    )
    args = ap.parse_args()
    rows = []
    saved = args.out / "recbole_ml1m.json"
    if args.update and saved.exists():
        rerun = {(m, s) for m in args.models for s in args.seeds}
        rows = [r for r in json.loads(saved.read_text()) if (r["model"], r["seed"]) not in rerun]
    ctx = get_context("spawn")
    for name in args.models:
        for seed in args.seeds:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                row = pool.submit(run_one, name, seed, args.quick, args.log_epochs).result()
            rows.append(row)
            print(
                f"{name} seed {seed}: test ndcg@10 {row['test']['ndcg@10']:.4f} (valid {row['valid_ndcg@10']:.4f}) "
                f"fit {row['fit_s']:.1f}s eval {row['eval_s']:.2f}s params {row['params']}",
                flush=True,
            )
    table = summarize(rows)
    print(table)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        md = args.out / "recbole_ml1m.md"
        notes = md.read_text().partition("\nNotes:")[1:] if md.exists() else ("", "")
        md.write_text(f"# RecBole ml-1m protocol ({stamp})\n\n{table}\n{''.join(notes)}")
        (args.out / "recbole_ml1m.json").write_text(json.dumps(rows, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
