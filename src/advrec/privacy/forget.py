"""Forgetting a user: remove their data from every copy a run directory holds, and update its model.

The user's events leave the event store (the run's `events.db`, or the store a server writes to, SQLite or
PostgreSQL), their rows leave every part of the split (train, validation, test, fold-in) and their raw id leaves
the id maps. The model is then refitted on the remaining training data with its own parameters and seed: for Pop,
ItemKNN and EASE this recomputation is exact and cheap (their fit is a deterministic function of the training
matrix); for the neural models it is a full retraining, which gives exactly the model one would have trained
without the user (same seed, same code). A DP-trained MultVAE or BPRMF is retrained with the recorded noise
multiplier; a MultVAE trained on a DP release (`method="synthetic"`) is retrained on a new release of the same ε
drawn from the remaining users. The new run is written beside the old one and swapped in at once, so an
interrupted forget leaves the old run whole. The manifest counts forgettings (time, method, counts) without
naming the user.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from advrec.data.interactions import Interactions
from advrec.data.splits import PARTS, Split
from advrec.errors import UnknownIdError
from advrec.io import atomic_write_text
from advrec.models.base import Recommender
from advrec.models.torch_base import TorchRecommender
from advrec.runs import MANIFEST, REPORT_DIR, Run, checkpoint_dir, load_run, save_run

if TYPE_CHECKING:
    from advrec.serving.store import EventStore

EVENTS_FILE = "events.db"  # the event store `advrec serve` keeps in a run directory by default

EXACT = ("Pop", "ItemKNN", "EASE")


@dataclass
class ForgetResult:
    """What one forget did: how the model was updated and how many interactions and events were removed."""

    run_dir: Path
    method: str
    interactions_removed: int
    events_removed: int
    seconds: float


def drop_user(split: Split, user: int) -> Split:
    """The split without user index `user` (all parts, re-indexed users)."""
    keep = np.ones(split.n_users, dtype=bool)
    keep[user] = False
    parts: dict[str, Interactions | None] = {}
    for part in PARTS:
        X = getattr(split, part)
        parts[part] = None if X is None else X.subset(users=keep)
    return Split(protocol=dict(split.protocol), **parts)  # type: ignore[arg-type]


def refit(model: Recommender, split: Split) -> tuple[Recommender, str]:
    """A fresh model of the same class and parameters trained on `split` (as the run trained it)."""
    fresh = model.clone()
    valid = split if split.valid is not None else None
    record = model.privacy_
    if record is not None:
        from advrec.privacy.dp import DPConfig, fit_private

        synthetic = record.method == "synthetic"  # a release is calibrated by its ε
        config = DPConfig(
            epsilon=record.epsilon if synthetic else None,
            noise_multiplier=None if synthetic else record.noise_multiplier,
            delta=record.delta,
            max_grad_norm=record.max_grad_norm,
            accountant=record.accountant,
            popularity_epsilon=record.epsilon_popularity or 0.0,
            gram_rank=record.gram_rank if record.gram_rank is not None else DPConfig.gram_rank,
            method="synthetic" if synthetic else "sgd",
        )
        # fit_private refuses the model classes it cannot train privately
        private = fit_private(cast(TorchRecommender, fresh), split.train, config, valid=valid)
        if synthetic:
            how = "retraining on a new DP release (same ε)"
        elif record.gram_rank is not None:
            how = "recomputation (same DP noise scale)"
        else:
            how = "retraining (DP-SGD, same noise multiplier)"
        return private, how
    fresh.fit(split.train, valid=valid)
    name = type(model).__name__
    return fresh, "exact recomputation" if name in EXACT else "retraining (same parameters and seed)"


def forget_user(
    run_dir: str | Path,
    raw_user: Any,
    store: EventStore | None = None,
    store_url: str | None = None,
) -> ForgetResult:
    """Removes user `raw_user` from the run directory and its event store, and refits the model.

    The events are those of `store` (an open store, e.g. a server's), else of the store at `store_url`, else of
    the run's own `events.db` when there is one. A user known only from events is forgotten too (their events
    are deleted and the forgetting is recorded). Raises `UnknownIdError` when neither the run nor the store
    knows the user.
    """
    t0 = time.perf_counter()
    run = load_run(run_dir)
    with _event_store(run.path, store, store_url) as events:
        in_run = raw_user in run.users
        if not in_run and (events is None or not events.has_user(str(raw_user))):
            where = "the run or its event store" if events is not None else "the run (it has no event store)"
            raise UnknownIdError(f"user {raw_user!r} is not in {where}: already forgotten, or never there")
        # the events go first: from here on nothing serves the user from them, and a forget interrupted after
        # this point is completed by running it again (the user is still in the run)
        events_removed = events.delete_user(str(raw_user)) if events is not None else 0
    if not in_run:
        entry = _record(run.manifest, "events only (not in the training data)", 0, events_removed)
        atomic_write_text(run.path / MANIFEST, json.dumps({**run.manifest, "forgotten": entry}, indent=2))
        return ForgetResult(run.path, "events only", 0, events_removed, time.perf_counter() - t0)
    u = run.users.index(raw_user)
    removed = sum(int(getattr(run.split, p).matrix[u].nnz) for p in PARTS if getattr(run.split, p) is not None)
    split = drop_user(run.split, u)
    extra: dict[str, Any] = {}
    model: Recommender
    if "federated" in run.manifest:  # trained by a federation: run it again without the user, not centrally
        from advrec.federated.run import refederate

        model, extra["federated"] = refederate(run.manifest, split)
        method = "re-running the federation (same settings and seeds)"
    else:
        model, method = refit(run.model, split)
    _save_without(run, model, split, _record(run.manifest, method, removed, events_removed), t0, extra)
    return ForgetResult(run.path, method, removed, events_removed, time.perf_counter() - t0)


@contextmanager
def _event_store(run_dir: Path, store: EventStore | None, store_url: str | None) -> Iterator[EventStore | None]:
    """The store to forget from: the one given, else one opened from `store_url` or the run's `events.db`."""
    if store is not None:
        yield store
        return
    if store_url is None and not (run_dir / EVENTS_FILE).exists():
        yield None
        return
    from advrec.serving.store import open_store

    opened = open_store(store_url or f"sqlite:///{run_dir / EVENTS_FILE}")
    try:
        yield opened
    finally:
        opened.close()


