"""Amazon review datasets with item text, as ordered sequences for sequential recommendation.

- `amazon-scientific-unisrec`: UniSRec's "Scientific" (Industrial & Scientific, Amazon 2018), RecBole atomic
  files `Scientific.{train,valid,test}.inter` (one row per target: user, the ≤50 items before it, the target),
  `Scientific.text` (ASIN → "title. category path. brand. "), `Scientific.item2index` / `Scientific.user2index`.
  It comes with its published leave-last-out split (`amazon_scientific_split`).
- `amazon-office-2014-5core`: Office Products 5-core (Amazon 2014) in LC-Rec-style JSON: `Office.inter.json`
  (`{"user": [item, ...]}`) and `Office.item.json` (`{"item": {"title", "description", "brand", "categories"}}`).

Neither carries timestamps, only order: `timestamps` holds each interaction's position in its user's sequence
(0, 1, 2, ...). A CSR cell holds one interaction, so when a user has the same item more than once (a repeat
purchase) the latest occurrence is kept, with its position, and the earlier ones are dropped and counted in
`meta["repeats_dropped"]`.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec.data.frames import DelimitedFile, read_head
from advrec.data.interactions import IdMap, Interactions
from advrec.data.registry import dataset_dir
from advrec.data.splits import Split
from advrec.errors import ConfigError, DataError

__all__ = [
    "OFFICE",
    "SCIENTIFIC",
    "amazon_scientific_split",
    "load_amazon_office",
    "load_amazon_scientific",
    "read_lcrec",
    "read_unisrec",
]

SCIENTIFIC = "amazon-scientific-unisrec"
OFFICE = "amazon-office-2014-5core"

_USER, _HIST, _TARGET = "user_id:token", "item_id_list:token_seq", "item_id:token"
_PARTS = ("train", "valid", "test")
_OFFICE_FIELDS = ("title", "description", "brand", "categories")


# ---------------------------------------------------------------------- latest occurrence per (user, item)
@dataclass
class _Kept:
    """The CSR matrix of a set of occurrences, one cell per (user, item), and which occurrence each cell keeps."""

    matrix: sp.csr_matrix
    kept: np.ndarray  # index of the occurrence behind each stored entry, in CSR order
    repeated_pairs: int  # (user, item) pairs that occur more than once


def _latest(u: np.ndarray, i: np.ndarray, pos: np.ndarray, shape: tuple[int, int]) -> _Kept:
    """One entry per (user, item): its latest occurrence (largest position), the earlier ones dropped."""
    key = u * shape[1] + i
    order = np.lexsort((pos, key))
    sorted_key = key[order]
    last = np.r_[sorted_key[1:] != sorted_key[:-1], True]
    kept = order[last]  # sorted by key, i.e. CSR order (user, then item)
    first = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    repeated = int(np.count_nonzero(first & ~last))  # groups whose first occurrence is not their last
    m = sp.csr_matrix((np.ones(len(kept), dtype=np.float32), (u[kept], i[kept])), shape=shape)
    return _Kept(m, kept, repeated)


# ---------------------------------------------------------------------- UniSRec / RecBole atomic files
def _read_index(path: Path, what: str) -> np.ndarray:
    """The raw ids of a `raw_id<TAB>index` file (no header), by index; indices must run 0, 1, 2, ... in order."""
    src = DelimitedFile(path, "\t", names=["id", "index"], quoted=False)
    df = src.read({"id": "text", "index": "int"})
    src.check_unique(df, ["id"], f"{what} id")
    index = df["index"].to_numpy()
    wrong = np.flatnonzero(index != np.arange(len(index)))
    if len(wrong):
        (line,) = src.line_of([int(wrong[0])])
        raise src.error(line, f"{what} index {int(index[wrong[0]])} where {int(wrong[0])} was expected (0, 1, 2, ...)")
    return df["id"].str.strip().to_numpy().astype(str)


@dataclass
class _Rows:
    """The rows of one `.inter` file: user, target, history (flat, with each row's start) and editor line."""

    src: DelimitedFile
    user: np.ndarray
    target: np.ndarray
    hist: np.ndarray
    hist_start: np.ndarray
    hist_len: np.ndarray

    def line(self, row: int) -> int:
        return self.src.line_of([row])[0]


def _read_inter(path: Path, n_users: int, n_items: int) -> _Rows:
    """Parses and range-checks a `.inter` file (header `user_id:token  item_id_list:token_seq  item_id:token`)."""
    src = DelimitedFile(path, "\t", quoted=False)
    df = src.read({_USER: "int", _TARGET: "int"})
    if _HIST not in df.columns:
        raise src.error(1, f"missing column {_HIST!r}; the columns are {list(df.columns)}")
    tokens = df[_HIST].fillna("").str.split()
    hist_len = tokens.map(len).to_numpy(np.int64)
    flat = [t for row in tokens for t in row]
    try:
        hist = np.array(flat, dtype=np.int64) if flat else np.zeros(0, dtype=np.int64)
    except (ValueError, OverflowError):
        odd = (r for r, row in enumerate(tokens) if any(not re.fullmatch(r"[0-9]{1,18}", t) for t in row))
        at = next(odd, None)
        line, value = (None, "") if at is None else (src.line_of([at])[0], f" {df[_HIST].iloc[at]!r}")
        raise src.error(line, f"{_HIST}{value} holds a token that is not an item index") from None
    start = np.r_[0, np.cumsum(hist_len)[:-1]].astype(np.int64)
    rows = _Rows(src, df[_USER].to_numpy(np.int64), df[_TARGET].to_numpy(np.int64), hist, start, hist_len)
    row_of_token = np.repeat(np.arange(len(df)), hist_len)
    checks = [("user", rows.user, n_users), ("item", rows.target, n_items), ("history item", hist, n_items)]
    for what, values, n in checks:
        bad = np.flatnonzero((values < 0) | (values >= n))
        if len(bad):
            row = int(row_of_token[bad[0]] if what == "history item" else bad[0])
            raise src.error(rows.line(row), f"{what} {int(values[bad[0]])} is outside 0..{n - 1}")
    return rows


def _check_one_row_per_user(rows: _Rows, n_users: int, part: str) -> None:
    """Every user has exactly one row in the validation and the test file."""
    count = np.bincount(rows.user, minlength=n_users)
    if (count > 1).any():
        u = int(np.flatnonzero(count > 1)[0])
        first, second = np.flatnonzero(rows.user == u)[:2]
        problem = f"user {u} has a second {part} row (the first is on line {rows.line(int(first))}); one per user"
        raise rows.src.error(rows.line(int(second)), problem)
    if (count == 0).any():
        u = int(np.flatnonzero(count == 0)[0])
        raise DataError(f"{rows.src.path}: user {u} has no row; every user needs one {part} row")


def _check_train_grouped(rows: _Rows) -> None:
    """A user's training rows are consecutive (longest history first), so their reversed order is time order."""
    run_start = np.flatnonzero(np.r_[True, rows.user[1:] != rows.user[:-1]])
    run_user = rows.user[run_start]
    again = pd.Series(run_user).duplicated().to_numpy()
    if again.any():
        r = int(run_start[np.argmax(again)])
        problem = f"user {int(rows.user[r])}'s rows resume after other users' rows; a user's rows must be consecutive"
        raise rows.src.error(rows.line(r), problem)


@dataclass
class _Sequences:
    """Every occurrence of the rebuilt sequences: user, item, position in the user's sequence, part (0/1/2)."""

    user: np.ndarray
    item: np.ndarray
    pos: np.ndarray
    part: np.ndarray


def _rebuild(parts: list[_Rows], n_users: int) -> _Sequences:
    """Each user's sequence: the first row's history, then the targets of the reversed training rows, the
    validation row and the test row. Refuses (naming file and line) a row whose history is not the ≤ max_len
    items before its target in that sequence."""
    n_rows = [len(p.user) for p in parts]
    user = np.concatenate([p.user for p in parts])
    part = np.repeat(np.arange(3), n_rows)
    row = np.concatenate([np.arange(n) for n in n_rows])  # row within its file
    order = np.lexsort((np.where(part == 0, -row, 0), part, user))  # per user: train reversed, valid, test
    user, part, row = user[order], part[order], row[order]
    target = np.concatenate([p.target for p in parts])[order]
    hist_len = np.concatenate([p.hist_len for p in parts])[order]
    hist_start = np.concatenate([p.hist_start + sum(len(q.hist) for q in parts[:k]) for k, p in enumerate(parts)])
    hist_start = hist_start[order]
    hist = np.concatenate([p.hist for p in parts])
    count = np.bincount(user, minlength=n_users)
    first_row = np.r_[0, np.cumsum(count)[:-1]]
    prefix = hist_len[first_row]  # items before the first target: the first row's history
    seq_len = prefix + count
    seq_start = np.r_[0, np.cumsum(seq_len)[:-1]]
    rank = np.arange(len(user)) - first_row[user]
    pos = prefix[user] + rank  # position of each row's target
    items = np.empty(int(seq_len.sum()), dtype=np.int64)
    items[seq_start[user] + pos] = target
    prefix_at = np.repeat(seq_start, prefix) + _ranges(prefix)
    items[prefix_at] = hist[np.repeat(hist_start[first_row], prefix) + _ranges(prefix)]
    r = _first_wrong_history(items, seq_start[user] + pos, pos, hist, hist_start, hist_len)
    if r is not None:
        src = parts[int(part[r])]
        raise src.src.error(
            src.line(int(row[r])),
            f"the history of user {int(user[r])} ({int(hist_len[r])} items) is not the items before its target at "
            f"position {int(pos[r])} of the rebuilt sequence (training rows reversed, then the validation row, then "
            "the test row)",
        )
    seq_user = np.repeat(np.arange(n_users), seq_len)
    seq_part = np.zeros(len(items), dtype=np.int64)
    seq_part[seq_start[user] + pos] = part
    return _Sequences(seq_user, items, _ranges(seq_len), seq_part)


def _first_wrong_history(
    items: np.ndarray, at: np.ndarray, pos: np.ndarray, hist: np.ndarray, start: np.ndarray, length: np.ndarray
) -> int | None:
    """The first row whose history is not the min(position, max_len) items just before its target, which sits at
    `items[at]` (position `pos` in its sequence); max_len is the longest history of any row. None when all agree."""
    max_len = int(length.max()) if len(length) else 0
    bad = list(np.flatnonzero(length != np.minimum(pos, max_len))[:1])
    expected = items[np.clip(np.repeat(at - length, length) + _ranges(length), 0, len(items) - 1)]
    wrong = np.flatnonzero(expected != hist[np.repeat(start, length) + _ranges(length)])
    if len(wrong):
        bad.append(np.searchsorted(np.cumsum(length), wrong[0], side="right"))
    return int(min(bad)) if bad else None


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 for every n of `lengths`, concatenated."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _read_texts(path: Path, items: IdMap) -> tuple[np.ndarray, int]:
    """Each item's text (stripped; "" when the file has none) and how many items have none."""
    src = DelimitedFile(path, "\t", quoted=False)
    df = src.read({"item_id:token": "text"})
    if "text:token_seq" not in df.columns:
        raise src.error(1, f"missing column 'text:token_seq'; the columns are {list(df.columns)}")
    asin = df["item_id:token"].str.strip().to_numpy().astype(str)
    src.check_unique(df.assign(**{"item_id:token": asin}), ["item_id:token"], "item")
    idx = pd.Index(items.ids).get_indexer(asin)
    if (idx < 0).any():
        bad = int(np.flatnonzero(idx < 0)[0])
        raise src.error(src.line_of([bad])[0], f"item {str(asin[bad])!r} is not in the item index file")
    text = np.full(len(items), "", dtype=object)
    text[idx] = df["text:token_seq"].fillna("").str.strip().to_numpy()
    return text, len(items) - len(idx)


def read_unisrec(folder: str | Path, prefix: str = "Scientific", name: str = "") -> tuple[Interactions, np.ndarray]:
    """(interactions, part of every stored entry: 0 train, 1 valid, 2 test) of a UniSRec-format folder.

    Users and items are indexed as in `<prefix>.user2index` / `<prefix>.item2index` (raw ids: Amazon reviewerID
    and ASIN). Sequences are rebuilt from `<prefix>.{train,valid,test}.inter` (see `_rebuild`); `timestamps` is
    each kept interaction's position in its sequence; of a repeated (user, item) the latest occurrence is kept.
    `item_features["text"]` is `<prefix>.text` (UTF-8, stripped). `meta` counts the dropped repeats and the users
    whose validation or test target repeats an earlier item.
    """
    folder = Path(folder)
    user_ids = _read_index(folder / f"{prefix}.user2index", "user")
    item_ids = _read_index(folder / f"{prefix}.item2index", "item")
    users, items = IdMap(user_ids, name="user"), IdMap(item_ids, name="item")
    shape = (len(users), len(items))
    rows = [_read_inter(folder / f"{prefix}.{p}.inter", *shape) for p in _PARTS]
    _check_train_grouped(rows[0])
    for p, r in zip(_PARTS[1:], rows[1:], strict=True):
        _check_one_row_per_user(r, shape[0], "validation" if p == "valid" else "test")
    seqs = _rebuild(rows, shape[0])
    kept = _latest(seqs.user, seqs.item, seqs.pos, shape)
    part = seqs.part[kept.kept]
    text, no_text = _read_texts(folder / f"{prefix}.text", items)
    features = pd.DataFrame({"text": text})
    X = Interactions(kept.matrix, users, items, seqs.pos[kept.kept], item_features=features, name=name)
    dropped = np.ones(len(seqs.user), dtype=bool)
    dropped[kept.kept] = False
    # part of the occurrence that each dropped one gave way to
    key = seqs.user * shape[1] + seqs.item
    kept_part = pd.Series(part, index=key[kept.kept]).reindex(key[dropped]).to_numpy()
    d_user, d_part = seqs.user[dropped], seqs.part[dropped]

    def users_where(mask: np.ndarray) -> int:
        return len(np.unique(d_user[mask]))

    X.meta = {
        "sequence_interactions": len(seqs.user),
        "repeats_dropped": int(dropped.sum()),
        "repeated_pairs": kept.repeated_pairs,
        "valid_is_test": users_where(d_part == 1),
        "valid_repeats_train": users_where((d_part == 0) & (kept_part == 1)),
        "test_repeats_train": users_where((d_part == 0) & (kept_part == 2)),
        "official_parts": {p: int(np.count_nonzero(part == k)) for k, p in enumerate(_PARTS)},
        "items_without_text": no_text,
    }
    return X, part


def _scientific(data_dir: str | os.PathLike[str] | None, verify: bool) -> tuple[Interactions, np.ndarray]:
    return read_unisrec(dataset_dir(SCIENTIFIC, data_dir, verify=verify), "Scientific", name=SCIENTIFIC)


def load_amazon_scientific(
    data_dir: str | os.PathLike[str] | None = None, core: int | None = None, verify: bool = False
) -> Interactions:
    """UniSRec's Amazon "Scientific": 8,442 users × 4,385 items with text; 59,427 interactions in sequence order.

    291 occurrences repeat an item earlier in the same sequence (264 (user, item) pairs, 243 users); each pair
    keeps its latest occurrence, so the matrix holds 59,427 − 291 = 59,136 interactions (`meta["repeats_dropped"]`)
    and users have 1–78 (one user has the same item five times). `timestamps` is the position in the user's full
    sequence (0, 1, 2, ..., with gaps where a repeat was dropped); the data has order, not time.
    `item_features["text"]` is "title. category path. brand." per item. `core` applies an iterative k-core filter.
    `verify` checks the files' sha256. The files are found under `<data home>/amazon-scientific-unisrec/`; they
    cannot be downloaded (the error says where to put them).
    """
    if core is not None and core < 0:
        raise ConfigError(f"core must be ≥ 0, not {core}")
    X, _ = _scientific(data_dir, verify)
    if core:
        X = X.core_filter(core)
    X.meta = {"dataset": SCIENTIFIC, "min_rating": None, "core": core, **X.meta}
    return X


def amazon_scientific_split(
    data_dir: str | os.PathLike[str] | None = None, validation: bool = True, verify: bool = False
) -> Split:
    """UniSRec's published leave-last-out split of "Scientific": each user's test row's target is test, the
    validation row's target is validation, everything before it is train.

    The protocol is named "leave_last_out", so the test history includes the validation item (`Split.eval_set`),
    and `protocol["published"]` is True. As in `load_amazon_scientific`, a repeated item keeps only its latest
    occurrence: when the validation or test target repeats an earlier item of the user, that earlier occurrence
    is not in train (counted per user in `protocol["valid_repeats_train"]` / `["test_repeats_train"]`), and when
    the validation target is the test target (16 users) the user has no validation target
    (`protocol["valid_is_test"]`). The parts equal `leave_last_out(load_dataset(...))` for every other user with
    at least 3 distinct items; on the real files 17 users differ: those 16, where leave_last_out validates on the
    item before instead, and one user with 2 distinct items, whom leave_last_out gives no validation target.
    `validation=False` folds the validation targets into train and gives `valid=None` (the final fit).
    """
    X, part = _scientific(data_dir, verify)
    if not validation:
        part = np.where(part == 1, 0, part)
    meta = X.meta
    protocol: dict[str, Any] = {
        "name": "leave_last_out",
        "published": True,
        "dataset": SCIENTIFIC,
        "source": "Scientific.train.inter, Scientific.valid.inter and Scientific.test.inter of UniSRec's release",
        "validation": validation,
        "repeats_dropped": meta["repeats_dropped"],
        "valid_is_test": meta["valid_is_test"],
        "valid_repeats_train": meta["valid_repeats_train"],
        "test_repeats_train": meta["test_repeats_train"],
        "description": (
            "published UniSRec split (last item test, the one before validation)"
            + ("" if validation else ", validation folded into train")
            + "; of a repeated item only the latest occurrence is kept"
        ),
    }
    X.meta = {"dataset": SCIENTIFIC, "min_rating": None, "core": None, **meta}
    return Split(
        train=X.select_entries(part == 0),
        valid=X.select_entries(part == 1) if validation else None,
        test=X.select_entries(part == 2),
        protocol=protocol,
    )


# ---------------------------------------------------------------------- LC-Rec-style JSON (Office)
class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _key_line(text: str, key: str, nth: int = 1) -> int | None:
    """Editor line of the `nth` occurrence of `"key":` in a JSON text (None when not found)."""
    for k, m in enumerate(re.finditer(rf'"{re.escape(key)}"\s*:', text), 1):
        if k == nth:
            return text.count("\n", 0, m.start()) + 1
    return None


class _JsonFile:
    """A JSON object file whose keys are the indices 0..n-1; errors name the file and the line of a key."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        raw = read_head(path, -1)
        try:
            self.text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise DataError(f"{path}, line {line}: bytes that are not valid UTF-8 ({e.reason})") from None
        try:
            obj = json.loads(self.text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
        except _DuplicateKey as e:
            raise self.error(e.key, f"key {e.key!r} appears twice", nth=2) from None
        if not isinstance(obj, dict) or not obj:
            raise DataError(f'{path}: expected a non-empty JSON object {{"<{what} index>": ...}}')
        for k in obj:
            if not re.fullmatch(r"0|[1-9][0-9]{0,17}", k):
                raise self.error(k, f"{what} key {k!r} is not an index (0, 1, 2, ...)")
        index = np.array([int(k) for k in obj], dtype=np.int64)
        if index.max() >= len(index):
            k = str(int(index.max()))
            raise self.error(
                k, f"{what} {k} is out of range: {len(index)} {what}s must be numbered 0..{len(index) - 1}"
            )
        self.values = [obj[str(j)] for j in range(len(index))]  # by index

    def error(self, key: str, problem: str, nth: int = 1) -> DataError:
        line = _key_line(self.text, key, nth)
        return DataError(f"{self.path}{'' if line is None else f', line {line}'}: {problem}")


def _item_table(src: _JsonFile) -> tuple[pd.DataFrame, int]:
    """The four text fields of every item (HTML entities decoded; missing or null → ""), the combined `text`, and
    how many items had an entity decoded."""
    columns: dict[str, list[str]] = {f: [] for f in _OFFICE_FIELDS}
    unescaped = 0
    for j, value in enumerate(src.values):
        if not isinstance(value, dict):
            raise src.error(str(j), f"item {j}: expected an object with {', '.join(_OFFICE_FIELDS)}")
        changed = False
        for f in _OFFICE_FIELDS:
            v = value.get(f)
            if v is None:
                v = ""
            if not isinstance(v, str):
                raise src.error(str(j), f"item {j}: {f} is {type(v).__name__}, expected a string")
            clean = html.unescape(v).strip()
            changed |= clean != v.strip()
            columns[f].append(clean)
        unescaped += changed
    df = pd.DataFrame(columns)
    order = ("title", "categories", "brand", "description")
    df["text"] = [_join_text(r) for r in zip(*(columns[f] for f in order), strict=True)]
    return df, unescaped


def _join_text(parts: tuple[str, ...]) -> str:
    """Non-empty parts as sentences: "title. categories. brand. description" (no doubled full stops)."""
    return " ".join(p if p.endswith((".", "!", "?")) else p + "." for p in parts if p)


def read_lcrec(folder: str | Path, prefix: str = "Office", name: str = "") -> Interactions:
    """Interactions of an LC-Rec-style folder: `<prefix>.inter.json` (`{"user": [item, ...]}` in sequence order)
    and `<prefix>.item.json` (`{"item": {"title", "description", "brand", "categories"}}`).

    Users and items are indexed by their keys (raw id = index). `timestamps` is the position in the user's list;
    of a repeated item the latest occurrence is kept (`meta["repeats_dropped"]`). `item_features` has title,
    description, brand and categories (HTML entities such as `&amp;` decoded; empty strings where missing) and
    `text`, their join "title. categories. brand. description." (empty parts left out). Refused, naming the file
    and the line of the key: keys that are not 0..n-1, a list that is not of item indices in range.
    """
    folder = Path(folder)
    item_src = _JsonFile(folder / f"{prefix}.item.json", "item")
    features, unescaped = _item_table(item_src)
    inter = _JsonFile(folder / f"{prefix}.inter.json", "user")
    n_items = len(features)
    for u, seq in enumerate(inter.values):
        if not isinstance(seq, list) or not all(type(x) is int for x in seq):
            raise inter.error(str(u), f"user {u}: expected a list of item indices")
        bad = [x for x in seq if not 0 <= x < n_items]
        if bad:
            raise inter.error(
                str(u), f"user {u}: item {bad[0]} is outside 0..{n_items - 1} (the items of {item_src.path.name})"
            )
    lengths = np.array([len(s) for s in inter.values], dtype=np.int64)
    user = np.repeat(np.arange(len(lengths)), lengths)
    item = np.array([x for s in inter.values for x in s], dtype=np.int64)
    pos = _ranges(lengths)
    shape = (len(lengths), n_items)
    kept = _latest(user, item, pos, shape)
    users, items = IdMap(np.arange(shape[0]), "user"), IdMap(np.arange(n_items), "item")
    X = Interactions(kept.matrix, users, items, pos[kept.kept], item_features=features, name=name)
    X.meta = {
        "sequence_interactions": len(item),
        "repeats_dropped": len(item) - len(kept.kept),
        "repeated_pairs": kept.repeated_pairs,
        "items_with_description": int((features["description"] != "").sum()),
        "items_html_unescaped": unescaped,
    }
    return X


def load_amazon_office(
    data_dir: str | os.PathLike[str] | None = None, core: int | None = None, verify: bool = False
) -> Interactions:
    """Amazon Office Products 2014, 5-core: 4,905 users × 2,420 items, 53,258 interactions in sequence order.

    No item repeats within a user, so nothing is dropped. `timestamps` is the position in the user's list (the
    order the source gives; the data has no times). `item_features`: title, description (1,781 items have one;
    the others are kept with ""), brand, categories and the combined `text`. No ASINs: raw ids are the indices.
    `core` applies an iterative k-core filter (the data is already 5-core). `verify` checks the sha256. The files
    are found under `<data home>/amazon-office-2014-5core/`; they cannot be downloaded.
    """
    if core is not None and core < 0:
        raise ConfigError(f"core must be ≥ 0, not {core}")
    X = read_lcrec(dataset_dir(OFFICE, data_dir, verify=verify), "Office", name=OFFICE)
    if core:
        X = X.core_filter(core)
    X.meta = {"dataset": OFFICE, "min_rating": None, "core": core, **X.meta}
    return X
