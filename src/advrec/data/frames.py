"""Interactions from any CSV/TSV/Parquet file, with errors that name the file, the line and the problem.

`DelimitedFile` is the one reader of delimited text in advrec (the MovieLens loaders use it too): it
parses with pandas' C engine, and only when something is wrong does it scan the file line by line to
report the first bad line as an editor numbers it (the header, when there is one, is line 1).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pandas as pd

from advrec.data.interactions import Interactions
from advrec.errors import ConfigError, DataError

__all__ = ["DelimitedFile", "load_interactions", "read_delimited"]

Kind = Literal["int", "float", "text", "id"]
"""What a required column holds: an integer, a finite number, non-empty text, or an id (int when every
value is a canonical integer, else text). Required columns may not be empty."""

_DTYPES: dict[str, Any] = {"int": "int64", "float": "float64", "text": str, "id": str}
_SEP_NAMES = {"\t": "tabs", ",": "commas", ";": "semicolons", "|": "'|'", "::": "'::'", " ": "spaces"}
_UNIT_SEP = "\x1f"  # stands in for a multi-character separator such as "::"
_INT_RE = r"-?(?:0|[1-9][0-9]*)"
_OPENERS: dict[str, Any] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_PARQUET = {".parquet", ".pq"}


def open_binary(path: Path) -> BinaryIO:
    """`path` opened for reading bytes, decompressed when it ends in .gz/.bz2/.xz; errors name the file."""
    opener = _OPENERS.get(path.suffix.lower(), open)
    try:
        return opener(path, "rb")  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None


def read_head(path: Path, size: int = 1 << 20) -> bytes:
    """The first `size` bytes of the file (decompressed; all of it when `size` is -1)."""
    with open_binary(path) as f:
        try:
            return f.read(size)
        except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
            raise DataError(f"{path}: cannot be decompressed ({e})") from None


def _read_bytes(path: Path) -> bytes:
    return read_head(path, -1)


def _plain_suffix(path: Path) -> str:
    """The suffix that says the format (`.csv` for `x.csv.gz`)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