def _record(manifest: dict[str, Any], method: str, removed: int, events: int) -> list[dict[str, Any]]:
    """The manifest's list of forgettings with one more entry: when, how, what was removed; never who."""
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": method,
        "interactions_removed": removed,
        "events_removed": events,
    }
    return [*manifest.get("forgotten", []), entry]


def _save_without(
    run: Run, model: Recommender, split: Split, forgotten: list[dict[str, Any]], t0: float, more: dict[str, Any]
) -> None:
    """Writes the run again without the user (atomically: the old run stays whole until the swap), with the
    manifest entries `more` (a federated run's new "federated")."""
    manifest = run.manifest
    data = split.train
    if run.titles is not None and (data.item_features is None or "title" not in data.item_features):
        import pandas as pd

        data = Interactions(data.matrix, data.users, data.items, item_features=pd.DataFrame({"title": run.titles}))
    extra: dict[str, Any] = {
        "forgotten": forgotten,
        # metrics of the old model no longer describe the new one: say so rather than keep stale numbers
        "metrics_note": "metrics removed by forget; run `advrec evaluate` for the refitted model",
    }
    if "config" in manifest:
        extra["config"] = manifest["config"]
    extra.update(more)
    if model.privacy_ is not None:
        from advrec.privacy.dp import privacy_manifest

        extra["privacy"] = privacy_manifest(model)
    timings = {**manifest.get("wall_seconds", {}), "forget": time.perf_counter() - t0}
    # `advrec report`'s page describes the model before the forgetting (its metrics, by name): not carried over
    save_run(run.path, model, data, split, dataset=manifest.get("dataset", {}), timings=timings, extra=extra,
             carry=lambda entry: entry.name != REPORT_DIR)  # fmt: skip
    leftover = checkpoint_dir(run.path)  # a failed torchrun job's checkpoint: weights trained on the user too
    if leftover.exists():
        shutil.rmtree(leftover)
