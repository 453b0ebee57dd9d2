"""Experiments: a validated configuration (TOML ↔ keyword arguments), and one train → evaluate → save step."""

from __future__ import annotations

import inspect
import shutil
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from advrec import distributed
from advrec.data.datasets import IMPLICIT_DATASETS, PUBLISHED_VALIDATION, load_dataset, official_split
from advrec.data.interactions import Interactions
from advrec.data.splits import (
    Split,
    cold_items,
    holdout_users,
    leave_last_out,
    leave_one_out,
    ratio_split,
    temporal_split,
)
from advrec.distributed.launch import job_setting
from advrec.errors import ConfigError
from advrec.evaluation.evaluate import Report, evaluate
from advrec.models.base import Recommender, model_class
from advrec.models.params import coerce, from_config, literal, validate_params
from advrec.models.torch_base import TorchRecommender

if TYPE_CHECKING:
    from advrec.tracking import Tracker
from advrec.runs import Timer, checkpoint_dir, save_run

Protocol = Literal[
    "ratio", "leave_one_out", "leave_last_out", "temporal", "holdout_users", "cold_items", "official", "official_full"
]
""""official": a dataset's published split (gowalla) with validation carved from train (`OFFICIAL_VALID_SHARE` of
each user's training items, seed `seed`), or its published validation part where it has one
(amazon-scientific-unisrec); "official_full": the same with all of train (and a published validation part) as train,
no validation."""

OFFICIAL_VALID_SHARE = 0.1


class ExperimentConfig(BaseModel):
    """One experiment: data, protocol, model and its constructor keyword arguments."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = "ml-100k"
    data_dir: str | None = None
    min_rating: float | None = 3.0
    core: int | None = None
    protocol: Protocol = "ratio"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    holdout: int = Field(default=0, ge=0, description="validation and test users each, for holdout_users")
    seed: int = 2020
    model: str = "EASE"
    params: dict[str, Any] = Field(default_factory=dict)
    privacy: dict[str, Any] = Field(
        default_factory=dict, description="DPConfig fields ([privacy] in TOML); empty: trained without DP"
    )
    ks: list[int] = Field(default_factory=lambda: [10, 20])


def config_from_dict(values: dict[str, Any], source: str = "configuration") -> ExperimentConfig:
    """Validates a configuration; an error names the bad key."""
    try:
        cfg = ExperimentConfig(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{source}: key {key!r}: {first['msg']}") from None
    build_model(cfg.model, cfg.params, source=source)
    if cfg.privacy:
        dp_config(cfg.privacy, source)
    return cfg


def dp_config(privacy: dict[str, Any], source: str = "configuration") -> Any:
    """The `advrec.privacy.dp.DPConfig` of a [privacy] table; an unknown key or a bad value names itself."""
    from dataclasses import fields

    from advrec.privacy.dp import DPConfig

    known = [f.name for f in fields(DPConfig)]
    for key in privacy:
        if key not in known:
            raise ConfigError(f"{source}: privacy has no setting {key!r}; settings: {known}")
    config = DPConfig(**privacy)
    try:
        config.check()
    except ConfigError as err:
        raise ConfigError(f"{source}: privacy: {err}") from None
    return config


def load_config(path: str | Path, model: str | None = None) -> ExperimentConfig:
    """Reads an experiment TOML file (top-level keys as in `ExperimentConfig`, model keywords under [params]).

    `model` (a model named on the command line) replaces the file's `model`, so [params] are checked against it.
    """
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if model is not None:
        values["model"] = model
    return config_from_dict(values, source=str(path))


def parse_assignments(items: list[str], model: str | None = None) -> dict[str, Any]:
    """`key=value` strings → dict. With `model`, the values of its declared parameters are read as their declared
    types (`advrec.models.params.coerce`); other values are Python literals (numbers, True, None, lists) or text."""
    cls = model_class(model) if model is not None else None
    constraints, owner = (cls._parameter_constraints, cls.__name__) if cls is not None else ({}, "")
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        out[key] = coerce(constraints, key, raw, owner) if key in constraints else literal(raw)
    return out


def build_model(name: str, params: dict[str, Any], source: str = "parameters") -> Recommender:
    """A model by name with keyword arguments, validated against its declaration before it is built; an unknown
    keyword or a refused value raises `ConfigError` naming it. Text and lists are read as the declared types."""
    cls = model_class(name)
    allowed = cls._param_names()
    for key in params:
        if key not in allowed:
            raise ConfigError(f"{source}: {cls.__name__} has no parameter {key!r}; parameters: {allowed}")
    constraints = cls._parameter_constraints
    try:
        values = {k: from_config(constraints, k, v, cls.__name__) for k, v in params.items()}
        defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()}
        validate_params(cls.__name__, constraints, {k: defaults.get(k) for k in allowed} | values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cls(**values)


def load_data(cfg: ExperimentConfig) -> Interactions:
    """The configuration's dataset; `min_rating` is not applied to implicit datasets (gowalla, the Amazon sequences:
    every value is 1)."""
    min_rating = None if cfg.dataset in IMPLICIT_DATASETS else cfg.min_rating
    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, min_rating=min_rating, core=cfg.core)


def _official_split(X: Interactions, cfg: ExperimentConfig) -> Split:
    """The dataset's published split; refused when `core` would have changed the data it is over."""
    if cfg.core:
        raise ConfigError(f"key 'core': the {cfg.protocol} protocol uses the published split as is; leave core unset")
    kw: dict[str, Any]
    if cfg.dataset in PUBLISHED_VALIDATION:
        kw = {"validation": cfg.protocol == "official"}
    else:
        kw = {"valid_share": OFFICIAL_VALID_SHARE if cfg.protocol == "official" else None, "random_state": cfg.seed}
    split = official_split(cfg.dataset, data_dir=cfg.data_dir, **kw)
    if split.train.users != X.users or split.train.items != X.items:
        raise ConfigError(f"key 'dataset': the official split of {cfg.dataset} is not over the users and items loaded")
    return split


