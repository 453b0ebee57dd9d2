"""Sequential recommendation: leave-last-out, full ranking, beside the published numbers of the same protocol.

Protocol: per user, interactions in time order; the last one is test, the one before it
validation; at test time the history holds everything before the test item (the validation item included); every
item is ranked, the user's earlier items excluded; Recall@10 / NDCG@10 (and @20). Model selection and early stopping
on validation NDCG@10. Each (dataset, model, seed) runs in a fresh process with one thread, so its peak memory and
time are its own; a row is saved as soon as it is done (a long run keeps what it finished).

Datasets: ml-1m as in BERT4Rec and Klenitskiy & Vasilev (2023): all ratings, items with ≥ 5 ratings (6,040 users,
3,416 items, 999,611 interactions), a user's ratings of the same second in ratings.dat's order as in their ml-1m
file (`file_order_ties`); Amazon "Scientific" as UniSRec published it (8,442 users, 4,385 items, its own
leave-one-out split; a repeated item keeps its latest place); the models' seed varying, the splits fixed.

Usage: python benchmarks/sequential.py [--datasets ml-1m amazon-scientific-unisrec] [--models Pop SASRec ...]
       [--seeds 2020 2021 2022]
       [--quick] [--log-epochs]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
OUT_JSON, OUT_MD = RESULTS / "sequential.json", RESULTS / "sequential.md"
PER_USER = RESULTS / "sequential_per_user"  # the chosen configurations' per-user test NDCG@10
# paired tests on the same test users, per seed: (dataset, model, against)
PAIRS = (
    ("amazon-scientific-unisrec", "UniSRec", "SASRec"),
    ("amazon-scientific-unisrec", "UniSRec-ID", "SASRec"),
    ("ml-1m", "SASRec", "BERT4Rec"),
)

# published full-ranking numbers of the same protocol (leave-one-out, all items ranked): (Recall@10, NDCG@10, source)
PUBLISHED: dict[str, dict[str, tuple[float, float, str]]] = {
    "ml-1m": {
        # Klenitskiy & Vasilev, RecSys 2023, "Turning Dross Into Gold Loss", main results (authors' repository
        # antklen/sasrec-bert4rec-recsys23); seen items excluded
        "SASRec": (0.3152, 0.1821, "SASRec+ (cross-entropy), Klenitskiy & Vasilev 2023"),
        "SASRec-bce": (0.2500, 0.1341, "SASRec (BCE, 1 negative), Klenitskiy & Vasilev 2023"),
        "BERT4Rec": (0.2843, 0.1537, "BERT4Rec, Klenitskiy & Vasilev 2023"),
    },
    "amazon-scientific-unisrec": {
        # Hou et al., KDD 2022 (UniSRec), main results table; the same rows in VQ-Rec (WWW 2023)
        "SASRec": (0.1080, 0.0553, "SASRec, UniSRec paper"),
        "UniSRec": (
            0.1188,
            0.0641,
            "UniSRec_t (inductive: text only, pretrained on five other domains), UniSRec paper",
        ),
        "UniSRec-ID": (0.1235, 0.0634, "UniSRec_t+ID (transductive, fine-tuned with IDs), UniSRec paper"),
    },
}

# per dataset: model row → configurations chosen among on validation NDCG@10 (the class defaults fill the rest)
SCIENTIFIC_SEQ = {"max_len": 50, "dropout": 0.5, "heads": 2}  # UniSRec's setting for its SASRec baseline
GRIDS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "ml-1m": {
        "Pop": [{}],
        "EASE": [{"l2": v} for v in (100.0, 300.0, 1000.0, 3000.0)],
        "SASRec": [{}],  # Klenitskiy & Vasilev's setting (the class defaults): early stopping on validation
        "SASRec-bce": [{"loss": "bce"}],
        "BERT4Rec": [{"patience": 20}],  # Klenitskiy & Vasilev's BERT4Rec: at most 200 epochs, patience 20
    },
    "amazon-scientific-unisrec": {
        "Pop": [{}],
        "EASE": [{"l2": v} for v in (10.0, 30.0, 100.0, 300.0)],
        "SASRec": [{**SCIENTIFIC_SEQ, "lr": 3e-3}],
        # lr 3e-3 over 1e-3 on seed 2020 validation at equal epochs (0.0772 against 0.0657 at epoch 19)
        "UniSRec": [{"lr": 3e-3}],
        "UniSRec-ID": [{"ids": True, "lr": 3e-3}],
    },
}
MODEL_CLASS = {"SASRec-bce": "SASRec", "UniSRec-ID": "UniSRec"}
METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20")


def file_order_ties(X: Any) -> Any:
    """ml-1m with a user's equal timestamps in the order of ratings.dat's rows, as in the ml-1m file of BERT4Rec
    and SASRec (a stable sort by time) that the published numbers use: timestamps become t · 1000 + rank among
    the user's ratings of that second (42 % of users share their latest second with another rating)."""
    import pandas as pd

    from advrec.data.registry import dataset_dir

    path = dataset_dir("ml-1m", download=False) / "ratings.dat"
    rows_in_file = pd.read_csv(path, sep="::", engine="python", names=["user", "item", "rating", "time"])
    rows_in_file["row"] = np.arange(len(rows_in_file))
    m = X.matrix
    users = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    entries = pd.DataFrame({"user": X.users.raw(users), "item": X.items.raw(m.indices)})
    row = entries.merge(rows_in_file[["user", "item", "row"]], on=["user", "item"], how="left")["row"].to_numpy()
    if np.isnan(row).any():
        raise SystemExit(f"{path}: {int(np.isnan(row).sum())} interactions are not in the file")
    ts = X.timestamps
    order = np.lexsort((row, ts, users))
    first = np.r_[True, (users[order][1:] != users[order][:-1]) | (ts[order][1:] != ts[order][:-1])]
    starts = np.flatnonzero(first)
    rank = np.empty(len(ts), dtype=np.int64)
    rank[order] = np.arange(len(ts)) - starts[np.cumsum(first) - 1]
    return X.with_matrix(X.matrix, ts * 1000 + rank)


