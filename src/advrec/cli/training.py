"""Training: `advrec train` (alone or as a torchrun job, with trackers) and `advrec tune`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from advrec.cli import (
    PROTOCOL_HELP,
    DataDir,
    command,
    console,
    experiment_config,
    fail,
    print_summary,
)
from advrec.errors import AdvrecError, ConfigError


@command()
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
    cfg = experiment_config(model, dataset, data_dir, protocol, seed, min_rating, core, sets, config, epsilon, dp)
    plan.check()
    if plan.wanted and model_class(cfg.model).scale_out == SINGLE_NODE:
        raise ConfigError(
            f"{cfg.model} is fitted in closed form on one node ({SINGLE_NODE}); train it without "
            "--nproc-per-node/--nnodes (the torch models and IALS train across processes)"
        )
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
    return launch(plan, "advrec", args)


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
    trackers: list[Any] = []
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
        for tracker in trackers:
            tracker.finish(failed=True)
        fail(err, f" on rank {distributed.rank()}" if distributed.world_size() > 1 else "")
    if not main:
        return
    print_summary({type(outcome.model).__name__: outcome.report.summary}, cfg.ks)
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


@command()
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

    cfg = experiment_config(model, dataset, data_dir, protocol, seed, min_rating, core, sets, config)
    parse_tune_metric(metric)
    search_space(cfg.model)
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
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: the study in {path} is kept; run the same command to resume")
        raise typer.Exit(130) from None
    assert result.refit is not None
    console.print(
        f"best validation {metric} {result.best_value:.4f}: "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
    )
    print_summary({f"{cfg.model} (refit, test)": result.refit.report.summary}, cfg.ks)
    console.print(f"{result.counts} in {result.wall_seconds:.1f}s → {path} (report.md, tuning.png)")
