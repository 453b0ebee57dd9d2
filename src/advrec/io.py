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
from safetensors import SafetensorError
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


def join_state(
    arrays: dict[str, np.ndarray], scalars: dict[str, Any], where: str | Path = ARRAYS_FILE
) -> dict[str, Any]:
    """Inverse of `split_state`, with every array checked first (`where` names the file in errors).

    Float arrays must be finite; each sparse matrix needs its three parts, a shape of two non-negative
    ints, integer index arrays, an indptr that runs from 0 to nnz without decreasing, and column indices
    inside the shape.
    """
    arrays = dict(arrays)
    state: dict[str, Any] = {}
    for name, value in scalars.items():
        if isinstance(value, dict) and value.get("__sparse__") == "csr":
            state[name] = _sparse(name, value, arrays, where)
        else:
            state[name] = value
    for name, arr in arrays.items():
        check_finite(arr, f"array {name!r}", where)
    state.update(arrays)
    return state


def check_finite(arr: np.ndarray, what: str, where: str | Path) -> None:
    """Refuses NaN and ±Inf in a float array, naming the first bad entry."""
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        pos = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), arr.shape)
        at = ", ".join(str(int(i)) for i in pos)
        raise ModelFileError(f"{where}: {what} has {arr[pos]} at [{at}]; learned values must be finite")


def _sparse(name: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], where: str | Path) -> sp.csr_matrix:
    """The CSR matrix `name` from its three arrays (removed from `arrays`), checked."""
    shape = meta.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise ModelFileError(f"{where}: sparse array {name!r} has shape {shape!r}, expected two non-negative ints")
    rows, cols = shape
    parts = {}
    for part in ("data", "indices", "indptr"):
        key = f"{name}.{part}"
        if key not in arrays:
            raise ModelFileError(f"{where}: array {key!r} is missing (part of the sparse array {name!r})")
        arr = arrays.pop(key)
        if arr.ndim != 1:
            raise ModelFileError(f"{where}: array {key!r} has shape {arr.shape}, expected one dimension")
        if part != "data" and arr.dtype.kind not in "iu":
            raise ModelFileError(f"{where}: array {key!r} has dtype {arr.dtype}, expected an integer dtype")
        if part == "data" and arr.dtype.kind not in "iuf":
            raise ModelFileError(f"{where}: array {key!r} has dtype {arr.dtype}, expected a numeric dtype")
        parts[part] = arr
    data, indices, indptr = parts["data"], parts["indices"].astype(np.int64), parts["indptr"].astype(np.int64)
    nnz = len(indices)
    if len(indptr) != rows + 1:
        raise ModelFileError(
            f"{where}: array '{name}.indptr' has {len(indptr)} entries, expected {rows + 1} (rows + 1)"
        )
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ModelFileError(
            f"{where}: array '{name}.indptr' runs from {indptr[0]} to {indptr[-1]}, expected 0 to {nnz} (nnz)"
        )
    if (np.diff(indptr) < 0).any():
        row = int(np.flatnonzero(np.diff(indptr) < 0)[0])
        raise ModelFileError(f"{where}: array '{name}.indptr' decreases after row {row}")
    if len(data) != nnz:
        raise ModelFileError(f"{where}: array '{name}.data' has {len(data)} values for {nnz} indices")
    outside = (indices < 0) | (indices >= cols)
    if outside.any():
        bad = int(indices[outside][0])
        raise ModelFileError(
            f"{where}: array '{name}.indices' has index {bad} outside 0..{cols - 1} (the matrix has {cols} columns)"
        )
    check_finite(data, f"array '{name}.data'", where)
    return sp.csr_matrix((data, indices, indptr), shape=(rows, cols))


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


def model_dir(path: str | Path) -> Path:
    """The folder of model files at `path`: `path` itself, or `path/model` for a run directory."""
    path = Path(path)
    if path.is_dir() and not (path / PARAMS_FILE).exists() and (path / "model" / PARAMS_FILE).exists():
        return path / "model"
    return path


def read_model(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads a model folder written by `write_model`: (header, state), its arrays checked by `join_state`."""
    path = model_dir(path)
    pfile, afile = path / PARAMS_FILE, path / ARRAYS_FILE
    if not pfile.exists():
        raise ModelFileError(f"{pfile} is missing: {path} is not a saved advrec model")
    try:
        doc = json.loads(pfile.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{pfile} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("fitted", {}), dict):
        raise ModelFileError(f"{pfile}: expected an object with a 'fitted' object of learned values")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{pfile} has format_version {doc.get('format_version')!r}, expected {FORMAT_VERSION}")
    try:
        arrays = load_file(str(afile)) if afile.exists() else {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{afile} cannot be read as safetensors: {exc}") from None
    scalars = doc.pop("fitted", {})
    return doc, join_state(arrays, scalars, afile)