def load(dataset: str, seed: int) -> Any:
    """The split: ml-1m's leave-last-out (ties in time in the ratings file's order), or Scientific's published
    one."""
    from advrec.data import load_movielens
    from advrec.data.datasets import official_split
    from advrec.data.splits import leave_last_out

    if dataset == "ml-1m":
        return leave_last_out(file_order_ties(load_movielens("ml-1m", core=5)), random_state=seed)
    if dataset == "amazon-scientific-unisrec":
        return official_split(dataset)
    raise SystemExit(f"unknown dataset {dataset!r}; known: {', '.join(GRIDS)}")


def run_one(dataset: str, name: str, seed: int, quick: bool, log_epochs: bool, checkpoints: Path | None = None) -> dict:
    """Selects (on validation NDCG@10), fits and evaluates one model on one seed, in its own process."""
    import logging

    import torch

    torch.set_num_threads(1)
    if log_epochs:
        logging.basicConfig(format="%(asctime)s %(message)s")
        logging.getLogger("advrec.models.torch_base").setLevel(logging.DEBUG)
    from advrec.evaluation import evaluate
    from advrec.experiment import build_model

    split = load(dataset, seed)
    best: dict | None = None
    grid = GRIDS[dataset][name][:1] if quick else GRIDS[dataset][name]
    for params in grid:
        model = build_model(MODEL_CLASS.get(name, name), dict(params))
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        if "device" in model.get_params():
            model.set_params(device="cpu")
        if quick and "epochs" in model.get_params():
            model.set_params(epochs=2)
        t0 = time.perf_counter()
        if checkpoints is not None and len(grid) == 1:  # a long fit resumes from its last epoch after an interrupt
            model.fit(split.train, valid=split, checkpoint=checkpoints / f"{dataset}-{name}-{seed}")
        else:
            model.fit(split.train, valid=split)
        fit_s = time.perf_counter() - t0
        valid = evaluate(model, split, ks=(10,), on="valid").summary["ndcg@10"]
        if best is None or valid > best["valid_ndcg@10"]:
            t0 = time.perf_counter()
            test = evaluate(model, split, ks=(10, 20))
            if not quick:
                save_per_user(f"{dataset}-{name}-{seed}", test.per_user["ndcg@10"])
            best = {
                "dataset": dataset,
                "model": name,
                "seed": seed,
                "params": params,
                "valid_ndcg@10": valid,
                "test": {m: test.summary[m] for m in METRICS},
                "fit_s": fit_s,
                "eval_s": time.perf_counter() - t0,
                "epochs_run": getattr(model, "epochs_run_", None),
                "best_epoch": getattr(model, "best_epoch_", None),
                "epoch_s": getattr(model, "epoch_seconds_", None),
                # training seconds of every epoch, those of earlier processes of a resumed fit included
                "train_s": sum(r["seconds"] for r in getattr(model, "training_log_", [])) or None,
            }
    assert best is not None
    best["grid_size"] = len(grid)
    best["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best["data"] = {"users": split.n_users, "items": split.n_items, "train_nnz": split.train.nnz}
    return best


def save_per_user(stem: str, values: Any) -> None:
    """Per test user (index → NDCG@10) of a chosen configuration, for the paired tests."""
    import io

    from advrec.io import atomic_write

    buf = io.BytesIO()
    np.savez(buf, users=values.index.to_numpy(), ndcg=values.to_numpy(dtype=np.float64))
    PER_USER.mkdir(parents=True, exist_ok=True)
    atomic_write(PER_USER / f"{stem}.npz", lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def paired_tests(rows: list[dict]) -> str:
    """Per seed, paired t-test and Wilcoxon signed-rank test of per-user test NDCG@10 (`Report.compare`'s tests)."""
    from advrec.evaluation.metrics import paired_test

    lines = []
    for dataset, a, b in PAIRS:
        seeds = sorted({r["seed"] for r in rows if r["dataset"] == dataset and r["model"] in (a, b)})
        files = {s: [PER_USER / f"{dataset}-{m}-{s}.npz" for m in (a, b)] for s in seeds}
        seeds = [s for s in seeds if all(f.exists() for f in files[s])]
        if not seeds:
            continue
        head = "| seed | users | mean difference | t | p (t-test) | p (Wilcoxon) |\n|---|---:|---:|---:|---:|---:|"
        lines += [f"Paired tests on {dataset}, test NDCG@10 per user, {a} against {b}:", "", head]
        for seed in seeds:
            x, y = (np.load(f) for f in files[seed])
            if not np.array_equal(x["users"], y["users"]):
                raise SystemExit(f"{dataset} seed {seed}: {a} and {b} were evaluated on different users")
            t, w = paired_test(x["ndcg"], y["ndcg"], "t"), paired_test(x["ndcg"], y["ndcg"], "wilcoxon")
            lines.append(f"| {seed} | {t['n']:,} | {t['mean_diff']:+.4f} | {t['statistic']:.2f} | {t['p_value']:.2g} | "
                         f"{w['p_value']:.2g} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def summarize(rows: list[dict]) -> str:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        head = ["model", *METRICS, "published R@10 / N@10", "fit s", "epoch s", "peak MB", "seeds", "chosen"]
        lines += [f"## {dataset}", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
        for name in dict.fromkeys(r["model"] for r in rows if r["dataset"] == dataset):
            rs = [r for r in rows if r["dataset"] == dataset and r["model"] == name]
            cells = [name]
            for m in METRICS:
                v = np.array([r["test"][m] for r in rs])
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}" if len(v) > 1 else f"{v[0]:.4f}")
            pub = PUBLISHED.get(dataset, {}).get(name)
            cells.append(f"{pub[0]:.4f} / {pub[1]:.4f}" if pub else "")
            cells.append(f"{np.mean([max(r['fit_s'], r.get('train_s') or 0) for r in rs]):.0f}")
            eps = [r["epoch_s"] for r in rs if r.get("epoch_s")]
            cells.append(f"{np.mean(eps):.1f}" if eps else "")
            cells.append(f"{max(r['peak_rss_mb'] for r in rs):.0f}")
            cells.append(", ".join(str(r["seed"]) for r in rs))
            cells.append("; ".join(json.dumps(r["params"]) for r in rs))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for name, (_, _, source) in PUBLISHED.get(dataset, {}).items():
            lines.append(f"- published {name}: {source}")
        lines.append("")
    lines.append(
        "fit s: the fit's wall time; for a fit resumed from a checkpoint, the training seconds of all its epochs"
    )
    lines.append("(validation excluded) when they exceed the last process's wall time.\n")
    return "\n".join(lines) + "\n" + paired_tests(rows)


def save(rows: list[dict]) -> None:
    from advrec.io import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT_JSON, json.dumps(rows, indent=2))
    notes = OUT_MD.read_text().partition("\nNotes:")[1:] if OUT_MD.exists() else ("", "")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    atomic_write_text(
        OUT_MD, f"# Sequential recommendation, leave-last-out ({stamp})\n\n{summarize(rows)}{''.join(notes)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(GRIDS))
    ap.add_argument("--models", nargs="+", help="default: every model of the dataset's grid")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    ap.add_argument("--quick", action="store_true", help="one configuration, 2 epochs, nothing saved: a smoke test")
    ap.add_argument("--log-epochs", action="store_true", help="log every epoch's training row (losses, validation)")
    ap.add_argument("--checkpoints", type=Path, help="a folder for per-epoch checkpoints: a rerun resumes a fit there")
    args = ap.parse_args()
    rows = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else []
    ctx = get_context("spawn")
    for dataset in args.datasets:
        for name in args.models or list(GRIDS[dataset]):
            if name not in GRIDS[dataset]:
                raise SystemExit(f"{name} has no configuration for {dataset}; known: {', '.join(GRIDS[dataset])}")
            for seed in args.seeds:
                with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                    job = pool.submit(run_one, dataset, name, seed, args.quick, args.log_epochs, args.checkpoints)
                    row = job.result()
                print(
                    f"{dataset} {name} seed {seed}: test ndcg@10 {row['test']['ndcg@10']:.4f} recall@10 "
                    f"{row['test']['recall@10']:.4f} (valid {row['valid_ndcg@10']:.4f}) fit {row['fit_s']:.0f}s",
                    flush=True,
                )
                if args.quick:
                    continue
                # re-read: another run of this script may have saved rows meanwhile (one per (dataset, model, seed))
                rows = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else []
                rows = [r for r in rows if (r["dataset"], r["model"], r["seed"]) != (dataset, name, seed)] + [row]
                save(rows)
    print(summarize(rows))


if __name__ == "__main__":
    main()
