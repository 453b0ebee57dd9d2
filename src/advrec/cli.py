"""The `advrec` command: datasets, split, train, evaluate, recommend, demo."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from advrec.errors import AdvrecError, ConfigError

if TYPE_CHECKING:
    from advrec.data import Interactions

app = typer.Typer(
    name="advrec",
    help="Recommender systems that are accurate, robust and private.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 120)

DEMO_MODELS = ("Pop", "ItemKNN", "EASE", "BPRMF", "MultVAE", "TextKNN", "TextEASE")  # default parameters
COLD_MODELS = ("GenreAffinity", "TextKNN", "TextEASE")
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


def _fail(err: Exception, where: str = "") -> NoReturn:
    console.print(f"[red]error{where}:[/red] {err}")
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


@app.command()
def datasets(
    data_dir: DataDir = None, counts: bool = typer.Option(True, help="load present datasets to count")
) -> None:
    """Known datasets: where their files are, whether they are present, and their counts."""
    from advrec.data.datasets import LOADERS, OFFICIAL_SPLITS, load_dataset
    from advrec.data.registry import data_home_source, list_datasets

    try:
        home, source = data_home_source(data_dir)
    except AdvrecError as err:
        _fail(err)
    console.print(f"data home: {home} (from {source})")
    table = Table("dataset", "present", "users", "items", "interactions", "folder")
    for st in list_datasets(data_dir):
        n = ("", "", "")
        if st.present and counts and st.name in LOADERS:
            try:
                X = load_dataset(st.name, data_dir=data_dir)
            except AdvrecError as err:
                _fail(err)
            parts = X.meta.get("official_parts") if st.name in OFFICIAL_SPLITS else None
            split = f" ({' + '.join(f'{v:,} {k}' for k, v in parts.items())})" if parts else ""
            n = (f"{X.n_users:,}", f"{X.n_items:,}", f"{X.nnz:,}{split}")
        present = "yes" if st.present else f"no (missing {', '.join(st.missing)})"
        table.add_row(st.name, present, *n, str(st.folder))
    console.print(table)


def _config(
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


@app.command("encode-items")
def encode_items(
    dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
    model: Annotated[str | None, typer.Option(help="sentence-transformers model (default all-MiniLM-L6-v2)")] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="comma-separated item columns (default: the item table's text column, else title/year/…)"),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Encodes a dataset's item texts into the embedding cache (a second run reads them back)."""
    import time

    from advrec.data.datasets import load_dataset
    from advrec.text import SentenceEncoder, item_texts

    try:
        X = load_dataset(dataset, data_dir=data_dir)
        texts = item_texts(X, columns.split(",") if columns else None)
        enc = SentenceEncoder(model, progress=True)
        t0 = time.perf_counter()
        vectors = enc.encode(texts)
    except AdvrecError as err:
        _fail(err)
    secs = time.perf_counter() - t0
    console.print(f"{len(texts):,} items → {vectors.shape[1]}-d vectors in {secs:.1f}s; e.g. {texts[0]!r}")