class DelimitedFile:
    """A delimited text file (CSV, TSV, `::`-separated), read fast and checked line by line on error.

    `names` gives the column names of a file without a header; when None, the first non-blank line is the
    header. `quoted=False` reads `"` as an ordinary character (MovieLens `.dat` and `u.item` files).
    """

    def __init__(
        self,
        path: str | Path,
        sep: str,
        *,
        names: Sequence[str] | None = None,
        encoding: str = "utf-8",
        quoted: bool = True,
    ) -> None:
        if not sep:
            raise ConfigError("sep must be a non-empty string")
        self.path = Path(path)
        self.sep = sep
        self.names = list(names) if names is not None else None
        self.encoding = encoding
        self.quoted = quoted and len(sep) == 1
        raw = _read_bytes(self.path)
        if not raw.strip():
            raise DataError(f"{self.path}: the file is empty")
        if len(sep) > 1:
            raw = raw.replace(sep.encode(encoding), _UNIT_SEP.encode())
        self._raw = raw
        self._sep1 = sep if len(sep) == 1 else _UNIT_SEP

    # ------------------------------------------------------------------ errors
    def error(self, line: int | None, problem: str) -> DataError:
        """A `DataError` whose message names this file and the line."""
        where = f"{self.path}, line {line}" if line is not None else f"{self.path}"
        return DataError(f"{where}: {problem}")

    def _text(self) -> str:
        try:
            return self._raw.decode(self.encoding)
        except UnicodeDecodeError as e:
            line = self._raw.count(b"\n", 0, e.start) + 1
            raise self.error(
                line, f"bytes that are not valid {self.encoding} ({e.reason}); pass the file's encoding"
            ) from None

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        """Yields (line number, fields) of every non-blank record, header included."""
        text = self._text()
        if self.quoted:
            reader = csv.reader(io.StringIO(text, newline=""), delimiter=self._sep1, skipinitialspace=True)
            start = 1
            try:
                for row in reader:
                    if row:
                        yield start, row
                    start = reader.line_num + 1
            except csv.Error as e:
                raise self.error(start, f"malformed row ({e})") from None
        else:
            for n, line in enumerate(text.split("\n"), 1):
                line = line.removesuffix("\r")
                if line:
                    yield n, line.split(self._sep1)

    def _data_records(self) -> Iterator[tuple[int, list[str]]]:
        records = self._records()
        if self.names is None:
            next(records, None)
        return records

    def header(self) -> tuple[int, list[str]]:
        """Line number and column names of the header (or the given names, line 0)."""
        if self.names is not None:
            return 0, self.names
        n, raw_line = next((i, ln) for i, ln in enumerate(self._raw.split(b"\n", 64), 1) if ln.strip())
        try:
            text = raw_line.decode(self.encoding).removesuffix("\r")
        except UnicodeDecodeError as e:
            problem = f"bytes that are not valid {self.encoding} ({e.reason}); pass the file's encoding"
            raise self.error(n, problem) from None
        if self.quoted:
            fields = next(csv.reader([text], delimiter=self._sep1, skipinitialspace=True))
        else:
            fields = text.split(self._sep1)
        names = [f.strip() for f in fields]
        dup = next((c for c in names if names.count(c) > 1), None)
        if dup is not None:
            raise self.error(n, f"the column name {dup!r} appears more than once in the header")
        return n, names

    def line_of(self, rows: Sequence[int] | np.ndarray) -> list[int]:
        """Editor line numbers of the given data rows (0-based positions in the parsed frame)."""
        want = {int(r) for r in rows}
        found: dict[int, int] = {}
        for pos, (line, _) in enumerate(self._data_records()):
            if pos in want:
                found[pos] = line
                if len(found) == len(want):
                    break
        return [found.get(int(r), -1) for r in rows]

    # ------------------------------------------------------------------ reading
    def _first_problem(self, columns: Mapping[str, Kind], header: list[str]) -> tuple[int, str] | None:
        n = len(header)
        pos = {c: header.index(c) for c in columns}
        sep_name = _SEP_NAMES.get(self.sep, repr(self.sep))
        for line, fields in self._data_records():
            if len(fields) != n:
                return line, f"expected {n} fields separated by {sep_name}, found {len(fields)}"
            for col, kind in columns.items():
                value = fields[pos[col]].strip()
                if value == "":
                    return line, f"empty {col}"
                if kind == "int":
                    try:
                        int(value)
                    except ValueError:
                        return line, f"{col} {value!r} is not an integer"
                elif kind == "float":
                    try:
                        number = float(value)
                    except ValueError:
                        return line, f"{col} {value!r} is not a number"
                    if not math.isfinite(number):
                        return line, f"{col} is {value!r}, not a finite number"
        return None

    def read(self, columns: Mapping[str, Kind]) -> pd.DataFrame:
        """All columns as a DataFrame; `columns` are required, non-empty and of the given kind.

        Columns not named in `columns` are read as text (missing values are NaN).
        """
        header_line, header = self.header()
        missing = [c for c in columns if c not in header]
        if missing:
            raise self.error(
                header_line or None,
                f"missing column {missing[0]!r}; the columns are {header}",
            )
        dtype = {c: _DTYPES[k] for c, k in columns.items()}
        for c in header:
            dtype.setdefault(c, str)
        kwargs: dict[str, Any] = dict(
            sep=self._sep1,
            header=None if self.names is not None else 0,
            names=header,
            dtype=dtype,
            encoding=self.encoding,
            index_col=False,
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=True,
        )
        if not self.quoted:
            kwargs["quoting"] = csv.QUOTE_NONE
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                df = pd.read_csv(io.BytesIO(self._raw), **kwargs)
        except (ValueError, pd.errors.ParserWarning, pd.errors.ParserError) as e:
            self._raise_first_problem(columns, header, fallback=str(e).strip())
            raise AssertionError("unreachable") from None
        if len(df) == 0:
            raise self.error(header_line or None, "no data rows" + (" after the header" if header_line else ""))
        for col, kind in columns.items():
            s = df[col]
            bad = s.isna().to_numpy().copy()
            if kind == "float":
                bad |= ~np.isfinite(s.to_numpy(dtype=np.float64, na_value=np.nan))
            elif kind in ("text", "id"):
                bad |= (s.str.strip() == "").to_numpy(dtype=bool, na_value=True)
            if bad.any():
                self._raise_first_problem(columns, header, fallback=f"empty or invalid {col}")
        for col, kind in columns.items():
            if kind == "id":
                df[col] = _canonical_ids(df[col])
        return df

    def _raise_first_problem(self, columns: Mapping[str, Kind], header: list[str], fallback: str) -> None:
        found = self._first_problem(columns, header)
        if found is not None:
            raise self.error(*found)
        raise self.error(None, fallback)

    def check_unique(self, df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
        """Raises `DataError` naming both lines when two rows share the values of `cols`."""
        dup = df.duplicated(list(cols), keep=False).to_numpy()
        if dup.any():
            key = df.loc[dup, list(cols)].iloc[0]
            rows = np.flatnonzero((df[list(cols)] == key).all(axis=1).to_numpy())[:2]
            first, second = self.line_of(rows)
            desc = ", ".join(f"{c} {_scalar(key[c])!r}" for c in cols)
            raise self.error(second, f"duplicate {what} ({desc}); it is also on line {first}")


def _canonical_ids(s: pd.Series) -> pd.Series:
    """Ids as int64 when every value is a canonical integer (no leading zeros), else stripped text."""
    s = s.str.strip()
    if bool(s.str.fullmatch(_INT_RE).all()):
        try:
            return s.astype("int64")
        except (ValueError, OverflowError):
            pass
    return s


def read_delimited(
    path: str | Path,
    sep: str,
    columns: Mapping[str, Kind],
    *,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quoted: bool = True,
) -> pd.DataFrame:
    """Reads a delimited file; bad input raises `DataError` naming the file, line and problem."""
    return DelimitedFile(path, sep, names=names, encoding=encoding, quoted=quoted).read(columns)


def sniff_sep(path: str | Path, encoding: str = "utf-8") -> str:
    """The field separator of a text file: from its extension when its first line agrees, else sniffed."""
    path = Path(path)
    raw = read_head(path)
    first = next((ln for ln in raw.split(b"\n") if ln.strip()), b"").decode(encoding, errors="replace")
    if not first:
        raise DataError(f"{path}: the file is empty")
    by_ext = {".csv": ",", ".tsv": "\t", ".tab": "\t"}.get(_plain_suffix(path))
    if by_ext is not None and by_ext in first:
        return by_ext
    for sep in ("::", "\t", ",", ";", "|"):
        if sep in first:
            return sep
    if by_ext is not None:
        return by_ext
    raise DataError(f"{path}, line 1: cannot tell the field separator (no tab, comma, ';', '|' or '::'); pass sep=")


# ---------------------------------------------------------------------- Parquet
def header_columns(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """The column names of a CSV/TSV (its header line) or Parquet file (its schema)."""
    path = Path(path)
    if _plain_suffix(path) in _PARQUET:
        import pyarrow.parquet as pq

        try:
            return [str(c) for c in pq.read_schema(path).names]
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except Exception as e:  # pyarrow raises several unrelated classes for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    sep = sniff_sep(path, encoding)
    first = next(ln for ln in read_head(path).split(b"\n") if ln.strip()).decode(encoding, errors="replace")
    return [c.strip().strip('"') for c in first.rstrip("\r").split(sep)]


def _read_parquet(path: Path, user: str, item: str, rating: str | None, time: str | None) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several unrelated classes for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    cols = [str(c) for c in df.columns]
    for col in (user, item, rating, time):
        if col is not None and col not in cols:
            raise DataError(f"{path}: missing column {col!r}; the columns are {cols}")
    if len(df) == 0:
        raise DataError(f"{path}: no rows")

    def fail(col: str, mask: np.ndarray, problem: str) -> None:
        row = int(np.flatnonzero(mask)[0])
        value = df[col].iloc[row]
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or (isinstance(value, float) and math.isnan(value)):
            problem = f"empty {col}"
        raise DataError(f"{path}, row {row + 1} (counting from 1): {problem.format(value=value)}")

    for col in (user, item):
        s = df[col]
        bad = s.isna().to_numpy().copy()
        if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            bad |= (s.astype(str).str.strip() == "").to_numpy()
        if bad.any():
            fail(col, bad, f"empty {col}")
        if pd.api.types.is_float_dtype(s.dtype):
            v = s.to_numpy(dtype=np.float64)
            if np.all(v == np.round(v)):
                df[col] = v.astype(np.int64)
        elif s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            df[col] = _canonical_ids(s.astype(str))
    for col in (rating, time):
        if col is None:
            continue
        s = df[col]
        if col == time and pd.api.types.is_datetime64_any_dtype(s.dtype):
            if s.isna().any():
                fail(col, s.isna().to_numpy(), f"empty {col}")
            df[col] = s.astype("datetime64[s]").astype("int64")
            continue
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(num)
        if bad.any():
            fail(col, bad, f"{col} {{value!r}} is not a finite number")
        df[col] = num
    return df


# ---------------------------------------------------------------------- public loader
def check_arguments(
    user: str,
    item: str,
    rating: str | None,
    time: str | None,
    min_rating: float | None,
    core: int | None,
    duplicates: str,
) -> None:
    """The checks of `load_interactions`' arguments; a bad one raises `ConfigError` naming it."""
    if duplicates not in ("last", "sum", "error"):
        raise ConfigError(f"duplicates must be 'last', 'sum' or 'error', not {duplicates!r}")
    if min_rating is not None and rating is None:
        raise ConfigError("min_rating needs a rating column: pass rating='<column name>'")
    if core is not None and core < 0:
        raise ConfigError(f"core must be ≥ 0, not {core}")
    named = [c for c in (user, item, rating, time) if c is not None]
    if len(set(named)) != len(named):
        raise ConfigError(f"user, item, rating and time must be different columns: {user}, {item}, {rating}, {time}")


def load_interactions(
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
) -> Interactions:
    """Interactions from a CSV/TSV (optionally .gz/.bz2/.xz) or Parquet file with a header row.

    `sep` is taken from the extension or sniffed from the first line when None. `min_rating` keeps
    ratings ≥ it and sets them to 1; `core` applies an iterative k-core filter on users and items.
    Bad input raises `DataError` naming the file, the line (header = line 1) and the problem.
    """
    path = Path(path)
    check_arguments(user, item, rating, time, min_rating, core, duplicates)
    columns: dict[str, Kind] = {user: "id", item: "id"}
    if rating is not None:
        columns[rating] = "float"
    if time is not None:
        columns[time] = "float"

    src: DelimitedFile | None = None
    if _plain_suffix(path) in _PARQUET:
        df = _read_parquet(path, user, item, rating, time)
    else:
        src = DelimitedFile(path, sep if sep is not None else sniff_sep(path, encoding), encoding=encoding)
        df = src.read(columns)
    if duplicates == "error":
        if src is not None:
            src.check_unique(df, [user, item], "interaction")
        elif df.duplicated([user, item]).any():
            row = int(np.flatnonzero(df.duplicated([user, item]).to_numpy())[0])
            raise DataError(
                f"{path}, row {row + 1} (counting from 1): duplicate interaction "
                f"({user} {_scalar(df[user].iloc[row])!r}, {item} {_scalar(df[item].iloc[row])!r})"
            )
    X = Interactions.from_frame(df, user=user, item=item, rating=rating, time=time, duplicates=duplicates)
    X.name = path.name.split(".")[0]
    if min_rating is not None:
        X = X.binarize(min_rating)
    if core:
        X = X.core_filter(core)
    X.meta = {
        "dataset": X.name,
        "source": str(path),
        "min_rating": min_rating,
        "core": core,
        "duplicates": duplicates,
    }
    return X


def _scalar(value: Any) -> Any:
    """A numpy scalar as the plain Python value, for messages."""
    return value.item() if isinstance(value, np.generic) else value
