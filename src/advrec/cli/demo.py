"""`advrec demo`: the main job on ml-100k, with its report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer

from advrec.cli import DataDir, command, console, print_summary

if TYPE_CHECKING:
    from advrec.data import Interactions


DEMO_MODELS = ("Pop", "ItemKNN", "EASE", "BPRMF", "MultVAE", "TextKNN", "TextEASE")  # default parameters


COLD_MODELS = ("GenreAffinity", "TextKNN", "TextEASE")


def _demo_cold_items(X: Interactions, seed: int) -> pd.DataFrame:
    """Cold-only NDCG@10 / Recall@20 of random scores and the text-aware models on a cold_items split."""
    from advrec.data.splits import cold_items
    from advrec.evaluation import evaluate
    from advrec.models import model_class
    from advrec.testing import RandomScores

    split = cold_items(X, 0.2, random_state=seed)
    rows = {"random": evaluate(RandomScores(X.n_items, seed), split, ks=(10, 20), cold_only=True).summary}
    for name in COLD_MODELS:
        model = model_class(name)().fit(split.train)
        rows[name] = evaluate(model, split, ks=(10, 20), cold_only=True).summary
    return pd.DataFrame(rows).T[["ndcg@10", "recall@20"]].astype(float)


@command()
def demo(
    dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
    out: Annotated[Path, typer.Option(help="parent folder of the demo run")] = Path("runs"),
    seed: int = 2020,
    data_dir: DataDir = None,
) -> None:
    """The main job on ml-100k: trains the collaborative and text models, evaluates them on warm users and
    on cold items (items with no interactions), and writes a report with charts."""
    from advrec.evaluation.report import bar_chart, results_frame
    from advrec.experiment import ExperimentConfig, load_data, make_split, run_experiment
    from advrec.io import atomic_write_text
    from advrec.reports import Page

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    root = out / f"demo-{stamp}"
    base = ExperimentConfig(dataset=dataset, data_dir=data_dir, seed=seed, min_rating=3.0)
    X = load_data(base)
    s = make_split(X, base)
    console.print(
        f"{dataset}: {X}\nprotocol: per-user random 8:1:1 split (seed {seed}), full ranking, "
        "training items excluded; model selection on validation NDCG@10"
    )
    results: dict[str, dict[str, float]] = {}
    timing: dict[str, dict[str, float]] = {}
    for name in DEMO_MODELS:
        cfg = base.model_copy(update={"model": name})
        with console.status(f"training {name}"):
            _, outcome = run_experiment(cfg, root / name.lower(), X=X, split=s)
        results[name] = outcome.report.summary
        timing[name] = {"fit_s": outcome.fit_seconds, "eval_s": outcome.eval_seconds}
        console.print(
            f"  {name}: ndcg@10 {outcome.report.summary['ndcg@10']:.4f} "
            f"(fit {outcome.fit_seconds:.1f}s, evaluate {outcome.eval_seconds:.2f}s)"
        )
    print_summary(results, base.ks)
    with console.status("item cold start"):
        cold = _demo_cold_items(X, seed)
    console.print(f"item cold start (20% of items unseen in training), cold-only ranking:\n{cold.round(4)}")
    cols = ["ndcg@10", "recall@10", "precision@10", "hit@10", "mrr@10", "ndcg@20", "recall@20", "coverage@10"]
    df = results_frame(results, cols)
    for name, t in timing.items():
        df.loc[name, "fit_s"] = t["fit_s"]
    page = Page(f"advrec demo on {dataset}", root)
    page.text(f"Data: {X.n_users:,} users, {X.n_items:,} items, {X.nnz:,} interactions (ratings ≥ 3 as implicit).")
    page.text(f"Protocol: per-user random 8:1:1 split (seed {seed}); every item ranked; the user's training and "
              "validation items excluded; torch models stop early on validation NDCG@10.")  # fmt: skip
    page.heading("Full ranking, test")
    page.table(df)
    chart = bar_chart(df, ["ndcg@10", "recall@20"], root / "ndcg_recall.png", title=f"{dataset}: full ranking, test")
    page.figure(chart, "NDCG@10 and Recall@20")
    page.heading("Item cold start")
    page.text(f"20% of the items lose all their interactions (half validation, half test; seed {seed}); each user "
              "who interacted with a test cold item ranks only the test cold items. Item text: title, year, genres, "
              "encoded by all-MiniLM-L6-v2.")  # fmt: skip
    page.table(cold)
    chart = bar_chart(cold, ["ndcg@10", "recall@20"], root / "cold_items.png", title=f"{dataset}: cold items, test")
    page.figure(chart, "Cold items")
    page.text(
        "Each model's run directory (manifest, model, split) is in the folder of its name; `advrec report "
        "RUN_DIR` writes one run's page, `advrec compare RUN_DIR ...` compares runs."
    )
    report = page.write()
    payload = {"results": results, "timing": timing, "cold_items": cold.to_dict(orient="index")}
    atomic_write_text(root / "results.json", json.dumps(payload, indent=2))
    console.print(f"report → {report} (markdown: {root / 'report.md'})")
