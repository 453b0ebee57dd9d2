"""The `advrec` command. One module per group of commands: `data` (datasets, split, encode-items,
finetune-encoder), `training` (train, tune), `federation` (federate), `results` (evaluate, report, compare,
recommend), `service` (serve), `privacy` (synthesize, audit, forget), `robustness` (attack, robustness), `demo`.

A command is registered with `@command(...)`, which also turns advrec's errors (`AdvrecError`) into one line on
the console and exit status 2: the one error handler of every command. Heavy modules are imported inside the
commands, after their arguments are checked, so that a wrong argument is answered at once.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from advrec.errors import AdvrecError, ConfigError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="advrec",
    help="Recommender systems that are accurate, robust and private.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


console = Console(width=None if sys.stdout.isatty() else 120)


# every protocol of advrec.experiment.Protocol (a test checks), without importing it before the arguments are read
PROTOCOL_HELP = ("ratio | leave_one_out | leave_last_out | temporal | holdout_users | cold_items | official | "
                 "official_full (official: the dataset's published split)")  # fmt: skip


DataDir = Annotated[
    str | None, typer.Option("--data-dir", help="folder of datasets (else $ADVREC_DATA_DIR, else cache)")
]


def number_list(text: str, option: str, kind: type[int] | type[float], what: str) -> list[Any]:
    """Comma-separated positive numbers of `kind` from an option; `ConfigError` naming the option otherwise."""
    try:
        values = [kind(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or any(not v > 0 for v in values):
        raise ConfigError(f"{option} takes comma-separated {what}, not {text!r}")
    return values


def fail(err: Exception, where: str = "") -> NoReturn:
    """One line on the console (the message as it is: "[data]" or a list is not read as markup), exit status 2."""
    console.print(f"[red]error{escape(where)}:[/red] {escape(str(err))}", soft_wrap=True)  # one line, unbroken
    raise typer.Exit(2)


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress (epochs, evaluation chunks)")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    _show_progress(ctx, not quiet)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record comes (a test runner may swap it between commands)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _show_progress(ctx: typer.Context, on: bool) -> None:
    """Progress lines (or bars on a terminal) on stderr for this command; put back as they were after it."""
    from advrec.progress import enable_progress
    from advrec.progress import log as progress_log

    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    before = (progress_log.level, progress_log.propagate)
    enable_progress(on)
    progress_log.addHandler(handler)
    progress_log.setLevel(logging.INFO)
    progress_log.propagate = False  # not twice through the root logger's handler

    def restore() -> None:
        enable_progress(False)
        progress_log.removeHandler(handler)
        progress_log.setLevel(before[0])
        progress_log.propagate = before[1]

    ctx.call_on_close(restore)


def print_summary(results: dict[str, dict[str, float]], ks: list[int]) -> None:
    k0 = ks[0]
    cols = [f"ndcg@{k0}", f"recall@{k0}", f"hit@{k0}", f"mrr@{k0}"] + [
        f"{m}@{k}" for k in ks[1:] for m in ("ndcg", "recall")
    ]
    cols.append(f"coverage@{k0}")
    table = Table("model", *cols)
    for name, summary in results.items():
        table.add_row(name, *(f"{summary.get(c, float('nan')):.4f}" for c in cols))
    console.print(table)


def experiment_config(
    model: str,
    dataset: str | None,
    data_dir: str | None,
    protocol: str | None,
    seed: int | None,
    min_rating: float | None,
    core: int | None,
    sets: list[str] | None,
    config: Path | None,
    epsilon: float | None = None,
    dp: list[str] | None = None,
):
    from advrec.experiment import config_from_dict, load_config, parse_assignments

    base = load_config(config, model=model).model_dump() if config else {}
    base.update(
        {
            k: v
            for k, v in dict(
                dataset=dataset,
                data_dir=data_dir,
                protocol=protocol,
                seed=seed,
                min_rating=min_rating,
                core=core,
                model=model,
            ).items()
            if v is not None
        }
    )
    base["params"] = {**base.get("params", {}), **parse_assignments(sets or [], model=model)}
    base["privacy"] = {**base.get("privacy", {}), **parse_assignments(dp or [])}
    if epsilon is not None:
        base["privacy"]["epsilon"] = epsilon
    return config_from_dict(base, source=str(config) if config else "command line")


def command(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """`app.command(...)` whose command answers an `AdvrecError` with `fail` (one line, exit status 2)."""

    def register(fn: F) -> F:
        @functools.wraps(fn)
        def run(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except AdvrecError as err:
                fail(err)

        app.command(*args, **kwargs)(run)
        return fn

    return register


# the commands register themselves on import
for _module in ("data", "training", "federation", "results", "service", "privacy", "robustness", "demo"):
    importlib.import_module(f"advrec.cli.{_module}")
