"""Robustness: `attack` (data poisoning) and `robustness` (attacks on embeddings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from advrec.cli import command, console, number_list


@command()
def attack(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    kind: Annotated[str, typer.Option(help="random | average | bandwagon | popular | segment | gan")] = "average",
    size: Annotated[float, typer.Option(help="fake users as a share of the genuine users")] = 0.03,
    targets: Annotated[str | None, typer.Option(help="raw item ids, comma-separated (default: 5 tail items)")] = None,
    filler: Annotated[float | None, typer.Option(help="filler items: a count, or a share of the items if < 1")] = None,
    intent: Annotated[str, typer.Option(help="push or nuke")] = "push",
    defend: Annotated[bool, typer.Option(help="also detect fake profiles and retrain without them")] = False,
    detector: Annotated[
        str, typer.Option(help="classic (classic attack kinds) or generator (also its own generator's profiles)")
    ] = "classic",
    seed: int = 0,
) -> None:
    """Poisons a run's training data with fake profiles, retrains, and reports the target hit ratios."""
    from advrec.robustness.report import attack_table, run_attack

    raw = [t.strip() for t in targets.split(",") if t.strip()] if targets else None
    result = run_attack(run_dir, kind, size, raw, filler, intent, defend, seed, detector)
    targets_text = ", ".join(map(str, result["target_ids"]))
    console.print(f"{kind} attack, {result['fake_users']} fake users, targets {targets_text}", markup=False)
    table = Table("model", "HR@10", "HR@50", "NDCG@10")
    for name, row in attack_table(result).iterrows():
        table.add_row(str(name), *(f"{v:.4f}" for v in row.tolist()))
    console.print(table)
    if "detection" in result:
        d = result["detection"]
        console.print(f"detector: precision {d['precision']:.3f}, recall {d['recall']:.3f}, F1 {d['f1']:.3f}")
    console.print(f"report → {result['path']}")


@command()
def robustness(
    run_dir: Annotated[Path, typer.Argument(help="a run directory of an embedding model (e.g. BPRMF)")],
    eps: Annotated[str, typer.Option(help="comma-separated perturbation norms")] = "0.1,0.25,0.5,1.0",
    steps: Annotated[int, typer.Option(help="PGD steps")] = 10,
    seed: int = 0,
) -> None:
    """NDCG@10 of a run's embedding model under FGSM and PGD attacks on its embeddings; table and PNG curve."""
    norms = number_list(eps, "--eps", float, "positive numbers such as 0.1,0.5")
    from advrec.robustness.report import run_robustness

    df = run_robustness(run_dir, norms, steps, seed)
    table = Table("attack", "eps", "NDCG@10", "Recall@10", "share of clean")
    for _, r in df.iterrows():
        table.add_row(r["method"], f"{r['eps']:g}", f"{r['ndcg@10']:.4f}", f"{r['recall@10']:.4f}", f"{r['share']:.3f}")
    console.print(table)
    console.print(f"report → {df['path'].iloc[0]}")
