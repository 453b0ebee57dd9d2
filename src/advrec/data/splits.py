"""Evaluation protocols: per-user ratio split, leave-one-out, leave-last-out (the sequential protocol), global
temporal split, held-out users.

Every splitter returns a `Split` over the same id maps as its input, so an index means one thing in train,
validation and test. `Split.eval_set("valid" | "test")` states what a model sees (history), what it must
find (target) and what is removed from its ranking (exclude).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions
from advrec.errors import DataError
from advrec.io import atomic_write_parquet, atomic_write_text

PARTS = ("train", "valid", "test", "fold_in")


def as_generator(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy Generator from a seed, a Generator (returned as is) or None (fresh entropy)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


@dataclass
class EvalSet:
    """One evaluation task: rank items for `users` from `history`, minus `exclude`, against `target`.

    `candidates`, when set, are the only items ranked (e.g. the cold items of a cold-start protocol). `times`,
    when the data has timestamps, holds them on the pattern of `history` (the order sequential models read).
    """

    history: sp.csr_matrix
    target: sp.csr_matrix
    exclude: sp.csr_matrix
    users: np.ndarray
    candidates: np.ndarray | None = None
    times: sp.csr_matrix | None = None

    def timed_history(self) -> Interactions:
        """The history as `Interactions` with its timestamps (what a sequential model scores from)."""
        if self.times is None:
            raise DataError("this evaluation set has no timestamps: a sequential model needs the order of each history")
        n_users, n_items = self.history.shape
        ids = IdMap(np.arange(n_users), "user"), IdMap(np.arange(n_items), "item")
        return Interactions(self.history, *ids, timestamps=self.times.data)


@dataclass
class Split:
    """Train / validation / test parts over one id space (and fold-in rows for held-out users)."""

    train: Interactions
    valid: Interactions | None
    test: Interactions
    fold_in: Interactions | None = None
    protocol: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = ", ".join(f"{p}={getattr(self, p).nnz}" for p in PARTS if getattr(self, p) is not None)
        return f"Split({self.protocol.get('name', '?')}: {parts})"

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items

    def history(self) -> sp.csr_matrix:
        """What models see of each user: training rows plus fold-in rows of held-out users."""
        h = self.train.matrix
        if self.fold_in is not None:
            h = (h + self.fold_in.matrix).tocsr()
        return h

    def history_times(self) -> sp.csr_matrix | None:
        """The timestamps of `history()`, on its pattern (None when the data has none)."""
        return _times_of([p for p in (self.train, self.fold_in) if p is not None], self.history())

    def eval_set(self, on: str = "test", cold_only: bool = False) -> EvalSet:
        """The evaluation task on the validation or test part.

        History is train (+ fold-in). For the test part the validation items are excluded from the
        ranking too, as RecBole does, since they are known positives that are not test targets; under
        leave-last-out (the sequential protocol) they are part of the test history instead, as the interaction
        before the test one. `cold_only` (a `cold_items` split) ranks only that part's cold items.
        """
        if on not in ("valid", "test"):
            raise DataError(f"eval_set takes 'valid' or 'test', not {on!r}")
        part = self.valid if on == "valid" else self.test
        if part is None:
            raise DataError(f"this split has no {on} part")
        seen = [p for p in (self.train, self.fold_in) if p is not None]
        if on == "test" and self.valid is not None and self.protocol.get("name") == "leave_last_out":
            seen.append(self.valid)
        history = _union(seen)
        exclude = history
        if on == "test" and self.valid is not None:
            exclude = (history + self.valid.matrix).tocsr()
        exclude = exclude.copy()
        exclude.data[:] = 1.0
        users = np.flatnonzero(np.diff(part.matrix.indptr) > 0)
        candidates = None
        if cold_only:
            cold = self.protocol.get("cold_items", {}).get(on)
            if cold is None:
                raise DataError("cold_only needs a split made by cold_items")
            candidates = np.asarray(cold, dtype=np.int64)
        times = _times_of(seen, history)
        return EvalSet(history, part.matrix, exclude, users, candidates, times)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Writes the split as Parquet (one long table with a `part` column, plus id maps) and JSON."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        frames = []
        for part in PARTS:
            X = getattr(self, part)
            if X is None:
                continue
            df = X.to_frame(raw_ids=False)
            df["part"] = part
            frames.append(df)
        long = pd.concat(frames, ignore_index=True)
        atomic_write_parquet(path / "interactions.parquet", long)
        atomic_write_parquet(path / "users.parquet", self.train.users.to_frame())
        atomic_write_parquet(path / "items.parquet", self.train.items.to_frame())
        atomic_write_text(path / "split.json", json.dumps(self.protocol, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path, like: Interactions | None = None) -> Split:
        """Reads a split written by `save`. `like` re-attaches item/user side tables of the same data."""
        path = Path(path)
        for f in ("interactions.parquet", "users.parquet", "items.parquet", "split.json"):
            if not (path / f).exists():
                raise DataError(f"{path / f} is missing: not a split directory written by Split.save")
        users = IdMap.from_frame(pd.read_parquet(path / "users.parquet"), "user", path / "users.parquet")
        items = IdMap.from_frame(pd.read_parquet(path / "items.parquet"), "item", path / "items.parquet")
        long = pd.read_parquet(path / "interactions.parquet")
        _check_long(long, path / "interactions.parquet", len(users), len(items))
        protocol = json.loads((path / "split.json").read_text())
        side: dict[str, Any] = {}
        if like is not None:
            if like.users != users or like.items != items:
                raise DataError(f"the id maps in {path} differ from those of the data given as `like`")
            side = dict(item_features=like.item_features, user_features=like.user_features, name=like.name)
        parts: dict[str, Interactions | None] = {}
        has_time = "time" in long.columns
        for part in PARTS:
            df = long[long["part"] == part]
            if df.empty and part in ("valid", "fold_in"):
                parts[part] = None
                continue
            u = df["user"].to_numpy(np.int64)
            i = df["item"].to_numpy(np.int64)
            r = df["rating"].to_numpy(np.float64)
            t = df["time"].to_numpy(np.float64) if has_time else None
            parts[part] = Interactions._from_arrays(u, i, r, t, users, items, **side)
        return cls(protocol=protocol, **parts)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- helpers
def _union(parts: list[Interactions]) -> sp.csr_matrix:
    """The users×items matrix of disjoint parts together."""
    m = parts[0].matrix
    for p in parts[1:]:
        m = m + p.matrix
    return sp.csr_matrix(m)


def _times_of(parts: list[Interactions], history: sp.csr_matrix) -> sp.csr_matrix | None:
    """The parts' timestamps on the pattern of `history` (their union), or None when a part has none."""
    if any(p.timestamps is None for p in parts):
        return None
    rows = np.concatenate([np.repeat(np.arange(p.n_users), np.diff(p.matrix.indptr)) for p in parts])
    cols = np.concatenate([p.matrix.indices for p in parts])
    ts = np.concatenate([p.timestamps for p in parts])  # type: ignore[misc]
    order = np.lexsort((cols, rows))
    if not (np.array_equal(rows[order], np.repeat(np.arange(history.shape[0]), np.diff(history.indptr)))
            and np.array_equal(cols[order], history.indices)):  # fmt: skip
        raise DataError(
            "the timestamps of this split's parts do not line up with its history (a (user, item) pair in two parts?)"
        )
    return sp.csr_matrix((ts[order], history.indices.copy(), history.indptr.copy()), shape=history.shape)


