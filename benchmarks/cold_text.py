"""Cold items from their text: items nobody interacted with in training, ranked for the users who later did.

Protocol (`cold_items`): 20% of the items that have interactions lose all of them to evaluation (half validation,
half test); models train on the other items' interactions; each test user's history is their training (warm)
interactions, and only the cold test items are ranked (candidates). Recall@10 / NDCG@10 of the cold test items, per
model, beside Random (uniform scores) and CategoryPop (a cold item's score is the training popularity of its
category: the category path of Scientific's text, Office's category list). Seeds vary the cold items and the
models. Each (dataset, model, seed) runs in a fresh process with one thread.

TextKNN-max is TextKNN(center=True, aggregate="max+mean"): the catalogue's mean text vector subtracted, and an
item scored by its most similar history item's cosine plus its cosine to the history's mean vector.

TextKNN-ft and UniSRec-ft are the same models over a sentence encoder first fine-tuned (`finetune_encoder`,
settings `FINETUNE`) on pairs of items that follow each other in the training part's histories: only warm items'
interactions, so the cold items' texts and interactions never reach the encoder. The fine-tuned model is cached
(a second model on the same split reuses it); its time and the process's peak memory after it are recorded.

Usage: python benchmarks/cold_text.py [--datasets amazon-scientific-unisrec amazon-office-2014-5core]
       [--models Random CategoryPop TextKNN TextKNN-max UniSRec TextKNN-ft UniSRec-ft] [--seeds 2020 2021 2022]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
OUT_JSON, OUT_MD = RESULTS / "cold_text.json", RESULTS / "cold_text.md"
DATASETS = ("amazon-scientific-unisrec", "amazon-office-2014-5core")
MODELS = ("Random", "CategoryPop", "TextKNN", "TextKNN-max", "UniSRec", "TextKNN-ft", "UniSRec-ft")
METRICS = ("recall@10", "ndcg@10", "recall@20")
# UniSRec: Scientific's setting of benchmarks/sequential.py; the validation part (cold items too) stops training
UNISREC = {"dim": 64, "max_len": 50, "epochs": 60, "patience": 5}
# fine-tuning of the encoder: one pass over a sample of 8,000 co-occurrence pairs (250 batches of 32), the library's
# other defaults (lr 2e-5, scale 20, texts cut at 128 tokens, bfloat16 autocast where the CPU has it)
FINETUNE = {"max_pairs": 8000, "epochs": 1, "batch_size": 32}


def categories(X: Any, dataset: str) -> np.ndarray:
    """One category label per item: Scientific's category path (the text's second-to-last sentence), Office's
    category list as given."""
    f = X.item_features
    if dataset == "amazon-office-2014-5core":
        return f["categories"].astype(str).to_numpy()
    parts = f["text"].astype(str).str.strip().str.rstrip(".").str.rsplit(". ", n=2)
    return parts.map(lambda p: p[-2] if len(p) >= 2 else "").to_numpy()


class CategoryPop:
    """score(u, i) = number of training interactions with items of i's category (the same for every user)."""

    def __init__(self, X: Any, labels: np.ndarray) -> None:
        _, code = np.unique(labels, return_inverse=True)
        counts = np.bincount(code, weights=np.asarray(X.matrix.sum(axis=0)).ravel())
        rng = np.random.default_rng(0)
        self.scores = (counts[code] + 1e-3 * rng.random(len(code))).astype(np.float32)  # random order within ties

    def score(self, history: object, users: np.ndarray) -> np.ndarray:
        return np.tile(self.scores, (len(users), 1))