@app.command("finetune-encoder")
def finetune_encoder(
    dataset: Annotated[str, typer.Option(help="dataset name (its items need text and its interactions times)")],
    protocol: Annotated[
        str | None,
        typer.Option(
            help="split whose training part gives the pairs: ratio | temporal | cold_items | … (default ratio)"
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the split, the pair sample and training")] = None,
    out: Annotated[Path | None, typer.Option(help="model folder (default: the cache, named by a digest)")] = None,
    base: Annotated[
        str | None, typer.Option(help="local sentence-transformers folder (default all-MiniLM-L6-v2)")
    ] = None,
    epochs: int = 1,
    max_pairs: Annotated[int, typer.Option(help="at most this many item pairs (a seeded sample)")] = 20000,
    batch_size: Annotated[int, typer.Option(help="pairs per batch (the others are each pair's negatives)")] = 32,
    lr: float = 2e-5,
    window: Annotated[int, typer.Option(help="pairs of items at most this many steps apart in a history")] = 1,
    columns: Annotated[str | None, typer.Option(help="comma-separated item columns (default as encode-items)")] = None,
    min_rating: float | None = None,
    core: int | None = None,
    data_dir: DataDir = None,
) -> None:
    """Fine-tunes the sentence encoder on pairs of items that follow each other in the training part's histories;
    prints the model folder, which `encode-items --model`, `--set model=` (TextKNN) and `--set encoder=` (UniSRec)
    take. The same inputs a second time return the cached folder without training."""
    import time

    from advrec.experiment import load_data, make_split
    from advrec.text.finetune import MANIFEST
    from advrec.text.finetune import finetune_encoder as finetune

    try:
        cfg = _config("Pop", dataset, data_dir, protocol, seed, min_rating, core, None, None)
        s = make_split(load_data(cfg), cfg)
        t0 = time.perf_counter()
        folder = finetune(
            s.train, out=out, base=base, columns=columns.split(",") if columns else None, epochs=epochs,
            batch_size=batch_size, lr=lr, max_pairs=max_pairs, window=window, random_state=cfg.seed,
        )  # fmt: skip
    except AdvrecError as err:
        _fail(err)
    info = json.loads((folder / MANIFEST).read_text())
    console.print(
        f"{info['pairs']:,} pairs of {info['items']:,} items from the {cfg.protocol} training part (seed {cfg.seed}); "
        f"trained in {info['train_seconds']:.1f}s (mean loss {info['loss_first_epoch']:.3f} in the first epoch, "
        f"{info['loss_last_epoch']:.3f} in the last); this call {time.perf_counter() - t0:.1f}s"
    )
    console.print(f"model: {folder}", soft_wrap=True)


@app.command()
def split(
    dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
    out: Annotated[Path, typer.Option(help="folder to write the split to")] = Path("splits/split"),
    protocol: Annotated[
        str,
        typer.Option(help=PROTOCOL_HELP),
    ] = "ratio",
    seed: int = 2020,
    min_rating: Annotated[float | None, typer.Option(help="keep ratings ≥ this, as implicit feedback")] = 3.0,
    core: Annotated[int | None, typer.Option(help="iterative k-core on users and items")] = None,
    data_dir: DataDir = None,
) -> None:
    """Splits a dataset under a protocol and writes it as Parquet, for advrec or other libraries."""
    from advrec.experiment import load_data, make_split

    try:
        cfg = _config("Pop", dataset, data_dir, protocol, seed, min_rating, core, None, None)
        s = make_split(load_data(cfg), cfg)
        s.save(out)
    except AdvrecError as err:
        _fail(err)
    console.print(f"{s} → {out}")


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(
            help="Pop, ItemKNN, EASE, EDLAE, ADMMSLIM, GFCF, IALS, BPRMF, MultVAE, RecVAE, LightGCN, CFGAN, IRGAN, "
            "TextEASE, …"
        ),
    ],
    dataset: Annotated[str | None, typer.Option(help="dataset name")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="model parameter key=value (repeatable)")] = None,
    config: Annotated[Path | None, typer.Option(help="experiment TOML file")] = None,
    protocol: Annotated[
        str | None,
        typer.Option(help=PROTOCOL_HELP),
    ] = None,
    seed: int | None = None,
    min_rating: float | None = None,
    core: int | None = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default runs/<model>-<time>)")] = None,
    plot: Annotated[bool, typer.Option(help="write the per-epoch training curves as training.png")] = False,
    epsilon: Annotated[
        float | None, typer.Option(help="train with user-level DP at this ε (MultVAE, BPRMF, EASE)")
    ] = None,
    dp: Annotated[
        list[str] | None, typer.Option("--dp", help="DP setting key=value, e.g. method=synthetic (repeatable)")
    ] = None,
    data_dir: DataDir = None,
    nproc_per_node: Annotated[
        int, typer.Option(help="processes on this node; more than 1 starts them through torchrun's launcher")
    ] = 1,
    nnodes: Annotated[int, typer.Option(help="nodes of the job; each runs this command with its --node-rank")] = 1,
    node_rank: Annotated[int, typer.Option(help="this node's number, 0 to nnodes-1; node 0 hosts the rendezvous")] = 0,
    rdzv_endpoint: Annotated[
        str | None, typer.Option(help="HOST:PORT of node 0's rendezvous (one node: a free loopback port)")
    ] = None,
    max_restarts: Annotated[int, typer.Option(help="times the launcher restarts failed workers")] = 0,
    tensorboard: Annotated[
        Path | None, typer.Option(help="write TensorBoard event files to this folder (parameters, epochs, metrics)")
    ] = None,
    mlflow: Annotated[
        str | None, typer.Option(help="log to MLflow at this URI (sqlite:///mlflow.db, a folder, or http(s)://…)")
    ] = None,
) -> None:
    """Trains a model (optionally with user-level DP), evaluates it on the test part, and writes a run directory.

    With --nproc-per-node or --nnodes above 1 the same command runs in every process of a torchrun job: the torch
    models train data-parallel (DDP) and iALS shares its factor solves, each process on its share of the users;
    evaluation is shared out by user; rank 0 alone prints and writes the run directory. Closed-form models are
    single-node and refuse more than one process.
    """
    from advrec.distributed import is_main
    from advrec.distributed.factors import SINGLE_NODE
    from advrec.distributed.launch import LaunchPlan
    from advrec.models import model_class

    plan = LaunchPlan(nproc_per_node, nnodes, node_rank, rdzv_endpoint, max_restarts)
    try:
        cfg = _config(model, dataset, data_dir, protocol, seed, min_rating, core, sets, config, epsilon, dp)
        plan.check()
        if plan.wanted and model_class(cfg.model).scale_out == SINGLE_NODE:
            raise ConfigError(
                f"{cfg.model} is fitted in closed form on one node ({SINGLE_NODE}); train it without "
                "--nproc-per-node/--nnodes (the torch models and IALS train across processes)"
            )
    except AdvrecError as err:
        _fail(err)
    if plan.wanted:
        raise typer.Exit(_launch(ctx, plan))
    if plan != LaunchPlan() and is_main():
        logging.getLogger(__name__).warning("already a worker of a torchrun job: the launcher options are ignored")
    _train_here(cfg, out, plot, {"tensorboard": tensorboard, "mlflow": mlflow})


