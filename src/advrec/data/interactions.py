"""`Interactions` (users×items CSR plus id maps and side tables) and `IdMap` (raw id ↔ index)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec.errors import DataError, UnknownIdError


def _py(x: Any) -> Any:
    """A numpy scalar as the plain Python value (for readable messages)."""
    return x.item() if isinstance(x, np.generic) else x


class IdMap:
    """A bijection between raw ids (ints or strings) and contiguous indices 0..n-1."""

    def __init__(self, ids: Iterable[Any], name: str = "id") -> None:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray | pd.Index) else ids)
        if arr.dtype == object:
            arr = arr.astype(str)
        self.ids: np.ndarray = arr
        self.name = name
        self._index = pd.Index(arr)
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()][0]
            raise DataError(f"{name} ids must be unique; {_py(dup)!r} appears more than once")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, raw: Any) -> bool:
        return self._coerce(raw) in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.ids, other.ids)

    def __repr__(self) -> str:
        return f"IdMap({self.name}, n={len(self)})"

    def _coerce(self, raw: Any) -> Any:
        """Converts a raw id given as text (CLI, HTTP) to the map's dtype."""
        if self.ids.dtype.kind in "iu" and isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                return raw
        if self.ids.dtype.kind in "US" and not isinstance(raw, str):
            return str(raw)
        return raw

    def index(self, raw: Any) -> int:
        """Index of one raw id; raises `UnknownIdError` naming it."""
        key = self._coerce(raw)
        try:
            loc = self._index.get_loc(key)
        except (KeyError, TypeError):
            raise UnknownIdError(f"unknown {self.name} id {raw!r} (known: {len(self)} {self.name}s)") from None
        return int(loc)  # type: ignore[arg-type]

    def indices(self, raws: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Indices of many raw ids; raises `UnknownIdError` naming the first unknown one."""
        raws = np.asarray(raws)
        if raws.dtype.kind in "US" and self.ids.dtype.kind in "iu":
            try:
                raws = raws.astype(self.ids.dtype)
            except ValueError:
                pass
        elif raws.dtype.kind in "iuf" and self.ids.dtype.kind in "US":
            raws = raws.astype(str)
        idx = self._index.get_indexer(raws)
        if (idx < 0).any():
            bad = _py(raws[idx < 0][0])
            raise UnknownIdError(f"unknown {self.name} id {bad!r} (known: {len(self)} {self.name}s)")
        return idx.astype(np.int64)

    def raw(self, indices: int | np.ndarray) -> Any:
        """Raw id(s) of index or indices."""
        return self.ids[indices]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"index": np.arange(len(self), dtype=np.int64), self.name: self.ids})

    @classmethod
    def from_frame(cls, df: pd.DataFrame, name: str, source: str | Path = "id map") -> IdMap:
        """The map of a table written by `to_frame`: raw ids in column `name`, their indices in "index".

        Refuses (naming `source`, e.g. the file) a missing column, null or repeated raw ids, and indices that
        are not 0..n-1 each once.
        """
        for col in ("index", name):
            if col not in df.columns:
                raise DataError(f"{source}: column {col!r} is missing; columns are {list(df.columns)}")
        index, ids = df["index"].to_numpy(), df[name].to_numpy()
        if index.dtype.kind not in "iu":
            raise DataError(f"{source}: column 'index' has dtype {index.dtype}, expected integers")
        nulls = np.flatnonzero(pd.isna(ids))
        if len(nulls):
            raise DataError(f"{source}: column {name!r} has a null id at row {int(nulls[0]) + 1} (from 1)")
        order = np.argsort(index, kind="stable")
        wrong = np.flatnonzero(index[order] != np.arange(len(index)))
        if len(wrong):
            raise DataError(
                f"{source}: column 'index' must hold 0..{len(index) - 1} once each; "
                f"index {int(index[order][wrong[0]])} is out of place (missing, repeated or out of range)"
            )
        try:
            return cls(ids[order], name=name)
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None


@dataclass
class Interactions:
    """User–item interactions: a users×items CSR matrix (float32), id maps and optional side tables.

    `timestamps`, when present, is aligned with `matrix.data` (one value per stored entry, CSR order).
    `item_features` / `user_features` are DataFrames indexed by item / user index.
    """

    matrix: sp.csr_matrix
    users: IdMap
    items: IdMap
    timestamps: np.ndarray | None = None
    item_features: pd.DataFrame | None = None
    user_features: pd.DataFrame | None = None
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = sp.csr_matrix(self.matrix, dtype=np.float32)
        if not m.has_sorted_indices:
            m = m.copy()
            if self.timestamps is not None:
                ts = sp.csr_matrix((np.asarray(self.timestamps, dtype=np.float64), m.indices, m.indptr), m.shape)
                ts.sort_indices()
                self.timestamps = ts.data.astype(np.int64)
            m.sort_indices()
        self.matrix = m
        if m.shape != (len(self.users), len(self.items)):
            raise DataError(
                f"matrix shape {m.shape} does not match id maps ({len(self.users)} users, {len(self.items)} items)"
            )
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.int64)
            if len(self.timestamps) != m.nnz:
                raise DataError(f"timestamps has {len(self.timestamps)} values for {m.nnz} interactions")
        if m.nnz and not np.isfinite(m.data).all():
            raise DataError("interaction values contain NaN or infinity")

    # ------------------------------------------------------------------ properties
    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_users, self.n_items)

    def __repr__(self) -> str:
        density = self.nnz / max(1, self.n_users * self.n_items)
        label = f"{self.name}: " if self.name else ""
        return f"Interactions({label}{self.n_users} users × {self.n_items} items, {self.nnz} nnz, {density:.4%})"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        user: str = "user",
        item: str = "item",
        rating: str | None = None,
        time: str | None = None,
        users: IdMap | None = None,
        items: IdMap | None = None,
        duplicates: str = "last",
        name: str = "",
    ) -> Interactions:
        """Builds interactions from a long table. Unknown ids extend the maps unless maps are given.

        `duplicates`: "last" keeps the latest (by `time`, else by row order) of repeated (user, item)
        pairs; "sum" adds their values; "error" raises.
        """
        for col in (user, item, rating, time):
            if col is not None and col not in df.columns:
                raise DataError(f"missing column {col!r}; columns are {list(df.columns)}")
        if duplicates not in ("last", "sum", "error"):
            raise DataError(f"duplicates must be 'last', 'sum' or 'error', not {duplicates!r}")
        uvals = df[user].to_numpy()
        ivals = df[item].to_numpy()
        if users is None:
            users = IdMap(pd.unique(uvals), name="user")
        if items is None:
            items = IdMap(pd.unique(ivals), name="item")
        u = users.indices(uvals)
        i = items.indices(ivals)
        if rating is not None:
            r = pd.to_numeric(df[rating], errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(r)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"rating column {rating!r} has a missing or non-numeric value at row {row + 1} (from 1)"
                )
        else:
            r = np.ones(len(df), dtype=np.float64)
        t = None
        if time is not None:
            t = pd.to_numeric(df[time], errors="coerce").to_numpy(dtype=np.float64)
            if (~np.isfinite(t)).any():
                row = int(np.flatnonzero(~np.isfinite(t))[0])
                raise DataError(f"time column {time!r} has a missing or non-numeric value at row {row + 1} (from 1)")
        return cls._from_arrays(u, i, r, t, users, items, duplicates, name=name)

    @classmethod
    def _from_arrays(
        cls,
        u: np.ndarray,
        i: np.ndarray,
        r: np.ndarray,
        t: np.ndarray | None,
        users: IdMap,
        items: IdMap,
        duplicates: str = "last",
        name: str = "",
        **side: Any,
    ) -> Interactions:
        n_items = len(items)
        key = u.astype(np.int64) * n_items + i.astype(np.int64)
        # order rows by (key, time, position) so that the last of each key is the latest
        pos = np.arange(len(key))
        order = np.lexsort((pos, t if t is not None else pos, key))
        key, r = key[order], r[order]
        t = t[order] if t is not None else None
        last = np.ones(len(key), dtype=bool)
        last[:-1] = key[1:] != key[:-1]
        if not last.all():
            if duplicates == "error":
                k = key[~last][0]
                raise DataError(
                    f"duplicate interaction for user {users.raw(k // n_items)!r}, item {items.raw(k % n_items)!r}"
                )
            if duplicates == "sum":
                starts = np.flatnonzero(np.r_[True, last[:-1]])
                r = np.add.reduceat(r, starts)
            else:
                r = r[last]
            key = key[last]
            t = t[last] if t is not None else None
        m = sp.csr_matrix((r.astype(np.float32), (key // n_items, key % n_items)), shape=(len(users), n_items))
        # keys are sorted, so the CSR data order equals the key order and timestamps stay aligned
        return cls(m, users, items, timestamps=None if t is None else t.astype(np.int64), name=name, **side)

    def to_frame(self, raw_ids: bool = True) -> pd.DataFrame:
        """Long table with columns user, item, rating (and time)."""
        coo = self.matrix.tocoo()
        u, i = coo.row.astype(np.int64), coo.col.astype(np.int64)
        df = pd.DataFrame(
            {
                "user": self.users.raw(u) if raw_ids else u,
                "item": self.items.raw(i) if raw_ids else i,
                "rating": coo.data,
            }
        )
        if self.timestamps is not None:
            df["time"] = self.timestamps
        return df

    # ------------------------------------------------------------------ derived copies
    def _replace(self, matrix: sp.csr_matrix, timestamps: np.ndarray | None, **kw: Any) -> Interactions:
        args: dict[str, Any] = dict(
            users=self.users,
            items=self.items,
            item_features=self.item_features,
            user_features=self.user_features,
            name=self.name,
            meta=dict(self.meta),
        )
        args.update(kw)
        return Interactions(matrix, timestamps=timestamps, **args)

    def select_entries(self, mask: np.ndarray) -> Interactions:
        """Copy that keeps only the stored entries where `mask` (aligned with CSR data) is True."""
        mask = np.asarray(mask, dtype=bool)
        coo = self.matrix.tocoo()
        m = sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=self.shape, dtype=np.float32)
        ts = self.timestamps[mask] if self.timestamps is not None else None
        return self._replace(m, ts)

    def binarize(self, threshold: float | None = None) -> Interactions:
        """Implicit feedback: keep entries with value ≥ threshold (all when None), set them to 1."""
        keep = np.ones(self.nnz, dtype=bool) if threshold is None else self.matrix.data >= threshold
        out = self.select_entries(keep)
        out.matrix.data[:] = 1.0
        return out

    def subset(self, users: np.ndarray | None = None, items: np.ndarray | None = None) -> Interactions:
        """Copy restricted to the given user / item indices (boolean masks or index arrays), re-indexed."""
        uidx = np.arange(self.n_users) if users is None else _as_index(users, self.n_users)
        iidx = np.arange(self.n_items) if items is None else _as_index(items, self.n_items)
        # entry numbers 1..nnz ride through the slicing, so values and timestamps follow their entries
        pattern = sp.csr_matrix(
            (np.arange(1, self.nnz + 1, dtype=np.float64), self.matrix.indices, self.matrix.indptr), self.shape
        )
        sub_pattern = pattern[uidx][:, iidx].tocsr()
        sub_pattern.sort_indices()
        pick = sub_pattern.data.astype(np.int64) - 1
        m = sp.csr_matrix((self.matrix.data[pick], sub_pattern.indices, sub_pattern.indptr), sub_pattern.shape)
        ts = None if self.timestamps is None else self.timestamps[pick]
        uf = None if self.user_features is None else self.user_features.reindex(uidx).reset_index(drop=True)
        itf = None if self.item_features is None else self.item_features.reindex(iidx).reset_index(drop=True)
        return Interactions(
            m,
            IdMap(self.users.ids[uidx], "user"),
            IdMap(self.items.ids[iidx], "item"),
            timestamps=ts,
            item_features=itf,
            user_features=uf,
            name=self.name,
            meta=dict(self.meta),
        )

    def core_filter(self, core: int) -> Interactions:
        """Iteratively drops users and items with fewer than `core` interactions (k-core)."""
        if core <= 1:
            return self
        m = self.matrix
        ukeep = np.ones(self.n_users, dtype=bool)
        ikeep = np.ones(self.n_items, dtype=bool)
        while True:
            sub = m[ukeep][:, ikeep]
            udeg = np.diff(sub.indptr)
            ideg = np.bincount(sub.indices, minlength=sub.shape[1])
            ubad, ibad = udeg < core, ideg < core
            if not ubad.any() and not ibad.any():
                break
            ukeep[np.flatnonzero(ukeep)[ubad]] = False
            ikeep[np.flatnonzero(ikeep)[ibad]] = False
        return self.subset(ukeep, ikeep)

    def with_matrix(self, matrix: sp.spmatrix, timestamps: np.ndarray | None = None) -> Interactions:
        """Same id maps and side tables, another matrix of the same shape."""
        return self._replace(sp.csr_matrix(matrix, dtype=np.float32), timestamps)

    def user_counts(self) -> np.ndarray:
        return np.diff(self.matrix.indptr)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.matrix.indices, minlength=self.n_items)

    def titles(self) -> np.ndarray | None:
        """Item titles by index, when the item table has them."""
        if self.item_features is not None and "title" in self.item_features:
            return self.item_features["title"].to_numpy()
        return None


def _as_index(sel: np.ndarray, n: int) -> np.ndarray:
    sel = np.asarray(sel)
    if sel.dtype == bool:
        if len(sel) != n:
            raise DataError(f"boolean mask has length {len(sel)}, expected {n}")
        return np.flatnonzero(sel)
    return sel.astype(np.int64)


def as_csr(X: Interactions | sp.spmatrix | np.ndarray, what: str = "X") -> sp.csr_matrix:
    """The users×items CSR matrix of `X` (an `Interactions` or any 2-D sparse/dense matrix), checked."""
    if isinstance(X, Interactions):
        return X.matrix
    if sp.issparse(X) or isinstance(X, np.ndarray):
        m = sp.csr_matrix(X, dtype=np.float32)
        if m.ndim != 2:
            raise DataError(f"{what} must be a 2-D users×items matrix, got shape {m.shape}")
        if m.nnz and not np.isfinite(m.data).all():
            raise DataError(f"{what} contains NaN or infinity")
        return m
    raise DataError(f"{what} must be an Interactions or a scipy.sparse users×items matrix, not {type(X).__name__}")