def make_split(X: Interactions, cfg: ExperimentConfig) -> Split:
    """The split the configuration asks for."""
    if cfg.protocol in ("official", "official_full"):
        return _official_split(X, cfg)
    if cfg.protocol == "ratio":
        return ratio_split(X, cfg.ratios, random_state=cfg.seed)
    if cfg.protocol == "leave_one_out":
        return leave_one_out(X, random_state=cfg.seed)
    if cfg.protocol == "leave_last_out":
        return leave_last_out(X, random_state=cfg.seed)
    if cfg.protocol == "temporal":
        return temporal_split(X, cfg.ratios)
    if cfg.protocol == "cold_items":
        return cold_items(X, 1.0 - cfg.ratios[0], random_state=cfg.seed)
    n = cfg.holdout or max(1, X.n_users // 10)
    return holdout_users(X, n_valid=n, n_test=n, random_state=cfg.seed)


@dataclass
class Outcome:
    model: Recommender
    report: Report
    fit_seconds: float
    eval_seconds: float


def fit_evaluate(
    model: Recommender,
    split: Split,
    ks: list[int] | tuple[int, ...] = (10, 20),
    privacy: dict[str, Any] | None = None,
    checkpoint: Path | None = None,
    trackers: Sequence[Tracker] = (),
) -> Outcome:
    """Fits on train (early stopping on validation for models that use it), then evaluates on test. With
    `privacy` (DPConfig fields) the fit is `advrec.privacy.dp.fit_private`'s. `checkpoint`: a folder where a torch
    model that can resume saves its state every epoch (and resumes from it). `trackers` (`advrec.tracking`) log
    the parameters, a torch model's epochs, and the test metrics."""
    valid = split if split.valid is not None else None
    for tracker in trackers:
        tracker.log_params(model)
    with Timer() as fit_t:
        if privacy:
            from advrec.privacy.dp import fit_private

            fit_private(model, split.train, dp_config(privacy), valid=valid, watchers=trackers)  # type: ignore[arg-type]
        elif isinstance(model, TorchRecommender):
            resume = checkpoint if model.resumable else None
            model.fit(split.train, valid=valid, checkpoint=resume, plugins=trackers)
        else:
            model.fit(split.train, valid=valid)
    with Timer() as eval_t:
        report = evaluate(model, split, ks=ks)
    for tracker in trackers:
        tracker.finish(report.summary)
    return Outcome(model, report, fit_t.seconds, eval_t.seconds)


def run_experiment(
    cfg: ExperimentConfig,
    out: str | Path,
    X: Interactions | None = None,
    split: Split | None = None,
    extra: dict[str, Any] | None = None,
    trackers: Sequence[Tracker] = (),
) -> tuple[Path, Outcome]:
    """Loads data, splits, trains, evaluates and writes the run directory `out` (`extra`: more manifest entries).

    As a worker of a torchrun job every rank does the same, but rank 0 alone writes `out`; the manifest records
    the job (`advrec.distributed.launch.job_setting`). A torch model of such a job checkpoints every epoch in
    `<out>.checkpoint` (removed once the run is written), so a job that torchrun restarts resumes its fit."""
    X = X if X is not None else load_data(cfg)
    split = split if split is not None else make_split(X, cfg)
    params = dict(cfg.params)
    model = build_model(cfg.model, params)
    if "random_state" in model.get_params() and "random_state" not in params:
        model.set_params(random_state=cfg.seed)
    checkpoint = checkpoint_dir(out) if distributed.launched() else None
    outcome = fit_evaluate(model, split, cfg.ks, cfg.privacy, checkpoint, trackers)
    extra = {"config": cfg.model_dump(), **(extra or {})}
    if cfg.privacy:
        from advrec.privacy.dp import privacy_manifest

        extra["privacy"] = privacy_manifest(model)
    if distributed.launched():
        extra["distributed"] = job_setting()
    if not distributed.is_main():
        return Path(out), outcome
    path = save_run(
        out,
        model,
        X,
        split,
        dataset={
            "name": cfg.dataset,
            "min_rating": cfg.min_rating,
            "core": cfg.core,
            "shape": list(X.shape),
            "nnz": X.nnz,
        },
        metrics=outcome.report.summary,
        timings={"fit": outcome.fit_seconds, "evaluate": outcome.eval_seconds},
        extra=extra,
    )
    if checkpoint is not None and checkpoint.exists():
        shutil.rmtree(checkpoint)
    return path, outcome