def _launch(ctx: typer.Context, plan: Any) -> int:
    """Starts this command in the workers of `plan` (less the launcher's options); returns the job's status."""
    from dataclasses import fields

    from advrec.distributed.launch import launch

    args = _command_line(ctx, drop={f.name for f in fields(plan)})
    try:
        return launch(plan, "advrec", args)
    except AdvrecError as err:
        _fail(err)


def _command_line(ctx: typer.Context, drop: set[str]) -> list[str]:
    """The arguments that run `ctx`'s command again with the values it was given (global options first),
    leaving out the parameters named in `drop` and those at their default."""
    args: list[str] = []
    if ctx.parent is not None:
        args += _param_args(ctx.parent, drop)
    return [*args, str(ctx.info_name), *_param_args(ctx, drop)]


def _param_args(ctx: Any, drop: set[str]) -> list[str]:
    """Arguments, then options, of one (click) context's command with the values they were given."""
    positional: list[str] = []
    options: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name in drop or value is None or value == param.default:
            continue
        if param.param_type_name != "option":
            positional += [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
        elif param.is_flag:
            names = param.opts if value else param.secondary_opts
            options += names[:1]
        else:
            for v in value if param.multiple else [value]:
                options += [param.opts[0], str(v)]
    return [*positional, *options]


def _trackers(wanted: dict[str, Any], run_name: str) -> list[Any]:
    """The trackers asked for on the command line (`advrec.tracking`)."""
    from advrec.tracking import MLflowTracker, TensorBoardTracker

    out: list[Any] = []
    if wanted.get("tensorboard") is not None:
        out.append(TensorBoardTracker(wanted["tensorboard"]))
    if wanted.get("mlflow"):
        out.append(MLflowTracker(wanted["mlflow"], run_name=run_name))
    return out


def _train_here(cfg: Any, out: Path | None, plot: bool, tracking: dict[str, Any] | None = None) -> None:
    """Trains, evaluates and writes the run in this process: alone, or as one worker of a torchrun job."""
    from advrec import distributed
    from advrec.devices import resolve_device
    from advrec.distributed.launch import from_main
    from advrec.experiment import run_experiment
    from advrec.progress import enable_progress
    from advrec.runs import new_run_dir

    main = distributed.is_main()
    if not main:
        enable_progress(False)
    made: Path | None = None  # the run folder named here, removed again if the run fails before writing to it
    try:
        device = resolve_device(cfg.params.get("device", "auto"))
        with distributed.process_group(device.type):
            path = out or Path(from_main(lambda: str(new_run_dir("runs", cfg.model.lower()))))
            made = None if out else path
            trackers = _trackers(tracking or {}, path.name)
            extra = {"tracking": {k: v for t in trackers for k, v in t.describe().items()}} if trackers else None
            path, outcome = run_experiment(cfg, path, extra=extra, trackers=trackers)
    except AdvrecError as err:
        if main and made is not None and made.is_dir() and not any(made.iterdir()):
            made.rmdir()
        _fail(err, f" on rank {distributed.rank()}" if distributed.world_size() > 1 else "")
    if not main:
        return
    _print_summary({type(outcome.model).__name__: outcome.report.summary}, cfg.ks)
    from advrec.reports import ranking_words

    console.print(f"test part, {outcome.report.users}: {ranking_words(outcome.report)}")
    console.print(f"fit {outcome.fit_seconds:.1f}s, evaluate {outcome.eval_seconds:.1f}s → {path}")
    if plot:
        log = getattr(outcome.model, "training_log_", None)
        if not log:
            console.print(f"[yellow]{cfg.model} has no per-epoch training log to plot[/yellow]")
        else:
            from advrec.evaluation.report import training_curves

            png = training_curves(log, path / "training.png", title=f"{cfg.model} on {cfg.dataset}")
            console.print(f"training curves → {png}")


@app.command()
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

    try:
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
    except AdvrecError as err:
        _fail(err)
    _print_summary({model: metrics}, [10, 20])
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


@app.command()
def tune(
    model: Annotated[str, typer.Argument(help="EASE, EDLAE, ItemKNN, GFCF, BSPM, BPRMF, MultVAE, IALS, …")],
    dataset: Annotated[str | None, typer.Option(help="dataset name")] = None,
    trials: Annotated[int, typer.Option(help="trials in the study (those already in --out count)")] = 20,
    timeout: Annotated[float | None, typer.Option(help="stop starting trials after this many seconds")] = None,
    metric: Annotated[str, typer.Option(help="validation metric to maximise, METRIC@K")] = "ndcg@10",
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="fixed model parameter key=value, not searched (repeatable)")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="experiment TOML file (data, protocol, fixed [params])")] = None,
    protocol: Annotated[str | None, typer.Option(help=PROTOCOL_HELP)] = None,
    seed: int | None = None,
    min_rating: float | None = None,
    core: int | None = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory (default runs/tune-<model>-<dataset>-<seed>; resumes)")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Tunes a model's declared hyperparameters on the validation part (Optuna: TPE, median pruning), refits the
    best configuration and writes it as a run, with report.md and tuning.png. The study is kept in
    OUT/study.sqlite3: the same command run again (after Ctrl-C, or with more --trials) resumes it."""
    import optuna

    from advrec.tuning import parse_tune_metric, search_space
    from advrec.tuning import tune as run_tune

    try:
        cfg = _config(model, dataset, data_dir, protocol, seed, min_rating, core, sets, config)
        parse_tune_metric(metric)
        search_space(cfg.model)
    except AdvrecError as err:
        _fail(err)
    path = out or Path("runs") / f"tune-{cfg.model.lower()}-{cfg.dataset}-{cfg.seed}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed or interrupted trial is shown by its own line

    def shown(study: Any, trial: Any) -> None:
        from advrec.tuning import counted

        done = sum(counted(t) for t in study.trials)
        state = trial.state.name.lower()
        value = f"{metric} {trial.value:.4f}" if trial.value is not None else trial.user_attrs.get("error", "")
        best = f"best {study.best_value:.4f} (#{study.best_trial.number})" if any(
            t.state.name == "COMPLETE" for t in study.trials
        ) else ""  # fmt: skip
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        secs = trial.duration.total_seconds() if trial.duration is not None else 0.0
        console.print(f"trial {trial.number} [{done}/{trials}] {state} {value} {best} {secs:.1f}s  {params}")

    console.print(f"tuning {cfg.model} on {cfg.dataset} ({metric} on validation); study {path / 'study.sqlite3'}")
    try:
        result = run_tune(cfg.model, cfg, run_dir=path, trials=trials, timeout=timeout, metric=metric, on_trial=shown)
    except AdvrecError as err:
        _fail(err)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: the study in {path} is kept; run the same command to resume")
        raise typer.Exit(130) from None
    assert result.refit is not None
    console.print(
        f"best validation {metric} {result.best_value:.4f}: "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
    )
    _print_summary({f"{cfg.model} (refit, test)": result.refit.report.summary}, cfg.ks)
    console.print(f"{result.counts} in {result.wall_seconds:.1f}s → {path} (report.md, tuning.png)")


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    ks: Annotated[str, typer.Option(help="comma-separated cut-offs")] = "10,20",
    on: Annotated[str, typer.Option(help="test or valid")] = "test",
) -> None:
    """Re-evaluates the model of a run directory on its split."""
    try:
        cut = number_list(ks, "--ks", int, "positive integers such as 10,20")
        if on not in ("test", "valid"):
            raise ConfigError(f"--on takes test or valid (the split's parts a model is evaluated on), not {on!r}")
        from advrec.evaluation import evaluate
        from advrec.runs import load_run

        run = load_run(run_dir)
        report = evaluate(run.model, run.split, ks=cut, on=on)
    except AdvrecError as err:
        _fail(err)
    _print_summary({type(run.model).__name__: report.summary}, cut)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories")],
    out: Annotated[Path | None, typer.Option(help="folder of the report (one run; default RUN_DIR/report)")] = None,
) -> None:
    """One HTML page (and markdown) per run: protocol, metrics with 95% intervals, training curves, metrics by
    user activity, and the privacy budget, federation and robustness curves where the run has them."""
    try:
        if out is not None and len(run_dirs) > 1:
            raise ConfigError("--out names the folder of one run's report; give one run, or none (RUN_DIR/report)")
        from advrec.reports import run_report

        for run_dir in run_dirs:
            console.print(f"report → {run_report(run_dir, out)}")
    except AdvrecError as err:
        _fail(err)


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="two or more run directories (the first is the reference)")],
    out: Annotated[Path, typer.Option(help="folder of the comparison")] = Path("comparison"),
    metric: Annotated[str, typer.Option(help="the metric tested and drawn")] = "ndcg@10",
) -> None:
    """One table of the runs' metrics, paired tests against the first run on their shared test users, one chart."""
    try:
        from advrec.reports import compare_runs

        console.print(f"comparison → {compare_runs(run_dirs, out, metric)}")
    except AdvrecError as err:
        _fail(err)


