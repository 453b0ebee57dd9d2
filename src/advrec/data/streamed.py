"""Interactions from CSV and Parquet files too large to parse at once.

The file is read in batches (pyarrow's streaming CSV reader in 1 MiB blocks, grouped into `batch_rows` rows;
Parquet a row group at a time); each batch's ids are dictionary-encoded by Arrow and its distinct ids mapped to
indices through a lookup kept across batches (hashing in C and C++, no Python per row); only the indices,
values and times are kept, 8 bytes a row (16 with times). At the end the rows are scattered by user into the
CSR arrays and each user's row is sorted by item, duplicates resolved chunk by chunk in place, so the peak
memory is about twice the final CSR and id maps plus a constant (measured in `benchmarks/data_scale.py`). The
result equals `load_interactions`' on the same file (same id order, same duplicate rules, same messages for bad
rows, which name the line an editor shows).
"""

from __future__ import annotations

import csv
import ctypes
import io
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import scipy.sparse as sp

from advrec.data.frames import (
    _PARQUET,
    _SEP_NAMES,
    _plain_suffix,
    check_arguments,
    open_binary,
    read_head,
    sniff_sep,
)
from advrec.data.interactions import IdMap, Interactions
from advrec.errors import ConfigError, DataError

__all__ = ["load_interactions_streamed"]

_SCAN = 1 << 24  # bytes read at a time when a bad row's line is looked up
_BLOCK = 1 << 20  # bytes of CSV parsed at a time


