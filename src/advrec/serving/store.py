"""Event stores: durable, append-only logs of user–item interactions received over HTTP.

`open_store(url)` picks the back end from the URL:

- `sqlite:///path/to/events.db` (or a bare file path): the embedded default. WAL journal with
  `synchronous=FULL`, so a transaction that returned from `COMMIT` survives a crash of the process and of the
  machine. Several processes may share one file (writers take turns, readers never block).
- `postgresql://user@host:port/db`: PostgreSQL through psycopg 3; `COMMIT` returns once the server made the
  transaction durable (`synchronous_commit=on`, its default).

Both keep raw ids as text: the store outlives any one model, and ids are translated to indices only when a
model is served.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advrec.errors import AdvrecError, ConfigError


class StoreError(AdvrecError, RuntimeError):
    """The event store cannot be opened or written (it names the store URL and the cause)."""


@dataclass(frozen=True)
class Event:
    """One interaction: raw user and item ids, an optional rating, and its time (Unix seconds)."""

    user_id: str
    item_id: str
    rating: float | None = None
    timestamp: float = 0.0


@dataclass(frozen=True)
class StoredEvent(Event):
    """An event read back, with the sequence number the store gave it."""

    seq: int = 0


@dataclass(frozen=True)
class AppendResult:
    """What a committed append returns: how many events, and the sequence numbers they got."""

    count: int
    first_seq: int
    last_seq: int


def _check_events(events: Sequence[Event]) -> None:
    for pos, e in enumerate(events):
        if not e.user_id or not e.item_id:
            raise StoreError(f"event {pos}: user_id and item_id must be non-empty")
        if e.rating is not None and not math.isfinite(e.rating):
            raise StoreError(f"event {pos}: rating must be finite, got {e.rating}")
        if not math.isfinite(e.timestamp):
            raise StoreError(f"event {pos}: timestamp must be finite, got {e.timestamp}")


class EventStore:
    """Interface of an event store. `append` returns only after the events are committed."""

    url: str

    def append(self, events: Sequence[Event]) -> AppendResult:
        raise NotImplementedError

    def user_events(self, user_id: str) -> list[StoredEvent]:
        """The user's events in the order they were stored."""
        raise NotImplementedError

    def users_events(self, user_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        """The events of several users (one query), by user; users without events are left out."""
        raise NotImplementedError

    def all_events(self, after_seq: int = 0) -> list[StoredEvent]:
        """Every event with a sequence number above `after_seq`, in order."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def ping(self) -> bool:
        """True when the store answers a trivial query."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return bool(getattr(self, "_closed", False))

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _by_user(events: list[StoredEvent]) -> dict[str, list[StoredEvent]]:
    out: dict[str, list[StoredEvent]] = {}
    for e in events:
        out.setdefault(e.user_id, []).append(e)
    return out


def _rows_to_events(rows: Sequence[Sequence[Any]]) -> list[StoredEvent]:
    return [StoredEvent(user_id=u, item_id=i, rating=r, timestamp=float(t), seq=int(s)) for s, u, i, r, t in rows]


# ---------------------------------------------------------------------------------------------- SQLite
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    rating REAL,
    ts REAL NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, seq);
