"""Item cold start with text features: random, genre affinity, TextKNN and the TextEASE hybrid.

Protocol (`advrec.data.splits.cold_items`): 20% of the interacted items lose all their interactions,
half to validation and half to test; models train on the rest. Each user who interacted with a test cold
item ranks the test cold items (cold-only candidates; their own training items excluded), and also all
items together. Item text: ml-1m title + year + genres; ml-latest-small title + year + genres + tags.
TextEASE's `text_l2` is chosen on validation NDCG@10 (cold-only). Mean ± std over split seeds.
Also measured: encoding throughput of the ml-latest-small item texts, cold and from the cache.

Usage: python benchmarks/cold_start.py [--datasets ml-1m ml-latest-small] [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from advrec.data import load_movielens
from advrec.data.splits import cold_items, holdout_users
from advrec.devices import resolve_device
from advrec.evaluation import evaluate
from advrec.models import EASE, GenreAffinity, Pop, TextEASE, TextKNN
from advrec.testing import RandomScores
from advrec.text import SentenceEncoder, item_texts
from advrec.text.encoder import resolve_precision

RESULTS = Path(__file__).resolve().parent / "results"
TEXT_L2 = (1.0, 10.0, 100.0)


def run_dataset(name: str, seeds: list[int]) -> list[dict]:
    min_rating = 3.0 if name == "ml-1m" else 3.5
    X = load_movielens(name, min_rating=min_rating)
    rows = []
    for seed in seeds:
        split = cold_items(X, 0.2, random_state=seed)
        models: dict[str, object] = {"random": RandomScores(X.n_items, seed)}
        t0 = time.perf_counter()
        models["GenreAffinity"] = GenreAffinity().fit(split.train)
        fit_s = {"GenreAffinity": time.perf_counter() - t0}
        t0 = time.perf_counter()
        models["TextKNN"] = TextKNN().fit(split.train)
        fit_s["TextKNN"] = time.perf_counter() - t0
        best = None
        for text_l2 in TEXT_L2:
            t0 = time.perf_counter()
            m = TextEASE(text_l2=text_l2).fit(split.train)
            secs = time.perf_counter() - t0
            v = evaluate(m, split, ks=(10,), on="valid", cold_only=True).summary["ndcg@10"]
            if best is None or v > best[0]:
                best = (v, m, secs, text_l2)
        assert best is not None
        models["TextEASE"], fit_s["TextEASE"] = best[1], best[2]
        models["EASE (no text)"] = EASE().fit(split.train)
        for label, model in models.items():
            cold = evaluate(model, split, ks=(10, 20), cold_only=True).summary  # type: ignore[arg-type]
            both = evaluate(model, split, ks=(10, 20)).summary  # type: ignore[arg-type]
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "model": label,
                    "cold_ndcg@10": cold["ndcg@10"],
                    "cold_recall@20": cold["recall@20"],
                    "all_ndcg@10": both["ndcg@10"],
                    "all_recall@20": both["recall@20"],
                    "fit_s": fit_s.get(label),
                    "text_l2": best[3] if label == "TextEASE" else None,
                    "users": int(cold["n_users"]),
                }
            )
            print(
                f"{name} seed {seed} {label}: cold ndcg@10 {cold['ndcg@10']:.4f} recall@20 "
                f"{cold['recall@20']:.4f}; all-items ndcg@10 {both['ndcg@10']:.4f}",
                flush=True,
            )
    return rows


def cold_users(name: str, seeds: list[int], sizes=(1, 3, 5), share: float = 0.1) -> list[dict]:
    """NDCG@10 of users known by only 1, 3 or 5 interactions (held-out users, the rest of theirs is the target).

    `share` of the users are held out; the others train the models.
    """
    X = load_movielens(name, min_rating=3.0 if name == "ml-1m" else 3.5)
    n_test = max(1, int(share * X.n_users))
    rows = []
    for seed in seeds:
        for n in sizes:
            split = holdout_users(X, n_valid=0, n_test=n_test, fold_in_items=n, random_state=seed)
            for model in (Pop(), GenreAffinity(), TextKNN(), EASE(), TextEASE(text_l2=10.0)):
                model.fit(split.train)
                ndcg = evaluate(model, split, ks=(10,)).summary["ndcg@10"]
                rows.append(
                    {"dataset": name, "seed": seed, "fold_in": n, "model": type(model).__name__, "ndcg@10": ndcg}
                )
                print(f"{name} seed {seed} cold users with {n}: {type(model).__name__} ndcg@10 {ndcg:.4f}", flush=True)
    return rows


def cold_user_table(rows: list[dict]) -> str:
    sizes = sorted({r["fold_in"] for r in rows})
    lines = [
        "| dataset | model | " + " | ".join(f"{n} known" for n in sizes) + " |",
        "|---|---|" + "---:|" * len(sizes),
    ]
    for ds, model in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        cells = [ds, model]
        for n in sizes:
            v = np.array([r["ndcg@10"] for r in rows if (r["dataset"], r["model"], r["fold_in"]) == (ds, model, n)])
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput(repeats: int = 3) -> dict:
    """Seconds to encode ml-latest-small's item texts: cold cache (`repeats` runs, default precision, and
    one float32 run for reference), then from the cache. Model loading is timed apart from encoding."""
    X = load_movielens("ml-latest-small")
    texts = item_texts(X)
    cold: dict[str, list[float]] = {}
    warm: list[float] = []
    for precision, runs in (("auto", repeats), ("float32", 1)):
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as cache:
                enc = SentenceEncoder(cache_dir=cache, precision=precision)
                enc._load()
                t0 = time.perf_counter()
                enc.encode(texts)
                cold.setdefault(precision, []).append(time.perf_counter() - t0)
                if precision == "auto":  # the cached read of the default encoder
                    t0 = time.perf_counter()
                    SentenceEncoder(cache_dir=cache, precision=precision).encode(texts)
                    warm.append(time.perf_counter() - t0)
    return {
        "items": len(texts),
        "precision": resolve_precision("auto", resolve_device("auto")),
        "cold_s": cold["auto"],
        "float32_s": cold["float32"][0],
        "cached_s": float(np.median(warm)),
    }


def throughput_text(tp: dict) -> str:
    runs = ", ".join(f"{s:.1f}" for s in tp["cold_s"])
    med = float(np.median(tp["cold_s"]))
    return (
        f"## Encoding throughput\n\n{tp['items']:,} ml-latest-small item texts, all-MiniLM-L6-v2 on 2 CPU cores, "
        f"model loading excluded. Cold cache, {tp['precision']} (the default here): {med:.1f} s median of "
        f"{len(tp['cold_s'])} runs ({runs} s; {tp['items'] / med:.0f} items/s). Cold cache, float32: "
        f"{tp['float32_s']:.1f} s. From the cache: {tp['cached_s']:.2f} s."
    )


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset | model | cold NDCG@10 | cold Recall@20 | all-items NDCG@10 | all-items Recall@20 | fit s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(r["dataset"], r["model"]) for r in rows}, key=lambda k: (k[0], list(ORDER).index(k[1])))
    for ds, model in keys:
        rs = [r for r in rows if r["dataset"] == ds and r["model"] == model]
        cells = [ds, model]
        for metric in ("cold_ndcg@10", "cold_recall@20", "all_ndcg@10", "all_recall@20"):
            v = np.array([r[metric] for r in rs])
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        fits = [r["fit_s"] for r in rs if r["fit_s"] is not None]
        cells.append(f"{np.mean(fits):.1f}" if fits else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


ORDER = ("random", "EASE (no text)", "GenreAffinity", "TextKNN", "TextEASE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["ml-1m", "ml-latest-small"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--throughput-only", action="store_true", help="rerun only the encoding timing")
    ap.add_argument("--repeats", type=int, default=3, help="cold-cache encoding runs")
    args = ap.parse_args()
    if args.throughput_only:  # keep the saved accuracy rows
        saved = json.loads((args.out / "cold_start.json").read_text())
        rows, user_rows = saved["rows"], saved["cold_users"]
        args.seeds = sorted({r["seed"] for r in rows})
    else:
        rows = [r for ds in args.datasets for r in run_dataset(ds, args.seeds)]
        user_rows = [r for ds in args.datasets for r in cold_users(ds, args.seeds)]
    tp = throughput(args.repeats)
    text = (
        f"# Item cold start with text ({datetime.now(UTC):%Y-%m-%d})\n\n"
        f"20% of interacted items held out (half validation, half test), seeds {args.seeds}, mean ± std. "
        "cold = ranking only the test cold items; all-items = ranking every item. ml-1m ratings ≥ 3, "
        "ml-latest-small ratings ≥ 3.5, as implicit feedback.\n\n"
        f"{table(rows)}\n\n## Cold users\n\n10% of users held out per seed, known by only n random interactions; "
        "the rest of their interactions is the target; all items ranked; NDCG@10.\n\n"
        f"{cold_user_table(user_rows)}\n\n{throughput_text(tp)}\n"
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold_start.md").write_text(text)
    (args.out / "cold_start.json").write_text(
        json.dumps({"rows": rows, "cold_users": user_rows, "throughput": tp}, indent=2)
    )


if __name__ == "__main__":
    main()