@app.command()
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    user: Annotated[str, typer.Option(help="raw user id")],
    k: Annotated[int, typer.Option("-k", help="number of items")] = 10,
    include_seen: bool = False,
    explain: Annotated[bool, typer.Option("--explain", help="show the history items behind each pick")] = False,
) -> None:
    """Top-k items (raw ids and titles) for one user of a run's data."""
    from advrec.runs import load_run

    try:
        run = load_run(run_dir)
        u = run.users.index(user)
        items, scores = run.model.recommend(run.scoring_history(), np.array([u]), k=k, exclude_seen=not include_seen)
    except AdvrecError as err:
        _fail(err)

    def name(i: int) -> str:
        return str(run.titles[i]) if run.titles is not None else str(run.items.raw(i))

    table = Table("rank", "item", "title", "score", *(["because you liked"] if explain else []))
    for rank, (i, s) in enumerate(zip(items[0], scores[0], strict=True), 1):
        if i < 0:
            break
        row = [str(rank), str(run.items.raw(i)), name(i) if run.titles is not None else "", f"{s:.4f}"]
        if explain:
            try:
                why = run.model.explain(run.scoring_history(), u, int(i), n=3)
            except AdvrecError as err:
                _fail(err)
            row.append("; ".join(name(j) for j, _ in why))
        table.add_row(*row)
    console.print(table)


