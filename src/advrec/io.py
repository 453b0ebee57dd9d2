"""Model files: `params.json` (class, constructor parameters, fitted scalars) + `arrays.safetensors`.

Loading never unpickles: arrays come from safetensors, everything else from JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from advrec.errors import ModelFileError

FORMAT_VERSION = 1
PARAMS_FILE = "params.json"
ARRAYS_FILE = "arrays.safetensors"


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Calls `write(tmp)` on a temporary file beside `path`, then renames it over `path`.

    A failed write leaves `path` as it was and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_parquet(path: str | Path, df: Any) -> Path:
    """A pandas DataFrame as Parquet (without its index), written atomically."""
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def to_jsonable(value: Any) -> Any:
    """Numpy scalars and arrays as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def split_state(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Separates learned state into arrays (for safetensors) and JSON values; sparse matrices become 3 arrays."""
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for name, value in state.items():
        if sp.issparse(value):
            csr = sp.csr_matrix(value)
            arrays[f"{name}.data"] = np.ascontiguousarray(csr.data)
            arrays[f"{name}.indices"] = np.ascontiguousarray(csr.indices.astype(np.int64))
            arrays[f"{name}.indptr"] = np.ascontiguousarray(csr.indptr.astype(np.int64))
            scalars[name] = {"__sparse__": "csr", "shape": list(csr.shape)}
        elif isinstance(value, np.ndarray) and value.dtype != object:
            arrays[name] = np.ascontiguousarray(value)
        else:
            scalars[name] = to_jsonable(value)
    return arrays, scalars


def join_state(arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `split_state`."""
    state: dict[str, Any] = {}
    for name, value in scalars.items():
        if isinstance(value, dict) and value.get("__sparse__") == "csr":
            state[name] = sp.csr_matrix(
                (arrays.pop(f"{name}.data"), arrays.pop(f"{name}.indices"), arrays.pop(f"{name}.indptr")),
                shape=tuple(value["shape"]),
            )
        else:
            state[name] = value
    state.update(arrays)
    return state


def write_model(path: str | Path, header: dict[str, Any], state: dict[str, Any]) -> Path:
    """Writes a model folder: arrays first, then params.json last, each atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays, scalars = split_state(state)
    meta = {"format": "advrec", "version": str(FORMAT_VERSION)}
    atomic_write(path / ARRAYS_FILE, lambda tmp: save_file(arrays, tmp, metadata=meta))
    doc = {"format_version": FORMAT_VERSION, **to_jsonable(header), "fitted": to_jsonable(scalars)}
    atomic_write_text(path / PARAMS_FILE, json.dumps(doc, indent=2))
    return path


def read_model(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads a model folder written by `write_model`: (header, state)."""
    path = Path(path)
    if path.is_dir() and not (path / PARAMS_FILE).exists() and (path / "model" / PARAMS_FILE).exists():
        path = path / "model"
    pfile, afile = path / PARAMS_FILE, path / ARRAYS_FILE
    if not pfile.exists():
        raise ModelFileError(f"{pfile} is missing: {path} is not a saved advrec model")
    try:
        doc = json.loads(pfile.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{pfile} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{pfile} has format_version {doc.get('format_version')!r}, expected {FORMAT_VERSION}")
    arrays = load_file(str(afile)) if afile.exists() else {}
    scalars = doc.pop("fitted", {})
    return doc, join_state(dict(arrays), scalars)
