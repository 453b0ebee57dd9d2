"""Forgetting a user: remove their data from a run directory and update its model.

The user's rows leave every part of the split (train, validation, test, fold-in) and their raw id leaves the id
maps. The model is then refitted on the remaining training data with its own parameters and seed: for Pop,
ItemKNN and EASE this recomputation is exact and cheap (their fit is a deterministic function of the training
matrix); for the neural models it is a full retraining, which gives exactly the model one would have trained
without the user (same seed, same code). A DP-trained MultVAE or BPRMF is retrained with the recorded noise
multiplier; a MultVAE trained on a DP release (`method="synthetic"`) is retrained on a new release of the same ε
drawn from the remaining users. The manifest counts forgettings (time, method) without naming the user.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from advrec.data.interactions import Interactions
from advrec.data.splits import PARTS, Split
from advrec.errors import UnknownIdError
from advrec.models.base import Recommender
from advrec.models.torch_base import TorchRecommender
from advrec.runs import MANIFEST, load_run, save_run

EXACT = ("Pop", "ItemKNN", "EASE")


@dataclass
class ForgetResult:
    run_dir: Path
    method: str
    interactions_removed: int
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
    if hasattr(model, "epsilon_"):
        from advrec.privacy.dp import DPConfig, fit_private

        synthetic = getattr(model, "dp_method_", "sgd") == "synthetic"  # a release is calibrated by its ε
        config = DPConfig(
            epsilon=float(getattr(model, "epsilon_")) if synthetic else None,  # noqa: B009
            noise_multiplier=None if synthetic else float(getattr(model, "noise_multiplier_")),  # noqa: B009
            delta=float(getattr(model, "delta_")),  # noqa: B009
            max_grad_norm=float(getattr(model, "max_grad_norm_", 1.0)),
            accountant=str(getattr(model, "accountant_")),  # noqa: B009
            popularity_epsilon=float(getattr(model, "epsilon_popularity_", 0.0)),
            gram_rank=int(getattr(model, "gram_rank_", DPConfig.gram_rank)),
            method="synthetic" if synthetic else "sgd",
        )
        # fit_private refuses the model classes it cannot train privately
        private = fit_private(cast(TorchRecommender, fresh), split.train, config, valid=valid)
        if synthetic:
            how = "retraining on a new DP release (same ε)"
        elif hasattr(model, "gram_rank_"):
            how = "recomputation (same DP noise scale)"
        else:
            how = "retraining (DP-SGD, same noise multiplier)"
        return private, how
    fresh.fit(split.train, valid=valid)
    name = type(model).__name__
    return fresh, "exact recomputation" if name in EXACT else "retraining (same parameters and seed)"


def forget_user(run_dir: str | Path, raw_user: Any) -> ForgetResult:
    """Removes user `raw_user` from the run directory and refits its model in place."""
    t0 = time.perf_counter()
    run = load_run(run_dir)
    if raw_user not in run.users:
        raise UnknownIdError(f"user {raw_user!r} is not in the run {run.path} (already forgotten, or never there)")
    u = run.users.index(raw_user)
    removed = sum(int(getattr(run.split, p).matrix[u].nnz) for p in PARTS if getattr(run.split, p) is not None)
    split = drop_user(run.split, u)
    model, method = refit(run.model, split)
    manifest = run.manifest
    history = [
        *manifest.get("forgotten", []),
        {"at": datetime.now(UTC).isoformat(timespec="seconds"), "method": method, "interactions_removed": removed},
    ]
    data = split.train
    if run.titles is not None and (data.item_features is None or "title" not in data.item_features):
        import pandas as pd

        data = Interactions(data.matrix, data.users, data.items, item_features=pd.DataFrame({"title": run.titles}))
    extra: dict[str, Any] = {"forgotten": history}
    if "config" in manifest:
        extra["config"] = manifest["config"]
    if hasattr(model, "epsilon_"):
        from advrec.privacy.dp import privacy_manifest

        extra["privacy"] = privacy_manifest(model)
    save_run(
        run.path,
        model,
        data,
        split,
        dataset=manifest.get("dataset", {}),
        metrics=None,
        timings={**manifest.get("wall_seconds", {}), "forget": time.perf_counter() - t0},
        extra=extra,
    )
    # metrics of the old model no longer describe the new one: say so rather than keep stale numbers
    doc = json.loads((run.path / MANIFEST).read_text())
    doc["metrics_note"] = "metrics removed by forget; run `advrec evaluate` for the refitted model"
    from advrec.io import atomic_write_text

    atomic_write_text(run.path / MANIFEST, json.dumps(doc, indent=2))
    return ForgetResult(run.path, method, removed, time.perf_counter() - t0)