def _print_summary(results: dict[str, dict[str, float]], ks: list[int]) -> None:
    k0 = ks[0]
    cols = [f"ndcg@{k0}", f"recall@{k0}", f"hit@{k0}", f"mrr@{k0}"] + [
        f"{m}@{k}" for k in ks[1:] for m in ("ndcg", "recall")
    ]
    cols.append(f"coverage@{k0}")
    table = Table("model", *cols)
    for name, summary in results.items():
        table.add_row(name, *(f"{summary.get(c, float('nan')):.4f}" for c in cols))
    console.print(table)


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


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (advrec train, advrec federate)")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="server processes (each loads the model)")] = 1,
    store: Annotated[
        str | None, typer.Option(help="event store: sqlite:///path.db or postgresql://… (default RUN_DIR/events.db)")
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            help="API keys, one '<key> <scope>[,<scope>...]' per line, scopes among read, write, admin "
            "(also read: $ADVREC_API_KEYS, entries separated by ';')"
        ),
    ] = None,
    public_reads: Annotated[
        bool,
        typer.Option(
            help="callers without a key get ad-hoc recommendations, similar and popular items and the API docs; "
            "a stored user's answers always need the read scope"
        ),
    ] = False,
    protect_reads: Annotated[
        bool, typer.Option(hidden=True, help="removed: reads need a key with the read scope by default")
    ] = False,
    runs_root: Annotated[
        Path | None, typer.Option(help="admin reloads load only run directories under it (default: RUN_DIR's parent)")
    ] = None,
    max_events_per_user: Annotated[
        int | None, typer.Option(help="most recent events of a user that one read uses (default 10,000)")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
    ann: Annotated[
        str,
        typer.Option(
            help="approximate top-k: none (score every item) or faiss (HNSW graph over item vectors; BPRMF, IRGAN; "
            "needs the ann extra)"
        ),
    ] = "none",
    ann_m: Annotated[int, typer.Option(help="faiss HNSW links per item (memory, build time, recall)")] = 32,
    ann_ef_search: Annotated[int, typer.Option(help="faiss HNSW candidates per search (latency, recall)")] = 64,
) -> None:
    """Serves a run's model over HTTP: recommendations, fold-in, similar items, events, reload, forget.

    Every call but /healthz and /readyz needs 'Authorization: Bearer <key>' with a scope: read (stored users'
    answers, /v1/model, /metrics, /docs), write (events), admin (reload, forget; also /metrics).
    """
    import copy
    import dataclasses
    import os

    import uvicorn

    from advrec.errors import ConfigError
    from advrec.serving.app import app_for
    from advrec.serving.settings import ServingSettings

    if protect_reads:
        _fail(ConfigError("--protect-reads was removed: reads need a key with the read scope by default now"))
    try:  # load once here, so that a bad run directory, store, key file or ann option fails before the server starts
        settings = ServingSettings(
            run_dir=run_dir,
            store_url=store,
            api_key_file=api_key_file,
            public_reads=public_reads,
            runs_root=runs_root,
            ann=ann,
            ann_m=ann_m,
            ann_ef_search=ann_ef_search,
        )
        if max_events_per_user is not None:
            settings = dataclasses.replace(settings, max_events_per_user=max_events_per_user)
        probe = app_for(settings)
        probe.state.serving.store.close()
    except (AdvrecError, OSError) as err:
        _fail(err)
    os.environ.update(settings.to_env())
    if not probe.state.serving.keys:
        console.print("[yellow]no API key configured: every call but /healthz and /readyz will be refused[/yellow]")
    console.print(f"serving {probe.state.serving.model.version} on http://{host}:{port}")
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)  # the server's own lines (reload, forget) too
    log_config["loggers"]["advrec"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(
        "advrec.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level="info",
        log_config=log_config,
    )


# ---------------------------------------------------------------------- privacy: synthesize, audit, forget
@app.command()
def synthesize(
    dataset: Annotated[str, typer.Option(help="dataset name or a file of interactions")] = "ml-100k",
    generator: Annotated[
        str, typer.Option(help="vae (DP-SGD VAE), ease (DP Gram matrix) or gan (user-based CFGAN; on a DP release)")
    ] = "vae",
    epsilon: Annotated[str, typer.Option(help="privacy budget ε at the user level, or inf for no DP")] = "inf",
    users: Annotated[int | None, typer.Option(help="synthetic users to write (default: as many as real)")] = None,
    out: Annotated[Path, typer.Option(help="folder of the release")] = Path("synthetic"),
    delta: Annotated[float | None, typer.Option(help="δ (default 1/n^1.1)")] = None,
    holdout: Annotated[float, typer.Option(help="share of real users kept out of training, for the DCR audit")] = 0.0,
    epochs: Annotated[int | None, typer.Option(help="generator training epochs")] = None,
    popularity_share: Annotated[
        float, typer.Option(help="share of ε on a DP popularity prior (try 0.05 at ε ≥ 8)")
    ] = 0.0,
    sets: Annotated[list[str] | None, typer.Option("--set", help="generator parameter key=value")] = None,
    min_rating: float | None = 3.0,
    core: int | None = None,
    seed: int = 2020,
    data_dir: DataDir = None,
) -> None:
    """Writes a synthetic interaction dataset (Parquet + manifest with ε, δ) over the real item catalogue."""
    import math

    try:
        try:
            eps = math.inf if epsilon.strip().lower() in ("inf", "infinity", "none") else float(epsilon)
        except ValueError:
            raise ConfigError(f"--epsilon takes a positive number or inf, not {epsilon!r}") from None
        from advrec.data.datasets import IMPLICIT_DATASETS, load_dataset
        from advrec.experiment import parse_assignments
        from advrec.privacy.synthesize import check_generator
        from advrec.privacy.synthesize import synthesize as make_release

        check_generator(generator)
        privacy = f"ε = {eps:g} (user level)" if math.isfinite(eps) else "ε = ∞: no DP (--epsilon E for a DP release)"
        console.print(f"{generator} generator on {dataset}, {privacy}", markup=False)
        rating = None if dataset in IMPLICIT_DATASETS else min_rating
        X = load_dataset(dataset, data_dir=data_dir, min_rating=rating, core=core)
        params = parse_assignments(sets or [])
        if epochs is not None:
            params["epochs"] = epochs
        with console.status(f"training the {generator} generator (ε = {eps})"):
            release = make_release(
                X,
                generator=generator,
                epsilon=eps,
                n_users=users,
                delta=delta,
                params=params,
                holdout=holdout,
                source={"name": dataset, "min_rating": min_rating, "core": core},
                popularity_share=popularity_share,
                random_state=seed,
            )
        path = release.save(out)
    except (AdvrecError, ValueError) as err:
        _fail(err)
    p = release.manifest["privacy"]
    console.print(
        f"{release.data.n_users:,} synthetic users, {release.data.nnz:,} interactions over {release.data.n_items:,} "
        f"items; ε = {p['epsilon']:.3g}, δ = {p['delta']:.3g} → {path}"
    )


@app.command()
def audit(
    target: Annotated[Path, typer.Argument(help="a run directory or a synthetic release folder")],
    membership: Annotated[bool, typer.Option(help="membership inference (run on holdout_users)")] = True,
    attributes: Annotated[bool, typer.Option(help="gender / age inference (ml-1m, ml-100k)")] = True,
    query: Annotated[str, typer.Option(help="fold_in | popular (what the attacker sees)")] = "fold_in",
    out: Annotated[Path | None, typer.Option(help="output folder (default TARGET/audit)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Privacy audits: membership and attribute inference on a run, DCR on a synthetic release."""
    from advrec.privacy.audit import audit as run_audit

    try:
        result = run_audit(target, membership=membership, attributes=attributes, query=query, out=out,
                           data_dir=data_dir)  # fmt: skip
    except (AdvrecError, ValueError) as err:
        _fail(err)
    if "membership" in result:
        m = result["membership"]
        console.print(f"membership inference ({m['query']}): AUC {m['auc']:.3f}, accuracy {m['accuracy']:.3f}")
    for r in result.get("attributes", []):
        console.print(
            f"{r['attribute']} from {r['source']}: balanced accuracy {r['balanced_accuracy']:.3f} "
            f"(chance {r['chance']:.2f}), AUC {r['auc']:.3f}"
        )
    if "dcr" in result:
        d = result["dcr"]
        console.print(
            f"DCR: median synthetic→train {d['median_dcr_synth_to_train']:.3f}, synthetic→holdout "
            f"{d['median_dcr_synth_to_holdout']:.3f}; closer to train {d['share_closer_to_train']:.3f}; "
            f"attack AUC {d['dcr_attack_auc']:.3f}"
        )
    console.print(f"report → {(out or target / 'audit') / 'report.md'}")


@app.command()
def forget(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    user: Annotated[str, typer.Option(help="raw user id to forget")],
    store: Annotated[
        str | None,
        typer.Option(
            help="the event store the server writes to, when not RUN_DIR/events.db (sqlite:///… or postgresql://…)"
        ),
    ] = None,
) -> None:
    """Removes a user from a run and its event store and updates its model (exact recomputation or retraining).

    A running server keeps serving what it loaded: forget through it (DELETE /v1/users/{id}) or reload it after.
    """
    from advrec.privacy.forget import forget_user

    try:
        result = forget_user(run_dir, user, store_url=store)
    except AdvrecError as err:
        _fail(err)
    console.print(
        f"forgot user {user}: {result.interactions_removed} interactions and {result.events_removed} events removed, "
        f"model updated by {result.method} in {result.seconds:.1f}s"
    )


@app.command()
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
    try:
        base = ExperimentConfig(dataset=dataset, data_dir=data_dir, seed=seed, min_rating=3.0)
        X = load_data(base)
        s = make_split(X, base)
    except AdvrecError as err:
        _fail(err)
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
    _print_summary(results, base.ks)
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


@app.command()
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

    try:
        raw = [t.strip() for t in targets.split(",") if t.strip()] if targets else None
        result = run_attack(run_dir, kind, size, raw, filler, intent, defend, seed, detector)
    except AdvrecError as err:
        _fail(err)
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


@app.command()
def robustness(
    run_dir: Annotated[Path, typer.Argument(help="a run directory of an embedding model (e.g. BPRMF)")],
    eps: Annotated[str, typer.Option(help="comma-separated perturbation norms")] = "0.1,0.25,0.5,1.0",
    steps: Annotated[int, typer.Option(help="PGD steps")] = 10,
    seed: int = 0,
) -> None:
    """NDCG@10 of a run's embedding model under FGSM and PGD attacks on its embeddings; table and PNG curve."""
    try:
        norms = number_list(eps, "--eps", float, "positive numbers such as 0.1,0.5")
        from advrec.robustness.report import run_robustness

        df = run_robustness(run_dir, norms, steps, seed)
    except AdvrecError as err:
        _fail(err)
    table = Table("attack", "eps", "NDCG@10", "Recall@10", "share of clean")
    for _, r in df.iterrows():
        table.add_row(r["method"], f"{r['eps']:g}", f"{r['ndcg@10']:.4f}", f"{r['recall@10']:.4f}", f"{r['share']:.3f}")
    console.print(table)
    console.print(f"report → {df['path'].iloc[0]}")


if __name__ == "__main__":  # pragma: no cover
    app()
