"""`advrec federate`: federated training on Flower's simulation engine, written as a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from advrec.cli import DataDir, command, console, print_summary
from advrec.errors import ConfigError


@command()
def federate(
    model: Annotated[str, typer.Argument(help="FCF (federated iALS; IALS is taken as the same) or MultVAE")],
    dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
    clients: Annotated[int, typer.Option(help="simulated clients; each holds a seeded share of the users")] = 10,
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 30,
    epsilon: Annotated[
        float | None, typer.Option(help="user-level (ε, δ)-DP for the whole run (needs --set clip=C)")
    ] = None,
    secagg: Annotated[
        bool, typer.Option(help="secure aggregation (Flower's SecAgg+): the server sees only sums")
    ] = False,
    defence: Annotated[
        str | None,
        typer.Option(help="robust aggregation: krum, multikrum, bulyan, median, trimmed-mean, outlier-filter"),
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="fedavg, fedadam or fedyogi (default: fedadam for FCF, fedavg for MultVAE)")
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="federated setting key=value (advrec.federated.app.DEFAULTS)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the split, the factors and the noise")] = 2020,
    min_rating: Annotated[float, typer.Option(help="ratings below it are dropped")] = 4.0,
    out: Annotated[Path | None, typer.Option(help="run directory (default runs/<model>-<time>)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Trains federated iALS (or MultVAE) on Flower's simulation engine and writes a run directory that `advrec
    serve`, `evaluate` and `recommend` take; its manifest records clients, rounds, ε and the bytes communicated."""
    from advrec.federated.run import FEDERATED_MODELS

    if model.upper() not in FEDERATED_MODELS:
        raise ConfigError(f"federated training exists for FCF / IALS (iALS) and MultVAE, not {model!r}")
    kind = FEDERATED_MODELS[model.upper()]
    strategy = strategy or ("fedavg" if kind == "multvae" else "fedadam")
    config: dict[str, Any] = {"model": kind, "dataset": dataset, "rounds": rounds, "strategy": strategy,
                              "min-rating": min_rating,
                              "seed": seed, "split-seed": seed, "data-dir": data_dir or "",
                              "epsilon": epsilon or 0.0, "defence": defence or "", "secagg": secagg}  # fmt: skip
    config.update(_federated_sets(sets or []))
    from advrec.federated.run import federate as run_federation
    from advrec.runs import new_run_dir

    path, metrics = run_federation(config, clients, out or new_run_dir("runs", kind))
    print_summary({model: metrics}, [10, 20])
    console.print(f"→ {path}")


def _federated_sets(sets: list[str]) -> dict[str, Any]:
    """`key=value` pairs typed as the federated setting of that name is."""
    from advrec.federated.app import DEFAULTS

    out: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            raise ConfigError(f"--set {item!r}: expected key=value with key among {', '.join(DEFAULTS)}")
        kind = type(DEFAULTS[key])
        try:
            out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError:
            raise ConfigError(f"--set {item!r}: {key} takes a {kind.__name__}") from None
    return out
