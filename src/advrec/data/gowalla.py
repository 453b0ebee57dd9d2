"""Gowalla as LightGCN and NGCF released it: `train.txt` / `test.txt` (`user item item ...` per line) and the
official split over them.

Users and items are indexed by the files' remapped ids (0..n-1, the ids of `train.txt`), so index, raw id and
the published files agree; the original Gowalla ids are in `user_features["org_id"]` / `item_features["org_id"]`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec.data.frames import DelimitedFile
from advrec.data.interactions import IdMap, Interactions
from advrec.data.registry import dataset_dir
from advrec.data.splits import Split, ratio_split
from advrec.errors import ConfigError, DataError

__all__ = ["gowalla_split", "load_gowalla", "read_id_list", "read_lightgcn", "read_user_items"]

_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[[ord(c) for c in "0123456789 \t\r\n"]] = True
_MAX_DIGITS = 18  # every id fits int64


def _line_error(path: Path, raw: bytes | np.ndarray, pos: int, problem: str) -> DataError:
    """A `DataError` naming the editor line that holds byte `pos` of the file."""
    buf = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes) else raw
    line = int(np.count_nonzero(buf[:pos] == 10)) + 1
    return DataError(f"{path}, line {line}: {problem}")


def _tokens(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every whitespace-separated non-negative integer of `raw`: (value, start byte, line index from 0)."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    ok = _ALLOWED[buf]
    if not ok.all():
        pos = int(np.argmin(ok))
        char = bytes(buf[pos : pos + 1]).decode("latin-1")
        raise _line_error(path, buf, pos, f"unexpected character {char!r}; expected ids (digits) separated by spaces")
    digit = (buf >= 48) & (buf <= 57)
    edge = np.diff(np.r_[False, digit, False].view(np.int8))
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    length = ends - starts
    if len(length) and length.max() > _MAX_DIGITS:
        pos = int(starts[np.argmax(length)])
        raise _line_error(path, buf, pos, f"an id of more than {_MAX_DIGITS} digits")
    # value of each token: its digits weighted by powers of ten counted from the token's end
    at = np.flatnonzero(digit)
    end_of = np.repeat(ends, length)
    contrib = (buf[at] - 48).astype(np.int64) * 10 ** (end_of - at - 1)
    values = np.add.reduceat(contrib, np.r_[0, np.cumsum(length)[:-1]]) if len(starts) else contrib
    line = np.searchsorted(np.flatnonzero(buf == 10), starts)
    return values, starts, line


def read_user_items(path: str | Path, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, line) of every pair in a file of lines `user item item ...` (blank lines ignored), checked.

    `line` is the editor line (from 1) each pair is on.
    Refused with the file and line named: a character other than digits and spaces, a user or item outside
    0..n-1, a user on two lines, an item twice on one line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    values, starts, line = _tokens(path, raw)
    if not len(values):
        raise DataError(f"{path}: the file holds no users")
    first = np.r_[True, line[1:] != line[:-1]]
    users, user_line = values[first], line[first]
    for what, vals, n in (("user", users, n_users), ("item", values[~first], n_items)):
        bad = np.flatnonzero(vals >= n)
        if len(bad):
            pos = int(starts[first if what == "user" else ~first][bad[0]])
            raise _line_error(path, raw, pos, f"{what} {int(vals[bad[0]])} is outside 0..{n - 1}")
    order = np.argsort(users, kind="stable")
    again = np.flatnonzero(users[order][1:] == users[order][:-1])
    if len(again):
        a, b = user_line[order[again[0]]] + 1, user_line[order[again[0] + 1]] + 1
        raise DataError(f"{path}, line {b}: user {int(users[order[again[0]]])} is also on line {a}")
    row = np.cumsum(first) - 1  # which user line each token belongs to
    u = users[row[~first]]
    i = values[~first]
    key = u * n_items + i
    order = np.argsort(key, kind="stable")
    twice = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(twice):
        pos = int(starts[~first][order[twice[0] + 1]])
        dup = order[twice[0]]
        raise _line_error(path, raw, pos, f"item {int(i[dup])} appears twice for user {int(u[dup])}")
    return u, i, line[~first] + 1


def read_id_list(path: str | Path, what: str) -> np.ndarray:
    """The original ids of a `user_list.txt` / `item_list.txt` (header `org_id remap_id`), by remapped id.

    Refused with the line named: a remap_id out of place (they must run 0, 1, 2, ... in order).
    """
    src = DelimitedFile(path, " ", quoted=False)
    df = src.read({"org_id": "id", "remap_id": "int"})
    remap = df["remap_id"].to_numpy()
    wrong = np.flatnonzero(remap != np.arange(len(remap)))
    if len(wrong):
        (line,) = src.line_of([int(wrong[0])])
        raise src.error(
            line, f"{what} remap_id {int(remap[wrong[0]])} where {int(wrong[0])} was expected (0, 1, 2, ...)"
        )
    return df["org_id"].to_numpy()


def _matrix(u: np.ndarray, i: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=shape)


def read_lightgcn(folder: str | Path, name: str = "") -> tuple[Interactions, Interactions]:
    """(train, test) of a LightGCN-format folder (`train.txt`, `test.txt`, `user_list.txt`, `item_list.txt`).

    Both share one pair of id maps, the remapped ids 0..n-1; the original ids are the `org_id` column of
    `user_features` / `item_features`. A (user, item) pair in both files is refused, naming both lines.
    """
    folder = Path(folder)
    user_org = read_id_list(folder / "user_list.txt", "user")
    item_org = read_id_list(folder / "item_list.txt", "item")
    shape = (len(user_org), len(item_org))
    users = IdMap(np.arange(shape[0], dtype=np.int64), name="user")
    items = IdMap(np.arange(shape[1], dtype=np.int64), name="item")
    train_u, train_i, train_line = read_user_items(folder / "train.txt", *shape)
    test_u, test_i, test_line = read_user_items(folder / "test.txt", *shape)
    train_key, test_key = train_u * shape[1] + train_i, test_u * shape[1] + test_i
    both, at_train, at_test = np.intersect1d(train_key, test_key, assume_unique=True, return_indices=True)
    if len(both):
        u, i = divmod(int(both[0]), shape[1])
        raise DataError(
            f"{folder / 'test.txt'}, line {test_line[at_test[0]]}: user {u} item {i} is also in "
            f"{folder / 'train.txt'}, line {train_line[at_train[0]]}; the two parts must not share a pair"
        )
    side = dict(
        user_features=pd.DataFrame({"org_id": user_org}),
        item_features=pd.DataFrame({"org_id": item_org}),
        name=name,
    )
    train = Interactions(_matrix(train_u, train_i, shape), users, items, **side)  # type: ignore[arg-type]
    test = Interactions(_matrix(test_u, test_i, shape), users, items, **side)  # type: ignore[arg-type]
    return train, test


def _read(data_dir: str | os.PathLike[str] | None, verify: bool) -> tuple[Interactions, Interactions]:
    return read_lightgcn(dataset_dir("gowalla", data_dir, verify=verify), name="gowalla")


def load_gowalla(
    data_dir: str | os.PathLike[str] | None = None, core: int | None = None, verify: bool = False
) -> Interactions:
    """All of Gowalla (the official train and test parts together) as implicit feedback (every value 1).

    29,858 users × 40,981 items, 1,027,370 interactions. `core` applies an iterative k-core filter (the data is
    already 10-core on items and 9-core on users). `verify` checks the files' sha256. The files are found under
    `<data home>/lightgcn-gowalla/`; they cannot be downloaded (the error says where to put them).
    """
    if core is not None and core < 0:
        raise ConfigError(f"core must be ≥ 0, not {core}")
    train, test = _read(data_dir, verify)
    X = train.with_matrix(train.matrix + test.matrix)
    if core:
        X = X.core_filter(core)
    X.meta = {
        "dataset": "gowalla",
        "min_rating": None,
        "core": core,
        "official_parts": {"train": train.nnz, "test": test.nnz},
    }
    return X


def gowalla_split(
    data_dir: str | os.PathLike[str] | None = None,
    valid_share: float | None = 0.1,
    random_state: int | np.random.Generator | None = 2020,
    verify: bool = False,
) -> Split:
    """The official LightGCN/NGCF split of Gowalla: test is `test.txt`; train is `train.txt` less validation.

    Validation (for model selection and early stopping) is carved from each user's training items with
    `ratio_split`'s rounding: ⌊valid_share·n⌋ of a user's n training items, one when 0 < valid_share·n < 1
    and n ≥ 2, never all of them (at least one stays in train). `valid_share=None` gives `valid=None` and the
    whole of `train.txt` as train: the final fit after model selection, as LightGCN trains. Test users' training
    and validation items are excluded from their ranking either way, as LightGCN excludes all of `train.txt`.
    """
    if valid_share is not None and not 0 < valid_share < 1:
        raise ConfigError(f"valid_share must lie in (0, 1) or be None, not {valid_share}")
    train, test = _read(data_dir, verify)
    protocol: dict[str, object] = {
        "name": "official",
        "dataset": "gowalla",
        "source": "train.txt and test.txt of the LightGCN/NGCF release",
        "valid_share": valid_share,
        "random_state": random_state if isinstance(random_state, int | None) else "generator",
    }
    if valid_share is None:
        protocol["description"] = "official LightGCN split, no validation (train = all of train.txt)"
        return Split(train=train, valid=None, test=test, protocol=protocol)
    carved = ratio_split(train, (1.0 - valid_share, valid_share, 0.0), random_state=random_state)
    protocol["description"] = (
        f"official LightGCN split, validation carved from train (share {valid_share}, seed {protocol['random_state']})"
    )
    return Split(train=carved.train, valid=carved.valid, test=test, protocol=protocol)