def _glibc() -> ctypes.CDLL | None:
    """glibc, for `malloc_trim`; None elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


# ---------------------------------------------------------------------- ids
def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


class _Lookup:
    """Codes 0..n-1 of ids in order of first appearance: a large pandas Index whose hash table is built once and
    kept, and a small one of the ids added since, folded into the large one when it reaches a quarter of it (so
    each id is hashed O(log n) times in all, not once a batch)."""

    def __init__(self, values: np.ndarray) -> None:
        self.main = pd.Index(values[:0])
        self.recent = pd.Index(values[:0])

    def codes(self, values: np.ndarray) -> np.ndarray:
        """Codes of `values`, adding those not seen before (in their order)."""
        out = self.main.get_indexer(values)
        miss = np.flatnonzero(out < 0)
        if len(miss):
            new = pd.unique(values[miss][self.recent.get_indexer(values[miss]) < 0])
            if len(new):
                self.recent = self.recent.append(pd.Index(new))
            out[miss] = len(self.main) + self.recent.get_indexer(values[miss])
            if len(self.recent) > max(len(self.main) // 4, 1 << 16):
                self.main, self.recent = self.main.append(self.recent), self.recent[:0]
        return out.astype(np.int32)

    def ids(self) -> np.ndarray:
        return np.concatenate([self.main.to_numpy(), self.recent.to_numpy()])


class _IdCodes:
    """Raw ids → indices 0..n-1 in order of first appearance, across batches.

    Each batch is dictionary-encoded by Arrow; its distinct ids go through a `_Lookup`. Text ids are stripped,
    and kept as int64 while every one is a canonical integer (as `load_interactions` does at the end), as text
    from the first that is not; float ids that are all integral become int64 at the end.
    """

    def __init__(self) -> None:
        self.lookup: _Lookup | None = None
        self.text = False  # True once a text id that is not a canonical integer was seen

    def encode(self, col: pa.ChunkedArray) -> tuple[np.ndarray, int | None]:
        """(index of each row, the first row whose id is missing or empty, or None)."""
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        enc = pc.dictionary_encode(col)  # one dictionary shared by the chunks
        d = enc.chunk(0).dictionary if enc.num_chunks else pa.array([], col.type)
        idx = np.concatenate([c.indices.fill_null(0).to_numpy() for c in enc.chunks])
        bad = np.concatenate([c.indices.is_null().to_numpy(zero_copy_only=False) for c in enc.chunks])
        if _is_text(d.type):
            d = pc.utf8_trim_whitespace(d)
            bad |= pc.equal(d, "").to_numpy(zero_copy_only=False)[idx]
        elif pa.types.is_floating(d.type):
            bad |= pc.is_nan(d).to_numpy(zero_copy_only=False)[idx]
        if bad.any():
            return idx, int(np.argmax(bad))
        return self._codes(d)[idx], None

    def _codes(self, d: pa.Array) -> np.ndarray:
        if not _is_text(d.type):
            values = d.to_numpy(zero_copy_only=False)
        elif not self.text and (ints := _canonical_ints(d)) is not None:
            values = ints
        else:
            if not self.text and self.lookup is not None:  # from now on every id is text
                self.lookup = _relabelled(self.lookup)
            self.text = True
            values = np.asarray(d.to_numpy(zero_copy_only=False), dtype=object)
        if self.lookup is None:
            self.lookup = _Lookup(values)
        return self.lookup.codes(values)

    def ids(self) -> np.ndarray:
        values = self.lookup.ids() if self.lookup is not None else np.empty(0, dtype=np.int64)
        if self.text:
            return values.astype(str)
        if values.dtype.kind == "f" and np.all(values == np.round(values)):
            return values.astype(np.int64)
        return values


def _canonical_ints(d: pa.Array) -> np.ndarray | None:
    """`d` (stripped text) as int64 when every value is a canonical integer (`-?(0|[1-9][0-9]*)`: no '+', no
    leading zeros); else None."""
    try:
        values = d.cast(pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    magnitude = np.abs(values)
    digits = np.ones(len(values), dtype=np.int64)
    for k in range(1, 19):  # digits of |v|, without float rounding
        digits += magnitude >= 10**k
    sign = pc.starts_with(d, "-").to_numpy(zero_copy_only=False)
    return values if np.array_equal(pc.utf8_length(d).to_numpy(), digits + sign) else None


def _relabelled(lookup: _Lookup) -> _Lookup:
    """The same codes with the integer ids written as text."""
    out = _Lookup(np.empty(0, dtype=object))
    out.codes(np.asarray(lookup.ids().astype(str), dtype=object))
    return out


# ---------------------------------------------------------------------- sources
def _data_line_csv(path: Path, header_line: int, k: int, encoding: str) -> int:
    """Editor line where data record `k` (from 0) starts, counting records as the csv module does."""
    with io.TextIOWrapper(open_binary(path), encoding=encoding, errors="replace", newline="") as text:
        reader = csv.reader(text)
        start, seen = 1, -1
        for row in reader:
            if row and start > header_line:
                seen += 1
                if seen == k:
                    return start
            start = reader.line_num + 1
    return -1


def _data_line(path: Path, header_line: int, k: int, encoding: str) -> int:
    """Editor line of data record `k` (from 0): the k-th non-blank line after the header, found by counting
    newlines a block at a time; a file with quotes (where a record may span lines) is read record by record."""
    line, seen, carry = 0, -1, b""
    with open_binary(path) as f:
        while True:
            chunk = f.read(_SCAN)
            if b'"' in chunk:
                return _data_line_csv(path, header_line, k, encoding)
            buf = np.frombuffer(carry + chunk + (b"" if chunk else b"\n"), dtype=np.uint8)
            ends = np.flatnonzero(buf == 10)
            starts = np.r_[0, ends[:-1] + 1]
            blank = (ends == starts) | ((ends == starts + 1) & (buf[np.minimum(starts, len(buf) - 1)] == 13))
            numbers = line + 1 + np.arange(len(ends))
            counted = np.cumsum((numbers > header_line) & ~blank)
            hit = np.searchsorted(counted, k - seen)
            if hit < len(ends):
                return int(numbers[hit])
            line, seen = line + len(ends), seen + int(counted[-1]) if len(counted) else seen
            carry = bytes(buf[ends[-1] + 1 :]) if len(ends) else bytes(buf)
            if not chunk:
                return -1


@dataclass
class _CsvSource:
    """A delimited text file read in batches of about `batch_rows` rows (every column as text)."""

    path: Path
    sep: str
    columns: list[str]
    batch_rows: int
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        head = read_head(self.path)
        if not head.strip():
            raise DataError(f"{self.path}: the file is empty")
        lines = head.split(b"\n")
        self.header_line = next(n for n, ln in enumerate(lines, 1) if ln.strip())
        text = lines[self.header_line - 1].decode(self.encoding, errors="replace").removesuffix("\r")
        self.names = [c.strip() for c in next(csv.reader([text], delimiter=self.sep, skipinitialspace=True))]
        dup = next((c for c in self.names if self.names.count(c) > 1), None)
        if dup is not None:
            raise self._at(self.header_line, f"the column name {dup!r} appears more than once in the header")
        missing = [c for c in self.columns if c not in self.names]
        if missing:
            raise self._at(self.header_line, f"missing column {missing[0]!r}; the columns are {self.names}")
        body = [len(ln) for ln in lines[self.header_line : -1]] or [len(head)]
        # the reader keeps up to ~32 blocks read ahead, so blocks stay small and are grouped into batches later
        per_row = float(np.mean(body)) + 1.0
        self.block_size = max(min(int(self.batch_rows * per_row), _BLOCK), 4 * max(body) + 4, 64)
        self.invalid: Any = None

    def _at(self, line: int | None, problem: str) -> DataError:
        return DataError(f"{self.path}, line {line}: {problem}" if line else f"{self.path}: {problem}")

    def error(self, row: int, problem: str) -> DataError:
        """A `DataError` naming the line of data row `row` (from 0)."""
        return self._at(_data_line(self.path, self.header_line, row, self.encoding), problem)

    def _on_invalid(self, row: Any) -> str:
        self.invalid = row
        return "error"

    def batches(self) -> Iterator[pa.RecordBatch]:
        read = pacsv.ReadOptions(
            use_threads=False,
            block_size=self.block_size,
            skip_rows=self.header_line,
            column_names=self.names,
            encoding=self.encoding,
        )
        parse = pacsv.ParseOptions(delimiter=self.sep, invalid_row_handler=self._on_invalid)
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(self.columns, pa.string()), include_columns=self.columns
        )
        try:
            # a plain file is read through OSFile: the buffered stream of `input_stream` holds several blocks
            compressed = self.path.suffix.lower() in (".gz", ".bz2", ".xz")
            with (
                pa.input_stream(str(self.path), compression="detect") if compressed else pa.OSFile(str(self.path)) as f
            ):
                yield from pacsv.open_csv(f, read_options=read, parse_options=parse, convert_options=convert)
        except pa.ArrowInvalid as e:
            if self.invalid is None:
                raise DataError(f"{self.path}: cannot be read as CSV ({e})") from None
            found, n = self.invalid.actual_columns, self.invalid.expected_columns
            sep_name = _SEP_NAMES.get(self.sep, repr(self.sep))
            problem = f"expected {n} fields separated by {sep_name}, found {found}"
            raise self.error(self.invalid.number - self.header_line - 1, problem) from None


@dataclass
class _ParquetSource:
    """A Parquet file read a row group at a time, in batches of at most `batch_rows` rows."""

    path: Path
    columns: list[str]
    batch_rows: int

    def __post_init__(self) -> None:
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file")
        if self.path.is_file() and self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: the file is empty")
        try:
            self.file = pq.ParquetFile(self.path)
        except Exception as e:  # pyarrow raises several unrelated classes for a bad file
            raise DataError(f"{self.path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        names = list(self.file.schema_arrow.names)
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise DataError(f"{self.path}: missing column {missing[0]!r}; the columns are {names}")

    def error(self, row: int, problem: str) -> DataError:
        return DataError(f"{self.path}, row {row + 1} (counting from 1): {problem}")

    def batches(self) -> Iterator[pa.RecordBatch]:
        # one row group at a time: iter_batches holds on to the buffers of the batches it has returned
        for k in range(self.file.num_row_groups):
            group = self.file.read_row_group(k, columns=self.columns, use_threads=False)
            yield from group.to_batches(max_chunksize=self.batch_rows)


_Source = _CsvSource | _ParquetSource


def _numbers(col: pa.ChunkedArray, name: str, src: _Source, first: int) -> np.ndarray:
    """A rating or time column as finite float64 (datetimes as seconds); a bad row raises naming its line."""
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        col = col.cast(pa.timestamp("s")).cast(pa.int64())
    if _is_text(col.type):
        try:
            col = col.cast(pa.float64())
        except pa.ArrowInvalid:
            col = pc.utf8_trim_whitespace(col)
            try:
                col = col.cast(pa.float64())
            except pa.ArrowInvalid:
                text = np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
                bad = int(np.argmax(np.isnan(pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(np.float64))))
                problem = f"empty {name}" if text[bad] == "" else f"{name} {text[bad]!r} is not a number"
                raise src.error(first + bad, problem) from None
    values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    bad_rows = np.flatnonzero(~np.isfinite(values))
    if len(bad_rows):
        row = int(bad_rows[0])
        value = col[row].as_py()
        if value is None or (isinstance(src, _ParquetSource) and np.isnan(value)):
            raise src.error(first + row, f"empty {name}")
        if isinstance(src, _ParquetSource):  # as load_interactions words it for each format
            raise src.error(first + row, f"{name} {value!r} is not a finite number")
        raise src.error(first + row, f"{name} is {str(value)!r}, not a finite number")
    return values


# ---------------------------------------------------------------------- reading
@dataclass
class _Part:
    """One batch, reduced to indices (int32), values (float32) and times (float64)."""

    u: np.ndarray
    i: np.ndarray
    r: np.ndarray | None
    t: np.ndarray | None
    first: int  # data row number of the batch's first row


def _grouped(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The batches joined (not copied) into tables of at least `rows` rows (the last may be smaller)."""
    pending: list[pa.RecordBatch] = []
    n = 0
    for batch in batches:
        pending.append(batch)
        n += batch.num_rows
        if n >= rows:
            yield pa.Table.from_batches(pending)
            pending, n = [], 0
    if n:
        yield pa.Table.from_batches(pending)


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """`np.argsort(keys, kind="stable")` for non-negative integer keys, by 16-bit radix passes when they fit in
    32 bits (three times faster on a million keys)."""
    top = int(keys.max()) if len(keys) else 0
    if top >= 2**32:
        return np.argsort(keys, kind="stable")
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    if top >= 2**16:
        order = order[np.argsort((keys[order] >> 16).astype(np.uint16), kind="stable")]
    return order


