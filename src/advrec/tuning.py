"""Hyperparameter tuning: Optuna studies over each model's declared search space (`Model._search_space`).

`tune("EASE", config, trials=20, run_dir="runs/tune-ease")` draws configurations with a seeded TPE sampler, fits
each on the training part and scores it on the validation part (`metric`, e.g. "ndcg@10"); a torch model reports
its validation metric every evaluated epoch and a median pruner stops trials that fall behind the others. The
study lives in `<run_dir>/study.sqlite3`, so calling `tune` again with the same run directory resumes it: the
trials already finished count toward `trials`, and a trial an interrupt left running is marked failed and not
counted. The best configuration is then refit (train, early stopping on validation, as `advrec train` does) and
saved as a normal run in `run_dir` with its test metrics, beside `report.md` and `tuning.png` (the optimisation
history and the parameters' importances).

One process tunes one run directory at a time: a second one would see the first one's running trial as left
over by an interrupt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advrec.data.interactions import Interactions
from advrec.data.splits import Split
from advrec.errors import AdvrecError, ConfigError
from advrec.evaluation.evaluate import evaluate
from advrec.evaluation.metrics import METRICS
from advrec.experiment import ExperimentConfig, Outcome, build_model, load_data, make_split, run_experiment
from advrec.io import atomic_write_text
from advrec.models.base import Recommender, model_class
from advrec.models.params import Choice, Dimension, Float, Int, check_space
from advrec.models.torch_base import TorchRecommender, TrainingPlugin
from advrec.progress import enable_progress, progress_wanted

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["Choice", "Dimension", "Float", "Int", "PruningPlugin", "TuneResult", "search_space", "tune"]

STUDY_FILE = "study.sqlite3"
STUDY_NAME = "advrec-tune"
REPORT_PNG = "tuning.png"
INTERRUPTED = "interrupted"  # user attribute of a trial an interrupt ended: not counted toward `trials`
ERROR = "error"  # user attribute of a trial whose configuration failed (it counts: the space holds it)
# errors of one configuration (a refused value, a diverged fit, a singular system): the trial fails, tuning goes on
WARMUP_EPOCHS = 5  # the default pruner judges a torch trial from its 5th epoch on (the first ones say little)
TRIAL_ERRORS: tuple[type[Exception], ...] = (AdvrecError, FloatingPointError, np.linalg.LinAlgError)

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """What `tune` found: the best trial's searched values and validation value, the constructor keywords of
    the refit model, the study, and the refit's outcome (None when `refit=False`)."""

    study: optuna.Study
    best_params: dict[str, Any]
    best_value: float
    model_params: dict[str, Any]
    run_dir: Path
    metric: str
    refit: Outcome | None = None
    wall_seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def search_space(model: str | type[Recommender]) -> dict[str, Dimension]:
    """The search space a model declares (`_search_space`), checked against its constraints."""
    cls = model_class(model) if isinstance(model, str) else model
    space = dict(getattr(cls, "_search_space", {}))
    if not space:
        from advrec.models.base import _REGISTRY

        have = sorted(n for n, c in _REGISTRY.items() if getattr(c, "_search_space", None))
        raise ConfigError(f"{cls.__name__} declares no search space (pass space=...); models with one: {have}")
    check_space(cls.__name__, cls._parameter_constraints, space)
    return space


def parse_tune_metric(metric: str) -> tuple[str, int]:
    """ "ndcg@10" → ("ndcg", 10); a `ConfigError` naming the known metrics otherwise."""
    name, sep, k = str(metric).partition("@")
    if not sep or name not in METRICS or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"metric must be METRIC@K with METRIC one of {list(METRICS)} and K ≥ 1, got {metric!r}")
    return name, int(k)


class PruningPlugin(TrainingPlugin):
    """Reports a torch model's validation metric to an Optuna trial on every evaluated epoch and ends the fit with
    `optuna.TrialPruned` when the trial's pruner says so. It only watches: the fit is the one without it."""

    changes_training = False

    def __init__(self, trial: optuna.Trial, key: str) -> None:
        self.trial, self.key = trial, key

    def epoch_end(self, model: TorchRecommender, row: dict[str, float]) -> None:
        if self.key not in row:
            return
        epoch = int(row["epoch"])
        self.trial.report(float(row[self.key]), epoch)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"{self.key} {row[self.key]:.4g} at epoch {epoch} is below the median")


# ---------------------------------------------------------------------- the study on disk
def study_path(run_dir: str | Path) -> Path:
    """Where the study of a run directory is kept."""
    return Path(run_dir) / STUDY_FILE