def _check_long(long: pd.DataFrame, source: Path, n_users: int, n_items: int) -> None:
    """Refuses (naming `source`) a split table whose indices fall outside the id maps or whose values are
    not finite; rows are counted from 1."""
    for col in ("user", "item", "rating", "part"):
        if col not in long.columns:
            raise DataError(f"{source}: column {col!r} is missing; columns are {list(long.columns)}")
    for col, n in (("user", n_users), ("item", n_items)):
        v = long[col].to_numpy()
        if v.dtype.kind not in "iu":
            raise DataError(f"{source}: column {col!r} has dtype {v.dtype}, expected integer indices")
        bad = np.flatnonzero((v < 0) | (v >= n))
        if len(bad):
            raise DataError(f"{source}: column {col!r} has {v[bad[0]]} at row {bad[0] + 1}, outside 0..{n - 1}")
    for col in ("rating", "time"):
        if col not in long.columns:
            continue
        v = pd.to_numeric(long[col], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(v))
        if len(bad):
            raise DataError(f"{source}: column {col!r} has {long[col].iloc[bad[0]]} at row {bad[0] + 1}, not finite")
    unknown = ~long["part"].isin(PARTS).to_numpy()
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise DataError(f"{source}: column 'part' has {long['part'].iloc[row]!r} at row {row + 1}, not one of {PARTS}")


