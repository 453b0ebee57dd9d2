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
import io
import json
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
PER_USER = RESULTS / "recbole_ml1m_per_user"  # the chosen configurations' per-user test NDCG@10

# RecBole's published ml-1m results (full ranking, same protocol), NDCG@10
RECBOLE_NDCG10 = {
    "Pop": 0.1006, "ItemKNN": 0.2389, "BPRMF": 0.2407, "MultVAE": 0.2523, "EASE": 0.2865, "RecVAE": 0.2795,
    "ADMMSLIM": 0.2904,
}  # fmt: skip

# Model selection on validation NDCG@10 over these grids; {} = the defaults only (early stopping on validation).
GRIDS: dict[str, list[dict]] = {
    "Pop": [{}],
    "ItemKNN": [{"k": k, "shrink": s} for k in (50, 100, 200, 300) for s in (0.0, 10.0)],
    "EASE": [{"l2": v} for v in (250.0, 500.0, 1000.0, 2000.0)],
    "BPRMF": [{}],
    "MultVAE": [{}],
    # chosen on validation NDCG@10 (mean over the three seeds) among the probed settings (the notes of the results)
    "RecVAE": [{"lr": 1e-3, "dropout": 0.7}],
    "TextEASE": [{"blend": b} for b in (0.0, 0.1, 0.2, 0.3)],  # the text hybrid, on warm users and items
    "EDLAE": [{"dropout": p, "l2": v} for p in (0.25, 0.5, 0.67) for v in (100.0, 300.0, 1000.0)],
    "DLAE": [{"variant": "dlae", "dropout": p, "l2": v} for p in (0.25, 0.5, 0.67) for v in (100.0, 300.0, 1000.0)],
    # RecBole's published best is l1 5, l2 5000, alpha 1 (rho 4000, 100 steps, non-negative: our defaults)
    "ADMMSLIM": [{"l1": a, "l2": b, "dtype": "float32"} for a in (1.0, 5.0) for b in (2000.0, 5000.0)],
    # EDLAE (dropout 0.5, l2 300) + BPRMF (defaults) + ADMMSLIM (its row's choice on the same seed): z-scores per
    # user, weights on the simplex grid of step 0.1 chosen on validation NDCG@10 (the ensemble's own fit)
    "Ensemble": [{}],
}
# table rows that are a configuration of another model class: row name -> class name
MODEL_CLASS = {"DLAE": "EDLAE"}
METRICS = ("ndcg@10", "recall@10", "mrr@10", "hit@10", "precision@10")


def run_one(model_name: str, seed: int, quick: bool, chosen: dict | None = None, log_epochs: bool = False) -> dict:
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
    if chosen is not None:  # only the configuration an earlier run chose
        grid = [chosen]
    best = None
    for params in grid:
        if model_name == "Ensemble":
            model, params = ensemble_model(seed)
        else:
            model = build_model(MODEL_CLASS.get(model_name, model_name), dict(params))
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        if quick and "epochs" in model.get_params():
            model.set_params(epochs=3)
        t0 = time.perf_counter()
        model.fit(split.train, valid=split)
        fit_s = time.perf_counter() - t0
        valid = evaluate(model, split, ks=(10,), on="valid").summary["ndcg@10"]
        if model_name == "Ensemble":
            params = {**params, "weights": [round(float(w), 2) for w in model.weights_]}
        if best is None or valid > best["valid_ndcg@10"]:
            t0 = time.perf_counter()
            test = evaluate(model, split, ks=(10,))
            eval_s = time.perf_counter() - t0
            if not quick:  # for the paired tests between rows (`paired_tests`)
                save_per_user(model_name, seed, test.per_user["ndcg@10"])
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