"""


class SQLiteEventStore(EventStore):
    """Events in one SQLite file: WAL journal, `synchronous=FULL`, one writer connection, one reader per thread."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout_ms = busy_timeout_ms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._writer = self._connect()
        mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL journal mode (got {mode!r})")
        self._writer.executescript(SQLITE_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the event store {self.path}: {err}") from err
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the event store {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def append(self, events: Sequence[Event]) -> AppendResult:
        if not events:
            return AppendResult(0, 0, 0)
        _check_events(events)
        now = time.time()
        rows = [(e.user_id, e.item_id, e.rating, e.timestamp, now) for e in events]
        with self._lock:
            if self._closed:
                raise StoreError(f"the event store {self.path} is closed")
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT INTO events (user_id, item_id, rating, ts, received) VALUES (?, ?, ?, ?, ?)", rows
                    )
                    last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise StoreError(f"cannot write {len(rows)} events to {self.path}: {err}") from err
        # BEGIN IMMEDIATE holds the database's write lock, so the batch got consecutive sequence numbers.
        return AppendResult(len(rows), last - len(rows) + 1, last)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[StoredEvent]:
        try:
            rows = self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"cannot read the event store {self.path}: {err}") from err
        return _rows_to_events(rows)

    def user_events(self, user_id: str) -> list[StoredEvent]:
        return self._query(
            "SELECT seq, user_id, item_id, rating, ts FROM events WHERE user_id = ? ORDER BY seq", (user_id,)
        )

    def users_events(self, user_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        unique = list(dict.fromkeys(user_ids))
        found: list[StoredEvent] = []
        for start in range(0, len(unique), 500):  # bounded number of SQL variables per query
            chunk = tuple(unique[start : start + 500])
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT seq, user_id, item_id, rating, ts FROM events WHERE user_id IN ({marks}) ORDER BY seq"
            found += self._query(sql, chunk)
        return _by_user(sorted(found, key=lambda e: e.seq))

    def all_events(self, after_seq: int = 0) -> list[StoredEvent]:
        return self._query(
            "SELECT seq, user_id, item_id, rating, ts FROM events WHERE seq > ? ORDER BY seq", (after_seq,)
        )

    def count(self) -> int:
        try:
            return int(self._reader().execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except sqlite3.Error as err:
            raise StoreError(f"cannot read the event store {self.path}: {err}") from err

    def ping(self) -> bool:
        try:
            self._reader().execute("SELECT 1").fetchone()
        except (sqlite3.Error, StoreError):
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in [*self._readers, self._writer]:
                conn.close()
            self._readers.clear()


# ---------------------------------------------------------------------------------------------- PostgreSQL
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    seq BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    rating DOUBLE PRECISION,
    ts DOUBLE PRECISION NOT NULL,
    received DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS {table}_by_user ON {table} (user_id, seq);
"""


class PostgresEventStore(EventStore):
    """Events in a PostgreSQL table (psycopg 3): one writer and one reader connection, each behind a lock."""

    def __init__(self, url: str, table: str = "advrec_events") -> None:
        try:
            import psycopg
        except ImportError as err:  # pragma: no cover - the serve extra installs it
            raise StoreError("a postgresql:// store needs psycopg: pip install 'advrec[serve]'") from err
        if not table.replace("_", "").isalnum():
            raise ConfigError(f"table name {table!r} must be letters, digits and underscores")
        self.url = url
        self.table = table
        self._psycopg = psycopg
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        try:
            self._writer = psycopg.connect(url, autocommit=False)
            self._reader = psycopg.connect(url, autocommit=True)
            with self._writer.transaction():
                self._writer.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (table,))
                self._writer.execute(POSTGRES_SCHEMA.format(table=table))  # type: ignore[call-overload]
        except psycopg.Error as err:
            raise StoreError(f"cannot open the event store {self._safe_url()}: {err}".strip()) from err

    def _safe_url(self) -> str:
        """The URL without its password, for messages."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.url

    def __repr__(self) -> str:
        return f"PostgresEventStore({self._safe_url()!r}, table={self.table!r})"

    def append(self, events: Sequence[Event]) -> AppendResult:
        if not events:
            return AppendResult(0, 0, 0)
        _check_events(events)
        now = time.time()
        sql = (
            f"INSERT INTO {self.table} (user_id, item_id, rating, ts, received) "
            "SELECT u, i, r, t, %s FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[]) AS x(u, i, r, t) "
            "RETURNING seq"
        )
        params = (
            now,
            [e.user_id for e in events],
            [e.item_id for e in events],
            [e.rating for e in events],
            [e.timestamp for e in events],
        )
        with self._write_lock:
            if self._closed:
                raise StoreError(f"the event store {self._safe_url()} is closed")
            try:
                with self._writer.transaction():
                    seqs = [int(r[0]) for r in self._writer.execute(sql, params).fetchall()]  # type: ignore[arg-type]
            except self._psycopg.Error as err:
                raise StoreError(f"cannot write {len(events)} events to {self._safe_url()}: {err}") from err
        return AppendResult(len(seqs), min(seqs), max(seqs))

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._read_lock:
            if self._closed:
                raise StoreError(f"the event store {self._safe_url()} is closed")
            try:
                return list(self._reader.execute(sql, params).fetchall())  # type: ignore[arg-type]
            except self._psycopg.Error as err:
                raise StoreError(f"cannot read the event store {self._safe_url()}: {err}") from err

    def user_events(self, user_id: str) -> list[StoredEvent]:
        sql = f"SELECT seq, user_id, item_id, rating, ts FROM {self.table} WHERE user_id = %s ORDER BY seq"
        return _rows_to_events(self._query(sql, (user_id,)))

    def users_events(self, user_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        sql = f"SELECT seq, user_id, item_id, rating, ts FROM {self.table} WHERE user_id = ANY(%s) ORDER BY seq"
        return _by_user(_rows_to_events(self._query(sql, (list(dict.fromkeys(user_ids)),))))

    def all_events(self, after_seq: int = 0) -> list[StoredEvent]:
        sql = f"SELECT seq, user_id, item_id, rating, ts FROM {self.table} WHERE seq > %s ORDER BY seq"
        return _rows_to_events(self._query(sql, (after_seq,)))

    def count(self) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM {self.table}", ())[0][0])

    def ping(self) -> bool:
        try:
            self._query("SELECT 1", ())
        except StoreError:
            return False
        return True

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            self._reader.close()


def open_store(url: str | Path, table: str = "advrec_events") -> EventStore:
    """An event store from a URL: `sqlite:///file.db`, a bare file path, or `postgresql://…` (events in `table`)."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresEventStore(text, table=table)
    if text.startswith("sqlite:///"):
        return SQLiteEventStore(text[len("sqlite:///") :])  # sqlite:///rel.db, sqlite:////abs/path.db
    if "://" in text:
        raise ConfigError(f"unknown event store URL {text!r}: use sqlite:///path/events.db or postgresql://host/db")
    return SQLiteEventStore(text)
