"""Run directories: one folder per run with manifest, model, id maps, split and reports (DESIGN §3)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import hashlib
import json
import logging
import os
import platform
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
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
from advrec.errors import DataError, ModelFileError
from advrec.io import atomic_write_parquet, atomic_write_text, to_jsonable
from advrec.models.base import Recommender

MANIFEST = "manifest.json"
REPORT_DIR = "report"  # `advrec report`'s page of the run (derived from its model; not carried by forget)
RENAME_EXCHANGE = 2  # renameat2 flag: swap the two paths
AT_FDCWD = -100  # renameat2: paths relative to the working directory

log = logging.getLogger(__name__)


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


def checkpoint_dir(run: str | Path) -> Path:
    """Where a torchrun job checkpoints the fit of the run `run` (`<run>.checkpoint`, beside it; removed once the
    run is written, left behind by a job that failed, for its restart)."""
    return Path(f"{run}.checkpoint")


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


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of each file under `folder`, by its relative name (sorted)."""
    out = {}
    for f in sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix()):
        h = hashlib.sha256()
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[f.relative_to(folder).as_posix()] = h.hexdigest()
    return out


def model_digest(digests: dict[str, str]) -> str:
    """One SHA-256 over the files of a model folder: each relative name with the SHA-256 of its bytes, sorted."""
    return hashlib.sha256("".join(f"{name}\0{d}\n" for name, d in sorted(digests.items())).encode()).hexdigest()