def _entries(X: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Row index of each stored entry (CSR order) and the user degree."""
    deg = np.diff(X.matrix.indptr)
    return np.repeat(np.arange(X.n_users), deg), deg


def _rank_within_user(rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Position (0-based) of each entry within its user when entries are ordered by `key`."""
    order = np.lexsort((key, rows))
    starts = np.r_[0, np.flatnonzero(np.diff(rows[order])) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - group_start
    return rank


def _assemble(
    X: Interactions, part_of: np.ndarray, protocol: dict[str, Any], names=("train", "valid", "test")
) -> Split:
    parts = {name: X.select_entries(part_of == code) for code, name in enumerate(names)}
    return Split(protocol=protocol, **parts)  # type: ignore[arg-type]


def _check_nonempty(X: Interactions) -> None:
    if X.nnz == 0:
        raise DataError("cannot split an empty interaction set")


# ---------------------------------------------------------------------- splitters
def ratio_split(
    X: Interactions,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    random_state: int | np.random.Generator | None = 2020,
) -> Split:
    """Per-user random split by ratios (RecBole's "RO" ordering with its rounding).

    For a user with n interactions, validation and test get ⌊r·n⌋ each and train the rest; a part whose
    r·n lies in (0, 1) still gets one interaction while train keeps more than one (RecBole's rule).
    """
    _check_nonempty(X)
    r = np.asarray(ratios, dtype=float)
    if r.shape != (3,) or (r < 0).any() or not np.isclose(r.sum(), 1.0):
        raise DataError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    rng = as_generator(random_state)
    rows, deg = _entries(X)
    rank = _rank_within_user(rows, rng.random(X.nnz))
    n = deg.astype(np.float64)
    cnt = np.floor(np.outer(n, r[1:]) + 1e-9).astype(np.int64)  # valid, test
    train = deg - cnt.sum(1)
    for j in (1, 0):  # RecBole walks the parts from the last one back
        small = (r[1 + j] * n > 0) & (r[1 + j] * n < 1)
        give = small & (train > 1)
        cnt[give, j] += 1
        train[give] -= 1
    # order within user: train first, then valid, then test
    n_train = train[rows]
    n_valid = cnt[rows, 0]
    part = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2))
    protocol = {"name": "ratio_split", "ratios": list(map(float, ratios)), "random_state": _seed_repr(random_state)}
    return _assemble(X, part, protocol)


def leave_one_out(X: Interactions, random_state: int | np.random.Generator | None = 2020) -> Split:
    """The latest interaction of each user is test, the one before is validation (ties broken by seed).

    Users with two interactions give one to test; users with one keep it in train.
    """
    return _latest_out(X, random_state, "leave_one_out")


def leave_last_out(X: Interactions, random_state: int | np.random.Generator | None = 2020) -> Split:
    """The sequential protocol (SASRec, BERT4Rec): the same parts as `leave_one_out`, but the test history is
    everything before the test interaction, the validation one included (`Split.eval_set`)."""
    return _latest_out(X, random_state, "leave_last_out")


def _latest_out(X: Interactions, random_state: int | np.random.Generator | None, name: str) -> Split:
    _check_nonempty(X)
    if X.timestamps is None:
        raise DataError(f"{name} needs timestamps; these interactions have none")
    rng = as_generator(random_state)
    rows, deg = _entries(X)
    tie = rng.random(X.nnz)
    order = np.lexsort((tie, X.timestamps, rows))
    rank = np.empty(X.nnz, dtype=np.int64)
    starts = np.r_[0, np.cumsum(deg)[:-1]]
    rank[order] = np.arange(X.nnz) - np.repeat(starts, deg)
    from_end = deg[rows] - 1 - rank  # 0 = latest
    part = np.zeros(X.nnz, dtype=np.int64)
    part[(from_end == 0) & (deg[rows] >= 2)] = 2
    part[(from_end == 1) & (deg[rows] >= 3)] = 1
    protocol = {"name": name, "random_state": _seed_repr(random_state)}
    return _assemble(X, part, protocol)


