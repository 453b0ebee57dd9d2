"""A run's results: `evaluate`, `report`, `compare`, `recommend`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from advrec.cli import command, console, number_list, print_summary
from advrec.errors import ConfigError


@command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    ks: Annotated[str, typer.Option(help="comma-separated cut-offs")] = "10,20",
    on: Annotated[str, typer.Option(help="test or valid")] = "test",
) -> None:
    """Re-evaluates the model of a run directory on its split."""
    cut = number_list(ks, "--ks", int, "positive integers such as 10,20")
    if on not in ("test", "valid"):
        raise ConfigError(f"--on takes test or valid (the split's parts a model is evaluated on), not {on!r}")
    from advrec.evaluation import evaluate
    from advrec.runs import load_run

    run = load_run(run_dir)
    report = evaluate(run.model, run.split, ks=cut, on=on)
    print_summary({type(run.model).__name__: report.summary}, cut)


@command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories")],
    out: Annotated[Path | None, typer.Option(help="folder of the report (one run; default RUN_DIR/report)")] = None,
) -> None:
    """One HTML page (and markdown) per run: protocol, metrics with 95% intervals, training curves, metrics by
    user activity, and the privacy budget, federation and robustness curves where the run has them."""
    if out is not None and len(run_dirs) > 1:
        raise ConfigError("--out names the folder of one run's report; give one run, or none (RUN_DIR/report)")
    from advrec.reports import run_report

    for run_dir in run_dirs:
        console.print(f"report → {run_report(run_dir, out)}")


@command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="two or more run directories (the first is the reference)")],
    out: Annotated[Path, typer.Option(help="folder of the comparison")] = Path("comparison"),
    metric: Annotated[str, typer.Option(help="the metric tested and drawn")] = "ndcg@10",
) -> None:
    """One table of the runs' metrics, paired tests against the first run on their shared test users, one chart."""
    from advrec.reports import compare_runs

    console.print(f"comparison → {compare_runs(run_dirs, out, metric)}")


@command()
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    user: Annotated[str, typer.Option(help="raw user id")],
    k: Annotated[int, typer.Option("-k", help="number of items")] = 10,
    include_seen: bool = False,
    explain: Annotated[bool, typer.Option("--explain", help="show the history items behind each pick")] = False,
) -> None:
    """Top-k items (raw ids and titles) for one user of a run's data."""
    from advrec.runs import load_run

    run = load_run(run_dir)
    u = run.users.index(user)
    items, scores = run.model.recommend(run.scoring_history(), np.array([u]), k=k, exclude_seen=not include_seen)

    def name(i: int) -> str:
        return str(run.titles[i]) if run.titles is not None else str(run.items.raw(i))

    table = Table("rank", "item", "title", "score", *(["because you liked"] if explain else []))
    for rank, (i, s) in enumerate(zip(items[0], scores[0], strict=True), 1):
        if i < 0:
            break
        row = [str(rank), str(run.items.raw(i)), name(i) if run.titles is not None else "", f"{s:.4f}"]
        if explain:
            why = run.model.explain(run.scoring_history(), u, int(i), n=3)
            row.append("; ".join(name(j) for j, _ in why))
        table.add_row(*row)
    console.print(table)