def run_one(dataset: str, name: str, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from advrec.data.datasets import load_dataset
    from advrec.data.splits import cold_items
    from advrec.evaluation import evaluate
    from advrec.models import TextKNN, UniSRec
    from advrec.testing import RandomScores
    from advrec.text.finetune import MANIFEST, finetune_encoder

    X = load_dataset(dataset)
    split = cold_items(X, 0.2, random_state=seed)
    tuned: dict[str, Any] = {}
    if name.endswith("-ft") and name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if name.endswith("-ft"):
        progress = logging.getLogger("advrec.progress")  # a line per batch with the time left, on stderr
        progress.setLevel(logging.INFO)
        progress.addHandler(logging.StreamHandler())
        t0 = time.perf_counter()
        folder = finetune_encoder(split.train, device="cpu", random_state=seed, progress=True, **FINETUNE)
        info = json.loads((folder / MANIFEST).read_text())
        tuned = {
            "encoder": str(folder), "pairs": info["pairs"], "finetune_s": time.perf_counter() - t0,
            "trained_s": info["train_seconds"], "loss": [info["loss_first_epoch"], info["loss_last_epoch"]],
            "peak_rss_mb_after_finetune": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }  # fmt: skip
        name = name.removesuffix("-ft")
    t0 = time.perf_counter()
    model: Any
    if name == "Random":
        model = RandomScores(X.n_items, seed)
    elif name == "CategoryPop":
        model = CategoryPop(split.train, categories(X, dataset))
    elif name == "TextKNN":
        model = TextKNN(model=tuned.get("encoder"), device="cpu").fit(split.train)
    elif name == "TextKNN-max":
        model = TextKNN(model=tuned.get("encoder"), center=True, aggregate="max+mean", device="cpu").fit(split.train)
    elif name == "UniSRec":
        model = UniSRec(encoder=tuned.get("encoder"), device="cpu", random_state=seed, **UNISREC)
        model.fit(split.train, valid=split.eval_set("valid", cold_only=True))
    else:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    fit_s = time.perf_counter() - t0
    test = evaluate(model, split, ks=(10, 20), cold_only=True).summary
    valid = evaluate(model, split, ks=(10,), on="valid", cold_only=True).summary["recall@10"]
    return {
        "dataset": dataset, "model": f"{name}-ft" if tuned else name, "seed": seed,
        "test": {m: test[m] for m in METRICS},
        "valid_recall@10": valid, "fit_s": fit_s,
        "cold_test_items": len(split.protocol["cold_items"]["test"]),
        "epochs_run": getattr(model, "epochs_run_", None), "best_epoch": getattr(model, "best_epoch_", None),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "finetune": tuned or None,
    }  # fmt: skip


def summarize(rows: list[dict]) -> str:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == dataset]
        rnd = np.mean([r["test"]["recall@10"] for r in rs if r["model"] == "Random"] or [np.nan])
        head = ["model", *METRICS, "recall@10 / Random's", "valid recall@10", "fit s", "peak MB", "seeds"]
        lines += [f"## {dataset}", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for name in dict.fromkeys(r["model"] for r in rs):
            mine = [r for r in rs if r["model"] == name]
            cells = [name]
            for m in METRICS:
                v = np.array([r["test"][m] for r in mine])
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
            cells.append(f"{np.mean([r['test']['recall@10'] for r in mine]) / rnd:.1f}×")
            valid = [r["valid_recall@10"] for r in mine if "valid_recall@10" in r]
            cells.append(f"{np.mean(valid):.4f}" if len(valid) == len(mine) else "—")
            tuning = [r["finetune"]["finetune_s"] for r in mine if r.get("finetune")]
            fit = f"{np.mean([r['fit_s'] for r in mine]):.0f}"
            cells.append(f"{fit} + {np.mean(tuning):.0f} fine-tuning" if tuning else fit)
            cells.append(f"{max(r['peak_rss_mb'] for r in mine):.0f}")
            cells.append(", ".join(str(r["seed"]) for r in mine))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append(f"\nCold test items per seed: {sorted({r['cold_test_items'] for r in rs})}\n")
    return "\n".join(lines)


def main() -> None:
    from advrec.io import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    args = ap.parse_args()
    ctx = get_context("spawn")
    rows: list[dict] = []
    for dataset in args.datasets:
        for name in args.models:
            for seed in args.seeds:
                with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                    row = pool.submit(run_one, dataset, name, seed).result()
                print(f"{dataset} {name} seed {seed}: cold recall@10 {row['test']['recall@10']:.4f}", flush=True)
                rows = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else []
                rows = [r for r in rows if (r["dataset"], r["model"], r["seed"]) != (dataset, name, seed)] + [row]
                RESULTS.mkdir(parents=True, exist_ok=True)
                atomic_write_text(OUT_JSON, json.dumps(rows, indent=2))
                stamp = datetime.now(UTC).strftime("%Y-%m-%d")
                notes = OUT_MD.read_text().partition("\nNotes:")[1:] if OUT_MD.exists() else ("", "")
                text = f"# Cold items from their text ({stamp})\n\n{summarize(rows)}{''.join(notes)}"
                atomic_write_text(OUT_MD, text)
    print(summarize(rows))


if __name__ == "__main__":
    main()