def temporal_split(
    X: Interactions,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Split:
    """Global time cut: the earliest `ratios[0]` of all interactions train, the next validation, the rest test.

    Cuts fall on timestamps, so interactions that share a timestamp stay together.
    """
    _check_nonempty(X)
    if X.timestamps is None:
        raise DataError("temporal_split needs timestamps; these interactions have none")
    r = np.asarray(ratios, dtype=float)
    if r.shape != (3,) or (r < 0).any() or not np.isclose(r.sum(), 1.0):
        raise DataError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    ts = X.timestamps
    t1 = np.quantile(ts, r[0], method="lower") if r[0] < 1 else np.inf
    t2 = np.quantile(ts, r[0] + r[1], method="lower") if r[0] + r[1] < 1 else np.inf
    part = np.where(ts <= t1, 0, np.where(ts <= t2, 1, 2))
    protocol = {"name": "temporal_split", "ratios": list(map(float, ratios)), "cuts": [float(t1), float(t2)]}
    return _assemble(X, part, protocol)


def holdout_users(
    X: Interactions,
    n_valid: int,
    n_test: int,
    fold_in: float = 0.8,
    min_heldout_size: int = 5,
    fold_in_items: int | None = None,
    random_state: int | np.random.Generator | None = 98765,
) -> Split:
    """Strong generalization (Liang et al., 2018, Mult-VAE): disjoint training, validation and test users.

    Validation and test users' interactions are split at random into a fold-in part (`fold_in` share, the
    model's input) and a held-out part (the target). With `fold_in_items = n` the fold-in part is exactly n
    random interactions instead (cold users with 1, 3, 5 known items) and the rest is held out; users with
    no more than n interactions keep them all as fold-in. Otherwise users with fewer than `min_heldout_size`
    interactions keep all of theirs as fold-in. Interactions with items never seen among training users
    are dropped from the validation and test users, as in the reference protocol.
    """
    _check_nonempty(X)
    if n_valid < 0 or n_test < 1 or n_valid + n_test >= X.n_users:
        raise DataError(f"n_valid={n_valid}, n_test={n_test} do not fit {X.n_users} users")
    if not 0 < fold_in < 1:
        raise DataError(f"fold_in must lie in (0, 1), got {fold_in}")
    if fold_in_items is not None and fold_in_items < 1:
        raise DataError(f"fold_in_items must be at least 1, got {fold_in_items}")
    rng = as_generator(random_state)
    perm = rng.permutation(X.n_users)
    role = np.zeros(X.n_users, dtype=np.int64)  # 0 train, 1 valid, 2 test
    role[perm[X.n_users - n_valid - n_test : X.n_users - n_test]] = 1
    role[perm[X.n_users - n_test :]] = 2
    rows, _ = _entries(X)
    cols = X.matrix.indices
    train_items = np.zeros(X.n_items, dtype=bool)
    train_items[cols[role[rows] == 0]] = True
    keep = (role[rows] == 0) | train_items[cols]
    rows_k = rows[keep]
    deg_k = np.bincount(rows_k, minlength=X.n_users)
    rank = np.full(X.nnz, -1, dtype=np.int64)
    rank[keep] = _rank_within_user(rows_k, rng.random(int(keep.sum())))
    if fold_in_items is not None:
        n_fold = np.minimum(deg_k, fold_in_items)
    else:
        n_fold = np.where(deg_k >= min_heldout_size, np.ceil(fold_in * deg_k - 1e-9), deg_k).astype(np.int64)
    # part codes: 0 train, 1 valid held-out, 2 test held-out, 3 fold-in, 4 dropped
    part = np.full(X.nnz, 4, dtype=np.int64)
    r = role[rows]
    part[keep & (r == 0)] = 0
    held = keep & (r > 0) & (rank >= n_fold[rows])
    part[held] = r[held]
    part[keep & (r > 0) & ~held] = 3
    protocol = {
        "name": "holdout_users",
        "n_valid": n_valid,
        "n_test": n_test,
        "fold_in": fold_in,
        "min_heldout_size": min_heldout_size,
        "fold_in_items": fold_in_items,
        "random_state": _seed_repr(random_state),
    }
    split = _assemble(X, part, protocol, names=("train", "valid", "test", "fold_in"))
    if n_valid == 0:
        split.valid = None
    return split


def cold_items(
    X: Interactions,
    fraction: float = 0.2,
    random_state: int | np.random.Generator | None = 2020,
) -> Split:
    """Item cold start: a random `fraction` of items loses all its interactions to evaluation.

    Half of those items (with all their interactions) form the validation part, the other half the test
    part; training holds only the remaining (warm) items' interactions. The cold item indices are in
    `protocol["cold_items"]`; `eval_set(on, cold_only=True)` ranks only them, the default ranks all items.
    """
    _check_nonempty(X)
    if not 0 < fraction < 1:
        raise DataError(f"fraction must lie in (0, 1), got {fraction}")
    rng = as_generator(random_state)
    interacted = np.flatnonzero(X.item_counts() > 0)
    n_cold = max(2, round(fraction * len(interacted)))
    if n_cold >= len(interacted):
        raise DataError(f"fraction {fraction} leaves no warm items among {len(interacted)}")
    cold = rng.choice(interacted, size=n_cold, replace=False)
    valid_items, test_items = np.sort(cold[: n_cold // 2]), np.sort(cold[n_cold // 2 :])
    role = np.zeros(X.n_items, dtype=np.int64)
    role[valid_items], role[test_items] = 1, 2
    part = role[X.matrix.indices]
    protocol = {
        "name": "cold_items",
        "fraction": fraction,
        "random_state": _seed_repr(random_state),
        "cold_items": {"valid": valid_items.tolist(), "test": test_items.tolist()},
    }
    return _assemble(X, part, protocol)


def _seed_repr(random_state: Any) -> Any:
    return random_state if isinstance(random_state, int | None) else "generator"