def run_manifest(
    model: Recommender,
    split: Split,
    model_dir: Path,
    dataset: dict[str, Any],
    metrics: dict[str, float] | None = None,
    timings: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a run whose model files are in `model_dir` (their digest included)."""
    digests = file_digests(model_dir)
    return {
        "dataset": dataset,
        "split": split.protocol,
        "model": {"class": type(model).__name__, "params": model.get_params()},
        "seed": model.get_params().get("random_state"),
        "wall_seconds": timings or {},
        "model_bytes": folder_size(model_dir),
        "metrics": metrics or {},
        "training": {
            k: getattr(model, k) for k in ("epochs_run_", "best_epoch_", "epoch_seconds_") if hasattr(model, k)
        },
        **(extra or {}),
        "model_digest": model_digest(digests),
        "model_files": digests,
    }


def save_run(
    path: str | Path,
    model: Recommender,
    data: Interactions,
    split: Split,
    dataset: dict[str, Any],
    metrics: dict[str, float] | None = None,
    timings: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
    carry: Callable[[Path], bool] | None = None,
) -> Path:
    """Writes model, split, id maps and manifest of one trained model as the run directory `path`.

    The run is written beside `path` and swapped in at once (`replace_dir`): a save that fails or is
    interrupted leaves an existing run as it was. Entries of the old run that `save_run` does not write
    (an event store, reports, audits) are carried into the new one; `carry(entry)` picks them (default all).
    """

    def build(tmp: Path) -> None:
        model.save(tmp / "model")
        split.save(tmp / "split")
        write_data_maps(tmp, data)
        write_manifest(tmp, run_manifest(model, split, tmp / "model", dataset, metrics, timings, extra))

    return replace_dir(path, build, carry)


# ---------------------------------------------------------------------- replacing a directory atomically
def replace_dir(path: str | Path, build: Callable[[Path], None], carry: Callable[[Path], bool] | None = None) -> Path:
    """Rebuilds the directory `path` in one step: `build(tmp)` fills a fresh sibling `tmp`, then `tmp` takes
    the place of `path`.

    Top-level entries of the old `path` that `build` did not create, and that `carry(entry)` accepts (default
    all), are carried into `tmp` before the swap as hard links (copies where linking fails), so a file another
    process holds open, such as an SQLite event store, keeps its inode under its name; entries that appear in
    the old directory during the swap are moved over after it. The swap is one `renameat2(RENAME_EXCHANGE)` on
    Linux; elsewhere the old directory is renamed aside and the new one renamed in, and between those two
    renames `path` is briefly absent (a reader then finds no run, never a mixed one). Any failure before the
    swap removes `tmp` and leaves `path` as it was. The new directory gets the old one's mode; the old one
    is removed last. A symlink at `path` is followed: its target is replaced.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ModelFileError(f"{path} exists and is not a directory: cannot write a run there")
    path.parent.mkdir(parents=True, exist_ok=True)
    old_mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    tmp = _fresh_sibling(path, "tmp", 0o777 if old_mode is None else 0o700)
    try:
        build(tmp)
        if old_mode is None:
            os.rename(tmp, path)
            return path
        os.chmod(tmp, old_mode)
        _carry_entries(path, tmp, carry, _link_tree)
        old = _swap(path, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        _carry_entries(old, path, carry, os.rename)
    except OSError as exc:
        log.warning("%s: an entry created during the swap could not be moved into the new directory: %s", path, exc)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _fresh_sibling(path: Path, tag: str, mode: int) -> Path:
    """A new, empty directory `.{name}.{tag}-<random>` beside `path`."""
    while True:
        candidate = path.parent / f".{path.name}.{tag}-{secrets.token_hex(6)}"
        try:
            candidate.mkdir(mode=mode)
            return candidate
        except FileExistsError:
            continue


def _carry_entries(
    src: Path, dst: Path, carry: Callable[[Path], bool] | None, put: Callable[[Path, Path], object]
) -> None:
    """`put(entry, dst / name)` for each entry of `src` whose name `dst` lacks and that `carry` accepts."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if target.exists() or target.is_symlink() or (carry is not None and not carry(entry)):
            continue
        put(entry, target)


def _link_tree(src: Path, dst: Path) -> None:
    """`dst` as hard links to the files under `src` (copies where linking fails); directories keep their modes."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        dst.mkdir(mode=0o700)
        for child in src.iterdir():
            _link_tree(child, dst / child.name)
        shutil.copystat(src, dst)
    else:
        try:
            os.link(src, dst)
        except FileNotFoundError:
            return  # removed meanwhile (e.g. a journal SQLite deletes after each transaction)
        except OSError:
            shutil.copy2(src, dst)


def _swap(path: Path, new: Path) -> Path:
    """Puts directory `new` at `path` and returns where the old directory now is."""
    if _exchange(new, path):
        return new
    aside = path.parent / f".{path.name}.old-{secrets.token_hex(6)}"
    os.rename(path, aside)
    try:
        os.rename(new, path)  # between these two renames `path` does not exist
    except BaseException:
        os.rename(aside, path)
        raise
    return aside


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2, where the platform has it."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swaps the paths `a` and `b` atomically; False where the system or file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


# ---------------------------------------------------------------------- reading a run back
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

    def scoring_history(self) -> Any:
        """What the model scores from: the history matrix, or for a sequential model the history as interactions
        with their timestamps (the order it reads)."""
        times = self.split.history_times()
        if not self.model.sequential or times is None:
            return self.history()
        return Interactions(self.history(), self.users, self.items, timestamps=times.data)


def load_run(path: str | Path) -> Run:
    """Reads a run directory written by `save_run`, refusing (`ModelFileError`) one whose parts disagree.

    Checked: the model files match the digest in the manifest; the manifest's model class is the saved one;
    the id maps in data/ are the split's; the model's item count (and user count, for a model that keeps
    one vector per user) is the split's; every file's own checks (`Recommender.load`, `Split.load`).
    """
    path = Path(path)
    manifest = read_manifest(path)
    check_model_files(path, manifest)
    model = Recommender.load(path / "model")
    recorded = manifest.get("model")
    saved = recorded.get("class") if isinstance(recorded, dict) else None
    if saved != type(model).__name__:
        raise ModelFileError(
            f"{path}: {MANIFEST} names model class {saved!r} but model/ holds a {type(model).__name__}"
        )
    data = path / "data"
    try:
        items_df = _read_table(data / "items.parquet")
        users = IdMap.from_frame(_read_table(data / "users.parquet"), "user", data / "users.parquet")
        items = IdMap.from_frame(items_df, "item", data / "items.parquet")
        split = Split.load(path / "split")
    except ModelFileError:
        raise
    except DataError as exc:  # its message names the file
        raise ModelFileError(str(exc)) from None
    except (OSError, ValueError) as exc:  # a Parquet file of the split that cannot be read
        raise ModelFileError(f"{path / 'split'}: a file cannot be read: {exc}") from None
    titles = items_df.sort_values("index")["title"].to_numpy() if "title" in items_df else None
    run = Run(path, manifest, model, users, items, titles, split)
    check_counts(run)
    return run


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the run directory `path`, as a dict."""
    file = path / MANIFEST
    if not file.exists():
        raise ModelFileError(f"{file} is missing: {path} is not an advrec run directory")
    try:
        doc = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{file} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{file}: expected a JSON object, found {type(doc).__name__}")
    return doc


def check_model_files(path: Path, manifest: dict[str, Any]) -> None:
    """Refuses a run whose model files differ from those the manifest's digest was computed over."""
    recorded = manifest.get("model_digest")
    if not isinstance(recorded, str) or not recorded:
        raise ModelFileError(
            f"{path / MANIFEST} records no model_digest, so {path}/model cannot be verified: "
            "save the run again with this version of advrec"
        )
    digests = file_digests(path / "model")
    if model_digest(digests) == recorded:
        return
    files = manifest.get("model_files")
    listed: dict[str, str] = files if isinstance(files, dict) else {}
    changed = sorted(n for n in set(digests) | set(listed) if digests.get(n) != listed.get(n)) if listed else []
    what = ", ".join(
        f"model/{n} ({'missing' if n not in digests else 'unexpected' if n not in listed else 'changed'})"
        for n in changed
    )
    raise ModelFileError(
        f"{path}: the model files do not match the model_digest in {MANIFEST}"
        f"{': ' + what if what else ''}; they were changed, truncated or replaced after the run was saved"
    )


def check_counts(run: Run) -> None:
    """Refuses a run whose model, split and id maps do not describe the same users and items."""
    split, model, where = run.split, run.model, run.path
    for kind, ours, theirs in (("user", run.users, split.train.users), ("item", run.items, split.train.items)):
        if len(ours) != len(theirs):
            raise ModelFileError(
                f"{where}: data/{kind}s.parquet has {len(ours)} {kind}s but split/{kind}s.parquet has {len(theirs)}"
            )
        if ours != theirs:
            i = int(np.flatnonzero(ours.ids != theirs.ids)[0])
            raise ModelFileError(
                f"{where}: data/{kind}s.parquet and split/{kind}s.parquet differ at index {i}: "
                f"{ours.ids[i].item()!r} vs {theirs.ids[i].item()!r}"
            )
    name = type(model).__name__
    if model.n_items_ != split.n_items:
        raise ModelFileError(
            f"{where}: the {name} in model/ scores {model.n_items_} items but the split has {split.n_items}"
        )
    if not model.uses_history and model.n_users_ != split.n_users:
        raise ModelFileError(
            f"{where}: the {name} in model/ keeps {model.n_users_} user vectors but the split has {split.n_users} "
            "users; each user would be served another user's list"
        )


def _read_table(file: Path) -> pd.DataFrame:
    if not file.exists():
        raise ModelFileError(f"{file} is missing")
    try:
        return pd.read_parquet(file)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{file} cannot be read as Parquet: {exc}") from None


class Timer:
    """Context manager that measures wall seconds into `.seconds`."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
