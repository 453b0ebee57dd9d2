"""What one node holds: its users' training, validation and test rows, and nothing of anyone else's.

In a simulation every virtual node takes its rows from the whole split (all the data is on one machine anyway).
In a deployment each SuperNode is given one partition file (node config `data-file`), written by
`write_partitions`: a safetensors file of three CSR matrices (its users × the catalogue: train, valid, test) and
a small JSON header (partition id, partitions, catalogue and federation sizes). The node never opens the dataset.
Rows are the node's own users in a local order; item indices are the catalogue's, which the server shares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from advrec.data.splits import EvalSet, Split
from advrec.errors import DataError
from advrec.io import atomic_write

PARTS = ("train", "valid", "test")
HEADER_KEYS = ("partition-id", "num-partitions", "n-items", "n-users")


@dataclass(frozen=True)
class NodeData:
    """A node's users' rows (local user order, the catalogue's item indices)."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix

    @classmethod
    def of_split(cls, split: Split, users: np.ndarray) -> NodeData:
        """The rows of `users` in a ratio split (validation and test parts both present)."""
        if split.valid is None:
            raise DataError("a federated split needs a validation part")
        return cls(split.train.matrix[users], split.valid.matrix[users], split.test.matrix[users])

    def eval_set(self, part: str) -> EvalSet:
        """The node's users' task on `part`, as `Split.eval_set` poses it: ranked from the training history,
        training items excluded (and, for the test part, the validation items too). Built once per node (a node
        evaluates every few rounds)."""
        return self._eval_sets[part]

    @cached_property
    def _eval_sets(self) -> dict[str, EvalSet]:
        out = {}
        for part, target in (("valid", self.valid), ("test", self.test)):
            exclude = (self.train if part == "valid" else self.train + self.valid).astype(np.float32, copy=True)
            exclude.data[:] = 1.0
            out[part] = EvalSet(self.train, target, exclude.tocsr(), np.flatnonzero(np.diff(target.indptr) > 0))
        return out


def write_partition(path: Path, data: NodeData, header: Mapping[str, int]) -> Path:
    """One node's file, written whole or not at all."""
    from safetensors.numpy import save_file

    arrays: dict[str, np.ndarray] = {}
    for part in PARTS:
        m = getattr(data, part)
        arrays.update({f"{part}.indptr": m.indptr.astype(np.int64), f"{part}.indices": m.indices.astype(np.int64),
                       f"{part}.data": m.data.astype(np.float32)})  # fmt: skip
    meta = {"header": json.dumps({k: int(header[k]) for k in HEADER_KEYS})}
    return atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=meta))


def read_partition(path: str | Path) -> tuple[NodeData, dict[str, int]]:
    """A node's file and its header; a missing, foreign or inconsistent file is refused, naming the problem."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"partition file {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = json.loads((f.metadata() or {})["header"])
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, KeyError, ValueError, OSError) as err:
        raise DataError(f"{path} is not a partition file: {err}") from None
    if not isinstance(header, dict) or any(not isinstance(header.get(k), int) for k in HEADER_KEYS):
        raise DataError(f"{path}: the header must give integers {', '.join(HEADER_KEYS)}")
    mats = [_csr(path, part, arrays, header["n-items"]) for part in PARTS]
    if len({m.shape[0] for m in mats}) != 1:
        raise DataError(f"{path}: train, valid and test hold different numbers of users")
    return NodeData(*mats), header


def _csr(path: Path, part: str, arrays: Mapping[str, Any], n_items: int) -> sp.csr_matrix:
    try:
        indptr, indices, data = (np.asarray(arrays[f"{part}.{k}"]) for k in ("indptr", "indices", "data"))
    except KeyError as err:
        raise DataError(f"{path}: array {err.args[0]!r} is missing") from None
    ok = (indptr.ndim == indices.ndim == data.ndim == 1 and len(indptr) >= 1 and indptr[0] == 0
          and np.all(np.diff(indptr) >= 0) and indptr[-1] == len(indices) == len(data))  # fmt: skip
    if not ok:
        raise DataError(f"{path}: the {part} rows are not a CSR matrix (indptr, indices and data disagree)")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise DataError(f"{path}: the {part} rows name items outside the catalogue of {n_items}")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: the {part} values are not all finite")
    return sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(len(indptr) - 1, n_items))