def open_study(
    run_dir: str | Path, identity: dict[str, Any], seed: int, pruner: optuna.pruners.BasePruner | None = None
) -> optuna.Study:
    """The study of `run_dir` (created, or loaded to resume). `identity` (model, data, metric, space) is stored with
    a new study and must match a resumed one. Trials an interrupt left running are marked failed (`INTERRUPTED`);
    the configurations of interrupted trials are queued to be tried again first (once each).
    The TPE sampler is seeded with `seed` plus the trials already in the study, so a resumed study draws anew."""
    import optuna

    path = study_path(run_dir)
    if any(c in str(path.resolve()) for c in "?#%"):
        raise ConfigError(f"{run_dir}: a run directory for tuning may not contain '?', '#' or '%' in its path")
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    study = optuna.create_study(
        storage=storage, study_name=STUDY_NAME, direction="maximize", load_if_exists=True, pruner=pruner
    )
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
    elif stored != identity:
        diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        was = "; ".join(f"{k} {stored.get(k)!r}, now {identity.get(k)!r}" for k in diff)
        raise ConfigError(
            f"{run_dir} holds a study with other settings ({was}); tune with those settings to resume it, "
            "or give another run directory"
        )
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    retried = set(study.user_attrs.get("retried", []))
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get(INTERRUPTED) and t.params and t.number not in retried:
            study.enqueue_trial(t.params)  # an interrupted configuration is tried again, first
            retried.add(t.number)
    study.set_user_attr("retried", sorted(retried))
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def counted(trial: FrozenTrial) -> bool:
    """Whether a finished trial counts toward the trials asked for (all but those an interrupt ended)."""
    return trial.state.is_finished() and not trial.user_attrs.get(INTERRUPTED, False)


def state_counts(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.trials:
        key = INTERRUPTED if t.user_attrs.get(INTERRUPTED) else t.state.name.lower()
        out[key] = out.get(key, 0) + 1
    return out


# ---------------------------------------------------------------------- one trial
def model_params(
    cls: type[Recommender], fixed: Mapping[str, Any], sampled: Mapping[str, Any], metric: str, seed: int
) -> dict[str, Any]:
    """The constructor keywords of a trial (and of the refit): fixed ones, the sampled ones, the run's seed and,
    for a model that stops early, the tuned metric as its validation metric (unless fixed)."""
    names = cls._param_names()
    params = {**fixed, **sampled}
    if "random_state" in names and "random_state" not in params:
        params["random_state"] = seed
    if "valid_metric" in names and "valid_metric" not in params:
        params["valid_metric"] = metric
    return params


def fit_trial(model: Recommender, split: Split, metric: tuple[str, int], trial: optuna.Trial | None = None) -> float:
    """Fits `model` on train (a torch model reporting each validated epoch to `trial` for pruning) and returns
    its validation `metric`."""
    name, k = metric
    shown = progress_wanted(None)
    enable_progress(False)  # one line per trial (`on_trial`), not one per epoch
    try:
        if isinstance(model, TorchRecommender):
            plugins = [PruningPlugin(trial, f"valid_{name}@{k}")] if trial is not None else []
            model.fit(split.train, valid=split, plugins=plugins)
        else:
            model.fit(split.train, valid=split)  # type: ignore[call-arg]
    finally:
        enable_progress(shown)
    report = evaluate(model, split, ks=(k,), on="valid", metrics=(name,), progress=False)
    value = float(report.summary[f"{name}@{k}"])
    if not np.isfinite(value):
        raise FloatingPointError(f"validation {name}@{k} is {value}")
    return value


# ---------------------------------------------------------------------- tune
def tune(
    model: str,
    config: ExperimentConfig | None = None,
    *,
    run_dir: str | Path,
    trials: int = 20,
    timeout: float | None = None,
    seed: int | None = None,
    metric: str = "ndcg@10",
    space: Mapping[str, Dimension] | None = None,
    data: Interactions | None = None,
    split: Split | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    enqueue: Sequence[Mapping[str, Any]] = (),
    refit: bool = True,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> TuneResult:
    """Tunes `model` on the validation part of `config`'s split until `trials` trials are finished (or `timeout`
    seconds of this call have passed), then refits the best configuration and saves it as the run `run_dir`.

    `config`: data, protocol and seed (its `params` are fixed keywords, left out of the search); `seed`: replaces
    the config's seed. `space`: replaces the model's declared space. `data`/`split`: given instead of loading.
    `pruner`: default `MedianPruner(n_startup_trials=5, n_warmup_steps=WARMUP_EPOCHS)`. `enqueue`: configurations
    tried first (e.g. the defaults), each once per study. `on_trial(study, trial)`: called after each trial
    (progress). An interrupt (Ctrl-C) leaves the study consistent; the same call resumes it.
    """
    import optuna

    t0 = time.perf_counter()
    cfg = (config or ExperimentConfig()).model_copy(update={"model": model})
    if seed is not None:
        cfg = cfg.model_copy(update={"seed": seed})
    cls = model_class(cfg.model)
    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be positive seconds, got {timeout}")
    if cfg.privacy:
        raise ConfigError("tuning trains without DP; leave [privacy] out of the configuration")
    target = parse_tune_metric(metric)
    fixed = dict(cfg.params)
    build_model(cfg.model, fixed)  # the fixed keywords are valid
    dims = dict(space) if space is not None else search_space(cls)
    check_space(cls.__name__, cls._parameter_constraints, dims)
    dims = {k: v for k, v in dims.items() if k not in fixed}
    if not dims:
        raise ConfigError(f"every searched parameter of {cls.__name__} is fixed by the configuration: nothing to tune")
    X = data if data is not None else (split.train if split is not None else load_data(cfg))
    split = split if split is not None else make_split(X, cfg)
    if split.valid is None or split.valid.nnz == 0:
        raise ConfigError(f"tuning selects on the validation part; this split ({cfg.protocol!r}) has none")
    identity = {
        **{k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("ks", "data_dir")},
        "model": cls.__name__,
        "metric": metric,
        "space": {k: repr(v) for k, v in sorted(dims.items())},
    }
    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=WARMUP_EPOCHS)
    study = open_study(run_dir, identity, cfg.seed, pruner)
    for params in enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        try:
            sampled = {name: dim.suggest(trial, name) for name, dim in dims.items()}
            params = model_params(cls, fixed, sampled, metric, cfg.seed)
            return fit_trial(build_model(cfg.model, params), split, target, trial)
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED, True)
            raise
        except TRIAL_ERRORS as err:
            trial.set_user_attr(ERROR, f"{type(err).__name__}: {err}")
            log.warning("trial %d failed: %s", trial.number, err)
            raise

    done = sum(counted(t) for t in study.trials)
    if done < trials:
        callbacks = [on_trial] if on_trial is not None else None
        study.optimize(objective, n_trials=trials - done, timeout=timeout, catch=TRIAL_ERRORS, callbacks=callbacks)
    return _finish(study, cfg, cls, fixed, metric, X, split, Path(run_dir), refit, t0)