def _release_memory() -> None:
    """Hands freed memory back to the system: Arrow's pool, and glibc's heap, where the batches' arrays (a few MB
    each, below glibc's mmap threshold) would otherwise stay resident while the large CSR arrays are mapped."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _read_parts(
    src: _Source, user: str, item: str, rating: str | None, time: str | None
) -> tuple[list[_Part], _IdCodes, _IdCodes]:
    users, items = _IdCodes(), _IdCodes()
    parts: list[_Part] = []
    first = 0
    for batch in _grouped(src.batches(), src.batch_rows):
        codes = []
        for col, ids in ((user, users), (item, items)):
            idx, bad = ids.encode(batch.column(col))
            if bad is not None:
                raise src.error(first + bad, f"empty {col}")
            codes.append(idx)
        r = None if rating is None else _numbers(batch.column(rating), rating, src, first).astype(np.float32)
        t = None if time is None else _numbers(batch.column(time), time, src, first)
        parts.append(_Part(codes[0], codes[1], r, t, first))
        first += batch.num_rows
        _release_memory()
    if not first:
        raise DataError(f"{src.path}: no data rows")
    _release_memory()  # the reader's buffers, before the CSR arrays are allocated
    return parts, users, items


def _scatter(parts: list[_Part], n_users: int, keep_rows: bool) -> dict[str, Any]:
    """The batches' entries grouped by user (CSR order of rows, file order within a row); frees the batches.

    Two sweeps keep the peak at 16 bytes a row (without times): the first turns each batch's user indices into
    destinations (int32, in place) and places the items, the second places the values and times.
    """
    counts = np.zeros(n_users, dtype=np.int64)
    for part in parts:
        counts += np.bincount(part.u, minlength=n_users)
    nnz = int(counts.sum())
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    dest_type = np.int32 if nnz < 2**31 else np.int64
    out: dict[str, Any] = {"indptr": indptr, "indices": np.empty(nnz, dtype=np.int32)}
    cursor = indptr[:-1].copy()
    for part in parts:
        order = _stable_order(part.u)
        u = part.u[order]
        group = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
        dest = cursor[u] + np.arange(len(u)) - np.repeat(group, np.diff(np.r_[group, len(u)]))
        cursor += np.bincount(u, minlength=n_users)
        part.u = np.empty(len(u), dtype=dest_type)
        part.u[order] = dest  # the destination of each row, in file order
        out["indices"][part.u] = part.i
        part.i = np.empty(0, dtype=np.int32)
    _release_memory()
    for key, attr, dtype in (("data", "r", np.float32), ("time", "t", np.float64), ("row", "first", np.int64)):
        if (key == "row" and not keep_rows) or (key != "row" and getattr(parts[0], attr) is None):
            out[key] = None
            continue
        out[key] = np.empty(nnz, dtype=dtype)
        for part in parts:
            values = getattr(part, attr)
            out[key][part.u] = values + np.arange(len(part.u)) if key == "row" else values
            if key != "row":
                setattr(part, attr, None)
        _release_memory()
    parts.clear()
    _release_memory()
    return out


def _resolve(csr: dict[str, Any], n_items: int, duplicates: str, chunk: int) -> Any:
    """Sorts each user's entries by item and resolves repeated (user, item) pairs, in place, a chunk of users at
    a time: "last" keeps the latest (by time, then by file order), "sum" adds the values, "error" reports the
    pair as (user index, item index, row, row). Returns the error's pair or None; `csr` is updated."""
    indptr, indices, data, times, rows = (csr[k] for k in ("indptr", "indices", "data", "time", "row"))
    n_users = len(indptr) - 1
    bounds = np.unique(np.r_[np.searchsorted(indptr, np.arange(0, indptr[-1], chunk), side="right") - 1, n_users])
    bounds = bounds[bounds >= 0]
    kept = np.zeros(n_users, dtype=np.int64)
    w = 0
    for a, b in pairwise(bounds.tolist()):
        s, e = int(indptr[a]), int(indptr[b])
        key = np.repeat(np.arange(b - a, dtype=np.int64), np.diff(indptr[a : b + 1])) * n_items + indices[s:e]
        order = np.lexsort((times[s:e], key)) if times is not None else _stable_order(key)
        key = key[order]
        last = np.r_[key[1:] != key[:-1], True]
        if duplicates == "error" and not last.all():
            j = int(np.argmin(last))
            k = int(key[j])
            return a + k // n_items, k % n_items, int(rows[s + order[j]]), int(rows[s + order[j + 1]])
        pick = order[last]
        m = len(pick)
        if data is not None:
            if duplicates == "sum" and m < len(key):
                values = np.add.reduceat(data[s:e][order].astype(np.float64), np.r_[0, np.flatnonzero(last)[:-1] + 1])
            else:
                values = data[s:e][pick]
            data[w : w + m] = values
        elif duplicates == "sum" and m < len(key):
            csr["data"] = data = np.ones(len(indices), dtype=np.float32)
            data[w : w + m] = np.diff(np.r_[0, np.flatnonzero(last) + 1])
        if times is not None:
            times[w : w + m] = times[s:e][pick]
        indices[w : w + m] = key[last] % n_items
        kept[a:b] = np.bincount(key[last] // n_items, minlength=b - a)
        w += m
    csr["indptr"] = np.r_[0, np.cumsum(kept)]
    for name in ("indices", "data", "time"):
        if csr[name] is not None and len(csr[name]) != w:
            csr[name].resize(w, refcheck=False)
    return None


# ---------------------------------------------------------------------- public loader
def load_interactions_streamed(
    path: str | Path,
    user: str = "user",
    item: str = "item",
    rating: str | None = None,
    time: str | None = None,
    sep: str | None = None,
    min_rating: float | None = None,
    core: int | None = None,
    duplicates: str = "last",
    encoding: str = "utf-8",
    batch_rows: int = 500_000,
) -> Interactions:
    """`load_interactions` for files of any size: the same arguments and result, read `batch_rows` rows at a
    time (CSV: about that many; a single-character `sep`; no line breaks inside quoted values).

    Peak memory: the batches' indices and values (8 bytes a row, 16 with times) plus the final CSR.
    Bad input raises `DataError` naming the file and the line (Parquet: the row) of the first bad row found.
    """
    path = Path(path)
    check_arguments(user, item, rating, time, min_rating, core, duplicates)
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be ≥ 1, not {batch_rows}")
    columns = [c for c in (user, item, rating, time) if c is not None]
    src = _source(path, columns, sep, encoding, batch_rows)
    parts, users, items = _read_parts(src, user, item, rating, time)
    user_ids, item_ids = users.ids(), items.ids()
    del users, items
    csr = _scatter(parts, len(user_ids), keep_rows=duplicates == "error")
    clash = _resolve(csr, len(item_ids), duplicates, chunk=max(batch_rows, 1 << 16))
    if clash is not None:
        u, i, first, second = clash
        desc = f"{user} {user_ids[u].item()!r}, {item} {item_ids[i].item()!r}"
        if isinstance(src, _CsvSource):
            line = _data_line(path, src.header_line, first, encoding)
            raise src.error(second, f"duplicate interaction ({desc}); it is also on line {line}")
        raise src.error(second, f"duplicate interaction ({desc})")
    X = _interactions(csr, user_ids, item_ids)
    X.name = path.name.split(".")[0]
    if min_rating is not None:
        X = X.binarize(min_rating)
    if core:
        X = X.core_filter(core)
    X.meta = {"dataset": X.name, "source": str(path), "min_rating": min_rating, "core": core, "duplicates": duplicates}
    return X


def _source(path: Path, columns: list[str], sep: str | None, encoding: str, batch_rows: int) -> _Source:
    if _plain_suffix(path) in _PARQUET:
        return _ParquetSource(path, columns, batch_rows)
    sep = sep if sep is not None else sniff_sep(path, encoding)
    if len(sep) != 1:
        raise ConfigError(f"{path}: the streamed reader takes a one-character sep, not {sep!r}: use load_interactions")
    return _CsvSource(path, sep, columns, batch_rows, encoding)


def _interactions(csr: dict[str, Any], user_ids: np.ndarray, item_ids: np.ndarray) -> Interactions:
    nnz = len(csr["indices"])
    indptr = csr["indptr"].astype(np.int32) if nnz < 2**31 - 1 else csr["indptr"]
    data = csr["data"] if csr["data"] is not None else np.ones(nnz, dtype=np.float32)
    matrix = sp.csr_matrix((data, csr["indices"], indptr), shape=(len(user_ids), len(item_ids)))
    times = None
    if csr["time"] is not None:
        times = csr.pop("time").astype(np.int64)
    return Interactions(matrix, IdMap(user_ids, name="user"), IdMap(item_ids, name="item"), timestamps=times)