def save_per_user(model_name: str, seed: int, values: Any) -> None:
    """The chosen configuration's test NDCG@10 of every test user (user index → value), beside the results."""
    from advrec.io import atomic_write

    buf = io.BytesIO()
    np.savez(buf, users=values.index.to_numpy(), ndcg=values.to_numpy(dtype=np.float64))
    atomic_write(PER_USER / f"{model_name}-{seed}.npz", lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def paired_tests(rows: list[dict]) -> str:
    """The best row (mean test NDCG@10) against the second best, per seed: paired t-test and Wilcoxon signed-rank
    test on the per-user test NDCG@10 of the same users (`Report.compare`'s tests)."""
    from advrec.evaluation.metrics import paired_test

    means = {m: np.mean([r["test"]["ndcg@10"] for r in rows if r["model"] == m]) for m in {r["model"] for r in rows}}
    first, second = sorted(means, key=means.__getitem__, reverse=True)[:2]
    lines = [
        f"Paired tests, test NDCG@10 per user, {first} against {second} (the two best rows):",
        "",
        "| seed | users | mean difference | t | p (t-test) | p (Wilcoxon) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for seed in sorted({r["seed"] for r in rows}):
        files = [PER_USER / f"{m}-{seed}.npz" for m in (first, second)]
        if not all(f.exists() for f in files):
            lines.append(f"| {seed} | per-user values missing (rerun {first} and {second}) | | | | |")
            continue
        a, b = (np.load(f) for f in files)
        if not np.array_equal(a["users"], b["users"]):
            raise SystemExit(f"seed {seed}: {first} and {second} were evaluated on different users")
        t, w = paired_test(a["ndcg"], b["ndcg"], "t"), paired_test(a["ndcg"], b["ndcg"], "wilcoxon")
        lines.append(
            f"| {seed} | {t['n']:,} | {t['mean_diff']:+.4f} | {t['statistic']:.2f} | {t['p_value']:.2g} | "
            f"{w['p_value']:.2g} |"
        )
    return "\n".join(lines)


def ensemble_model(seed: int) -> tuple[Any, dict]:
    """The ensemble row's model, with the ADMMSLIM configuration its own row chose on this seed (saved results)."""
    from advrec.models import ADMMSLIM, BPRMF, EDLAE, Ensemble, RecVAE

    saved = json.loads((RESULTS / "recbole_ml1m.json").read_text())
    chosen = [r["params"] for r in saved if r["model"] == "ADMMSLIM" and r["seed"] == seed]
    if not chosen:
        raise SystemExit(f"run ADMMSLIM on seed {seed} first: the ensemble takes the configuration it chose")
    recvae = [r["params"] for r in saved if r["model"] == "RecVAE" and r["seed"] == seed]
    if not recvae:
        raise SystemExit(f"run RecVAE on seed {seed} first: the ensemble takes the configuration it chose")
    members = [
        EDLAE(dropout=0.5, l2=300.0),
        BPRMF(random_state=seed),
        ADMMSLIM(**chosen[0]),
        RecVAE(random_state=seed, **recvae[0]),
    ]
    return Ensemble(members, grid_step=0.1), {"admmslim": chosen[0], "recvae": recvae[0]}


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
    return intro + "\n\n" + "\n".join(lines) + "\n\n" + paired_tests(rows)


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
    ap.add_argument(
        "--chosen", action="store_true", help="rerun only the configuration each seed's saved row chose (with --update)"
    )
    args = ap.parse_args()
    rows = []
    saved = args.out / "recbole_ml1m.json"
    previous = json.loads(saved.read_text()) if saved.exists() else []
    if args.update:
        rerun = {(m, s) for m in args.models for s in args.seeds}
        rows = [r for r in previous if (r["model"], r["seed"]) not in rerun]
    ctx = get_context("spawn")
    for name in args.models:
        for seed in args.seeds:
            before = next((r for r in previous if r["model"] == name and r["seed"] == seed), None)
            if args.chosen and before is None:
                raise SystemExit(f"--chosen: no saved {name} row for seed {seed}")
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                chosen = before["params"] if args.chosen else None
                row = pool.submit(run_one, name, seed, args.quick, chosen, args.log_epochs).result()
            if args.chosen:
                row["grid_size"] = before["grid_size"]
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
