"""Run directories: one folder per run with manifest, model, id maps, split and reports (DESIGN §3)."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import advrec
from advrec.data.interactions import IdMap, Interactions
from advrec.data.splits import Split
from advrec.errors import ModelFileError
from advrec.io import atomic_write_parquet, atomic_write_text, to_jsonable
from advrec.models.base import Recommender

MANIFEST = "manifest.json"


def versions() -> dict[str, str]:
    """Versions of Python and of the packages results depend on."""
    out = {"python": platform.python_version(), "advrec": advrec.__version__}
    for pkg in ("numpy", "scipy", "pandas", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of the source tree advrec runs from, when it is a git checkout."""
    try:
        here = Path(advrec.__file__).resolve().parent
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
        return res.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def new_run_dir(base: str | Path, name: str) -> Path:
    """A fresh folder `base/name-<UTC timestamp>` (suffixed when it already exists)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(base) / f"{name}-{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_data_maps(path: Path, X: Interactions) -> None:
    """Id maps and item titles as Parquet under `path/data`."""
    data = path / "data"
    data.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(data / "users.parquet", X.users.to_frame())
    items = X.items.to_frame()
    titles = X.titles()
    if titles is not None:
        items["title"] = titles
    atomic_write_parquet(data / "items.parquet", items)


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    base = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "git_commit": git_commit(),
    }
    atomic_write_text(path / MANIFEST, json.dumps(to_jsonable({**base, **manifest}), indent=2, default=str))


def save_run(
    path: str | Path,
    model: Recommender,
    data: Interactions,
    split: Split,
    dataset: dict[str, Any],
    metrics: dict[str, float] | None = None,
    timings: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes model, split, id maps and manifest of one trained model into `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / "model")
    split.save(path / "split")
    write_data_maps(path, data)
    manifest = {
        "dataset": dataset,
        "split": split.protocol,
        "model": {"class": type(model).__name__, "params": model.get_params()},
        "seed": model.get_params().get("random_state"),
        "wall_seconds": timings or {},
        "model_bytes": folder_size(path / "model"),
        "metrics": metrics or {},
        "training": {
            k: getattr(model, k) for k in ("epochs_run_", "best_epoch_", "epoch_seconds_") if hasattr(model, k)
        },
        **(extra or {}),
    }
    write_manifest(path, manifest)
    return path


@dataclass
class Run:
    """A run directory read back: manifest, model, id maps, titles and the split it was evaluated on."""

    path: Path
    manifest: dict[str, Any]
    model: Recommender
    users: IdMap
    items: IdMap
    titles: np.ndarray | None
    split: Split

    def history(self) -> Any:
        return self.split.history()


def load_run(path: str | Path) -> Run:
    """Reads a run directory written by `save_run` (or `advrec train`)."""
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise ModelFileError(f"{path / MANIFEST} is missing: {path} is not an advrec run directory")
    manifest = json.loads((path / MANIFEST).read_text())
    model = Recommender.load(path / "model")
    items_df = pd.read_parquet(path / "data" / "items.parquet")
    users = IdMap.from_frame(pd.read_parquet(path / "data" / "users.parquet"), "user")
    items = IdMap.from_frame(items_df, "item")
    titles = items_df.sort_values("index")["title"].to_numpy() if "title" in items_df else None
    split = Split.load(path / "split")
    return Run(path, manifest, model, users, items, titles, split)


class Timer:
    """Context manager that measures wall seconds into `.seconds`."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