def _finish(
    study: optuna.Study,
    cfg: ExperimentConfig,
    cls: type[Recommender],
    fixed: dict[str, Any],
    metric: str,
    X: Interactions,
    split: Split,
    run_dir: Path,
    refit: bool,
    t0: float,
) -> TuneResult:
    """The best trial refit and saved as the run `run_dir`, with the report and its figure."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        errors = [t.user_attrs[ERROR] for t in study.trials if ERROR in t.user_attrs]
        hint = f"; the first error: {errors[0]}" if errors else ""
        raise AdvrecError(f"no trial of {run_dir / STUDY_FILE} completed ({state_counts(study)}){hint}")
    best = study.best_trial
    params = model_params(cls, fixed, best.params, metric, cfg.seed)
    result = TuneResult(
        study, dict(best.params), float(best.values[0]), params, run_dir, metric, counts=state_counts(study)
    )
    study._storage.remove_session()  # type: ignore[attr-defined]
    engine = getattr(study._storage, "engine", None)  # type: ignore[attr-defined]
    if engine is not None:
        engine.dispose()  # no connection to the file while the run directory is swapped in
    if refit:
        k = parse_tune_metric(metric)[1]
        best_cfg = cfg.model_copy(update={"params": params, "ks": sorted({*cfg.ks, k})})
        extra = {"tuning": tuning_manifest(result)}
        _, result.refit = run_experiment(best_cfg, run_dir, X, split, extra=extra)
    result.wall_seconds = time.perf_counter() - t0
    write_report(result, cfg)
    return result


def tuning_manifest(result: TuneResult) -> dict[str, Any]:
    """What the manifest of the refit run records of its tuning."""
    return {
        "metric": result.metric,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "best_trial": result.study.best_trial.number,
        "trials": result.counts,
        "study": STUDY_FILE,
        "study_name": STUDY_NAME,
    }


# ---------------------------------------------------------------------- report
def importances(study: optuna.Study, seed: int = 0) -> tuple[dict[str, float], str | None]:
    """fANOVA importances of the searched parameters (seeded), or ({}, why not) with fewer than 2 complete trials
    or when they cannot be computed (e.g. every complete trial drew the same values)."""
    import optuna
    from optuna.trial import TrialState

    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < 2:
        return {}, f"parameter importances need at least 2 complete trials; the study has {n}"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), None
    except (RuntimeError, ValueError, ZeroDivisionError) as err:
        return {}, f"parameter importances could not be computed: {err}"


def plot_study(
    study: optuna.Study, path: Path, metric: str, title: str, imp: dict[str, float], note: str | None = None
) -> Path:
    """The optimisation history (each trial's validation value, pruned trials at their last report, the best so
    far) beside the parameters' importances `imp` (`note` in their place when there are none), as PNG."""
    from optuna.trial import TrialState

    from advrec.evaluation.report import pyplot, save_figure

    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter([t.number for t in done], [t.value for t in done], s=18, label="complete")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter([t.number for t in pruned], last, marker="x", color="grey", s=18, label="pruned (last report)")
    if done:
        order = sorted(done, key=lambda t: t.number)
        ax.step([t.number for t in order], np.maximum.accumulate([t.values[0] for t in order]), where="post",
                color="C3", label="best so far")  # fmt: skip
    ax.set_xlabel("trial")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("optimisation history", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
    numeric = [t.params[n] for t in done for n in t.params if isinstance(t.params[n], int | float)]
    if len(imp) == 1 and len(numeric) == len(done) and done:  # one parameter: its importance is 1; show the slice
        (name,) = imp
        bx.scatter(numeric, [t.values[0] for t in done], s=18)
        log_scale = any(getattr(t.distributions.get(name), "log", False) for t in done)
        bx.set_xscale("log" if log_scale else "linear")
        bx.set_xlabel(name)
        bx.set_ylabel(f"validation {metric}")
        bx.grid(alpha=0.3)
        bx.set_title(f"the one parameter, {name} (importance 1)", fontsize=9)
    elif imp:
        names = list(imp)[::-1]
        bx.barh(names, [imp[n] for n in names], color="C0")
        bx.set_xlabel("importance (fANOVA)")
    else:
        bx.axis("off")
        bx.text(0.5, 0.5, note or "", ha="center", va="center", wrap=True, fontsize=8)
    if len(imp) != 1:
        bx.set_title("parameter importances", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def report_markdown(result: TuneResult, cfg: ExperimentConfig, note: str | None, imp: dict[str, float]) -> str:
    """The tuning report: setting, best configuration, test metrics of the refit, importances, every trial."""
    study = result.study
    names = sorted({k for t in study.trials for k in t.params})
    lines = [
        f"# Tuning {cfg.model} on {cfg.dataset}",
        "",
        f"- selection: validation {result.metric} ({cfg.protocol} split, seed {cfg.seed}); TPE sampler, median pruner",
        f"- trials: {', '.join(f'{v} {k}' for k, v in sorted(result.counts.items()))}",
        f"- best: trial {study.best_trial.number}, validation {result.metric} {result.best_value:.4f}, "
        + ", ".join(f"{k}={_fmt(v)}" for k, v in result.best_params.items()),
        f"- wall time of this call: {result.wall_seconds:.1f} s; study: `{STUDY_FILE}` (resumes)",
    ]
    if result.refit is not None:
        summary = result.refit.report.summary
        keys = [k for k in summary if k.split("@")[0] in METRICS]
        lines += ["", "## Refit on train, tested", "", "| metric | test |", "|---|---|"]
        lines += [f"| {k} | {summary[k]:.4f} |" for k in keys]
    lines += ["", "## Parameter importances", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in imp.items()] if imp else [f"{note}"]
    lines += ["", f"![history and importances]({REPORT_PNG})", "", "## Trials", ""]
    lines += ["| trial | state | value | seconds | " + " | ".join(names) + " |", "|---" * (4 + len(names)) + "|"]
    for t in study.trials:
        state = INTERRUPTED if t.user_attrs.get(INTERRUPTED) else t.state.name.lower()
        value = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        )  # fmt: skip
        secs = t.duration.total_seconds() if t.duration is not None else None
        cells = [str(t.number), state, "" if value is None else f"{value:.4f}", "" if secs is None else f"{secs:.1f}"]
        lines.append("| " + " | ".join(cells + [_fmt(t.params.get(n, "")) for n in names]) + " |")
    return "\n".join(lines) + "\n"


def write_report(result: TuneResult, cfg: ExperimentConfig) -> Path:
    """`report.md` and `tuning.png` in the run directory."""
    title = f"{cfg.model} on {cfg.dataset}: validation {result.metric}"
    imp, note = importances(result.study, cfg.seed)
    plot_study(result.study, result.run_dir / REPORT_PNG, result.metric, title, imp, note)
    return atomic_write_text(result.run_dir / "report.md", report_markdown(result, cfg, note, imp))
