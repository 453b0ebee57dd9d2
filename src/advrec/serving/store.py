"""Event stores: durable, append-only logs of user–item interactions received over HTTP.

`open_store(url)` picks the back end from the URL:

- `sqlite:///path/to/events.db` (or a bare file path): the embedded default. WAL journal with
  `synchronous=FULL`, so a transaction that returned from `COMMIT` survives a crash of the process and of the
  machine. Several processes may share one file (writers take turns, readers never block). A new file is
  created with mode 0600.
- `postgresql://user@host:port/db`: PostgreSQL through psycopg 3; `COMMIT` returns once the server made the
  transaction durable (`synchronous_commit=on`, its default). A lost connection is reopened on next use.

Both keep raw ids as text: the store outlives any one model, and ids are translated to indices only when a
model is served. A batch may carry an idempotency key: sent again with the same key it is stored once. Keys
are kept as SHA-256 digests next to a digest of the batch, never as text. `delete_user` forgets a user; on
SQLite the raw id is then gone from every byte of the store's files. No message, repr or log line shows a
PostgreSQL password.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import unquote

from advrec.errors import AdvrecError, ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_EVENTS_PER_USER = 10_000
"""Default `limit` of callers of `user_events` / `users_events`: a user's most recent events considered."""
MAX_KEY_LENGTH = 200
"""Longest idempotency key accepted (printable ASCII characters)."""
IDEMPOTENCY_TTL_S = 86_400.0
"""How long an idempotency key is remembered (seconds); older keys are pruned during later appends."""
_PRUNE_EVERY_S = 600.0


class StoreError(AdvrecError, RuntimeError):
    """The event store cannot be opened or written (it names the store URL and the cause)."""


class IdempotencyConflict(StoreError):
    """An idempotency key was sent again with a different batch (it names the key's digest)."""


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
    """What a committed append returns: how many events, their sequence numbers, and whether it was a replay.

    `replayed` is True when the idempotency key had been seen: nothing was stored and the numbers are those
    of the original append.
    """

    count: int
    first_seq: int
    last_seq: int
    replayed: bool = False


def _check_events(events: Sequence[Event]) -> None:
    for pos, e in enumerate(events):
        if not e.user_id or not e.item_id:
            raise StoreError(f"event {pos}: user_id and item_id must be non-empty")
        if e.rating is not None and not math.isfinite(e.rating):
            raise StoreError(f"event {pos}: rating must be finite, got {e.rating}")
        if not math.isfinite(e.timestamp):
            raise StoreError(f"event {pos}: timestamp must be finite, got {e.timestamp}")


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise StoreError(f"limit must be None or an integer ≥ 0, got {limit!r}")


def check_idempotency_key(key: str) -> None:
    """Raises StoreError unless `key` is 1–200 printable ASCII characters (the key itself is not echoed)."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        size = len(key) if isinstance(key, str) else type(key).__name__
        raise StoreError(f"an idempotency key must be 1–{MAX_KEY_LENGTH} printable ASCII characters, got {size}")
    bad = next((pos for pos, ch in enumerate(key) if not " " <= ch <= "~"), None)
    if bad is not None:
        raise StoreError(f"an idempotency key must be printable ASCII: character {bad + 1} is {ord(key[bad]):#x}")


def _key_digest(key: str) -> bytes:
    check_idempotency_key(key)
    return hashlib.sha256(key.encode("ascii")).digest()


def _content_digest(events: Sequence[Event]) -> bytes:
    """SHA-256 of the batch in a canonical form (JSON of the events' fields, in order)."""
    rows = [[e.user_id, e.item_id, None if e.rating is None else float(e.rating), float(e.timestamp)] for e in events]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode()).digest()


def _replayed(key: bytes, content: bytes, found: Sequence[Any]) -> AppendResult:
    """The original result of key `key`, or IdempotencyConflict when it was used for another batch."""
    stored, count, first, last = found
    if bytes(stored) != content:
        raise IdempotencyConflict(
            f"idempotency key sha256:{key.hex()[:16]} was already used for a different batch ({count} events); "
            "send new events under a new key"
        )
    return AppendResult(int(count), int(first), int(last), replayed=True)


# ---------------------------------------------------------------------------------------------- redaction
_PASSWORD_PARAM = re.compile(r"(?i)(?<![\w])((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)")


def _userinfo_password(url: str) -> tuple[int, int] | None:
    """Where the password of a `scheme://user:password@host…` URL lies in `url` (start, end), or None."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return None
    start = scheme_end + 3
    ends = [p for p in (url.find("?", start), url.find("#", start)) if p >= 0]
    at = url.rfind("@", start, min(ends) if ends else len(url))
    colon = url.find(":", start, at) if at >= 0 else -1
    return (colon + 1, at) if colon >= 0 else None


def redact_url(url: str) -> str:
    """`url` (a URL or a libpq `key=value` string) with every password shown as ***."""
    span = _userinfo_password(url)
    if span is not None:
        url = f"{url[: span[0]]}***{url[span[1] :]}"
    return _PASSWORD_PARAM.sub(r"\1***", url)


def _secrets(conninfo: str) -> list[str]:
    """The password texts of `conninfo` (as written and decoded) and of $PGPASSWORD, longest first."""
    found = {m.group(2).strip("'") for m in _PASSWORD_PARAM.finditer(conninfo)}
    span = _userinfo_password(conninfo)
    if span is not None:
        found.add(conninfo[span[0] : span[1]])
    try:
        from psycopg.conninfo import conninfo_to_dict

        parsed = conninfo_to_dict(conninfo)
        found |= {str(parsed[name]) for name in ("password", "sslpassword") if parsed.get(name)}
    except Exception:  # an unparsable string: the patterns above found what there is
        pass
    found |= {unquote(text) for text in found}
    found.add(os.environ.get("PGPASSWORD", ""))
    return sorted((s for s in found if s and s != "***"), key=len, reverse=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` on one line, with passwords and every text of `secrets` replaced by ***."""
    text = _PASSWORD_PARAM.sub(r"\1***", " ".join(text.split()))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# ---------------------------------------------------------------------------------------------- interface
class EventStore:
    """Interface of an event store. `append` returns only after the events are committed."""

    url: str

    def append(self, events: Sequence[Event], idempotency_key: str | None = None) -> AppendResult:
        """Stores `events` in one transaction. With a key already seen: stores nothing, returns the first result."""
        raise NotImplementedError

    def user_events(self, user_id: str, limit: int | None = None) -> list[StoredEvent]:
        """The user's events in the order they were stored; with `limit`, only the `limit` most recent."""
        raise NotImplementedError

    def users_events(self, user_ids: Sequence[str], limit: int | None = None) -> dict[str, list[StoredEvent]]:
        """The events of several users by user (at most `limit` most recent each); users without events are left out."""
        raise NotImplementedError

    def all_events(self, after_seq: int = 0) -> list[StoredEvent]:
        """Every event with a sequence number above `after_seq`, in order."""
        raise NotImplementedError

    def has_user(self, user_id: str) -> bool:
        """True when the store holds at least one event of the user."""
        raise NotImplementedError

    def delete_user(self, user_id: str) -> int:
        """Removes every event of the user in one durable transaction; returns how many were removed."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def ping(self) -> bool:
        """True when the store answers a trivial query."""
        raise NotImplementedError

    def describe(self) -> str:
        """The kind of store, safe to show anyone (no path, host or credentials)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return bool(getattr(self, "_closed", False))

    def __enter__(self) -> Self:
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
CREATE TABLE IF NOT EXISTS idempotency (
    key_sha256 BLOB PRIMARY KEY,
    content_sha256 BLOB NOT NULL,
    count INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_by_created ON idempotency (created);
"""
_SQLITE_COLUMNS = "seq, user_id, item_id, rating, ts"


def _create_private(path: Path) -> None:
    """Creates `path` empty with mode 0600 unless it exists; SQLite gives its -wal and -shm files the same mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as err:
        raise StoreError(f"cannot create the event store {path}: {err.strerror}") from err
    os.close(fd)


class _Reader:
    """One thread's read connection, closed when the thread ends (its thread-local slot goes) or the store closes."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        weakref.finalize(self, conn.close)


class SQLiteEventStore(EventStore):
    """Events in one SQLite file: WAL journal, `synchronous=FULL`, `secure_delete=ON`, one writer connection and
    one reader per thread. A new file gets mode 0600; an existing file keeps its mode."""

    def __init__(
        self, path: str | Path, busy_timeout_ms: int = 10_000, idempotency_ttl_s: float = IDEMPOTENCY_TTL_S
    ) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout_ms = busy_timeout_ms
        self.idempotency_ttl_s = idempotency_ttl_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the writer connection
        self._readers_lock = threading.Lock()
        self._local = threading.local()
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._closed = False
        self._pruned_at = 0.0
        _create_private(self.path)
        self._writer = self._connect()
        try:
            mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: SQLite refused WAL journal mode (got {mode!r})")
            self._writer.executescript(SQLITE_SCHEMA)
        except (sqlite3.Error, StoreError) as err:
            self._writer.close()
            if isinstance(err, StoreError):
                raise
            raise StoreError(f"cannot open the event store {self.path}: {err}") from err

    def describe(self) -> str:
        return "sqlite"

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")  # freed space is zeroed, not left readable in the file
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the event store {self.path}: {err}") from err
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the event store {self.path} is closed")

    def _reader(self) -> sqlite3.Connection:
        self._check_open()
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = _Reader(self._connect())
            self._local.reader = reader
            with self._readers_lock:
                self._readers.add(reader)
        return reader.conn

    def _write(self, doing: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work` on the writer connection inside `BEGIN IMMEDIATE … COMMIT` (rolled back when it raises)."""
        with self._lock:
            self._check_open()
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise StoreError(f"cannot {doing} {self.path}: {err}") from err
        return result

    def append(self, events: Sequence[Event], idempotency_key: str | None = None) -> AppendResult:
        key = None if idempotency_key is None else _key_digest(idempotency_key)
        if not events:
            return AppendResult(0, 0, 0)
        _check_events(events)
        content = _content_digest(events) if key is not None else b""
        now = time.time()
        rows = [
            (e.user_id, e.item_id, None if e.rating is None else float(e.rating), float(e.timestamp), now)
            for e in events
        ]

        def work(conn: sqlite3.Connection) -> AppendResult:
            if key is not None:
                found = conn.execute(
                    "SELECT content_sha256, count, first_seq, last_seq FROM idempotency WHERE key_sha256 = ?", (key,)
                ).fetchone()
                if found is not None:
                    return _replayed(key, content, found)
            conn.executemany("INSERT INTO events (user_id, item_id, rating, ts, received) VALUES (?, ?, ?, ?, ?)", rows)
            last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
            # BEGIN IMMEDIATE holds the database's write lock, so the batch got consecutive sequence numbers.
            result = AppendResult(len(rows), last - len(rows) + 1, last)
            if key is not None:
                conn.execute(
                    "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                    (key, content, result.count, result.first_seq, result.last_seq, now),
                )
                self._prune_keys(conn, now)
            return result

        return self._write(f"write {len(rows)} events to", work)

    def _prune_keys(self, conn: sqlite3.Connection, now: float) -> None:
        if now - self._pruned_at >= min(_PRUNE_EVERY_S, self.idempotency_ttl_s):
            conn.execute("DELETE FROM idempotency WHERE created < ?", (now - self.idempotency_ttl_s,))
            self._pruned_at = now

    def delete_user(self, user_id: str) -> int:
        """Removes the user's events, then rewrites the file (`VACUUM`) and empties the WAL, so that no byte of
        `events.db`, `-wal` or `-shm` holds the raw id. A StoreError after the delete committed says so; calling
        again finishes the rewrite."""
        removed = self._write(
            "delete the events of a user from",
            lambda c: c.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount,
        )
        with self._lock:
            self._check_open()
            try:
                self._writer.execute("VACUUM")
                busy = self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as err:
                raise StoreError(
                    f"{self.path}: {removed} events deleted, but rewriting the file failed: {err}"
                ) from err
        if busy:
            raise StoreError(
                f"{self.path}: {removed} events deleted, but other connections kept the WAL busy, so it may still hold "
                "copies of them; call delete_user again"
            )
        return max(int(removed), 0)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"cannot read the event store {self.path}: {err}") from err

    def user_events(self, user_id: str, limit: int | None = None) -> list[StoredEvent]:
        _check_limit(limit)
        if limit is None:
            sql = f"SELECT {_SQLITE_COLUMNS} FROM events WHERE user_id = ? ORDER BY seq"
            return _rows_to_events(self._query(sql, (user_id,)))
        sql = f"SELECT {_SQLITE_COLUMNS} FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?"
        return _rows_to_events(self._query(sql, (user_id, limit))[::-1])

    def users_events(self, user_ids: Sequence[str], limit: int | None = None) -> dict[str, list[StoredEvent]]:
        _check_limit(limit)
        unique = list(dict.fromkeys(user_ids))
        rows: list[Any] = []
        if limit is None:
            for start in range(0, len(unique), 500):  # bounded number of SQL variables per query
                chunk = tuple(unique[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows += self._query(f"SELECT {_SQLITE_COLUMNS} FROM events WHERE user_id IN ({marks})", chunk)
        else:
            rows = self._recent_of_each(unique, limit)
        return _by_user(sorted(_rows_to_events(rows), key=lambda e: e.seq))

    def _recent_of_each(self, user_ids: Sequence[str], limit: int) -> list[Any]:
        """The `limit` most recent rows of each user: one index range per user, all read in one snapshot."""
        sql = f"SELECT {_SQLITE_COLUMNS} FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?"
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                return [row for u in user_ids for row in conn.execute(sql, (u, limit)).fetchall()]
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise StoreError(f"cannot read the event store {self.path}: {err}") from err

    def all_events(self, after_seq: int = 0) -> list[StoredEvent]:
        sql = f"SELECT {_SQLITE_COLUMNS} FROM events WHERE seq > ? ORDER BY seq"
        return _rows_to_events(self._query(sql, (after_seq,)))

    def has_user(self, user_id: str) -> bool:
        return bool(self._query("SELECT EXISTS (SELECT 1 FROM events WHERE user_id = ?)", (user_id,))[0][0])

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events", ())[0][0])

    def ping(self) -> bool:
        try:
            self._query("SELECT 1", ())
        except StoreError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                readers = list(self._readers)
                self._readers.clear()
            for reader in readers:
                reader.conn.close()
            self._writer.close()


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
CREATE TABLE IF NOT EXISTS {keys} (
    key_sha256 BYTEA PRIMARY KEY,
    content_sha256 BYTEA NOT NULL,
    count INTEGER NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS {keys}_by_created ON {keys} (created);
"""
_KEYS_SUFFIX = "_idempotency"
_MAX_TABLE_NAME = 63 - len(_KEYS_SUFFIX + "_by_created")  # PostgreSQL truncates longer identifiers


class PostgresEventStore(EventStore):
    """Events in a PostgreSQL table (psycopg 3), idempotency keys in `<table>_idempotency`: one writer and one
    reader connection, each behind a lock. A connection found broken is closed and reopened on next use (reads
    try once more at once; writes raise StoreError, and the caller may resend with the same idempotency key)."""

    def __init__(
        self,
        url: str,
        table: str = "advrec_events",
        application_name: str = "advrec",
        connect_timeout_s: int = 5,
        idempotency_ttl_s: float = IDEMPOTENCY_TTL_S,
    ) -> None:
        try:
            import psycopg
        except ImportError as err:  # pragma: no cover - the serve extra installs it
            raise StoreError("a postgresql:// store needs psycopg: pip install 'advrec[serve]'") from err
        if not table.replace("_", "").isalnum() or len(table) > _MAX_TABLE_NAME:
            raise ConfigError(
                f"table name {table!r} must be letters, digits and underscores, at most {_MAX_TABLE_NAME}"
            )
        self.url = redact_url(url)
        self.table = table
        self.keys_table = table + _KEYS_SUFFIX
        self.application_name = application_name
        self.connect_timeout_s = connect_timeout_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self._conninfo = url
        self._secrets = _secrets(url)
        self._psycopg = psycopg
        self._conns: dict[str, Any] = {"writer": None, "reader": None}
        self._locks = {"writer": threading.Lock(), "reader": threading.Lock()}
        self._closed = False
        self._pruned_at = 0.0
        try:
            self._call("writer", "cannot open the event store", self._create_schema)
        except StoreError:
            self.close()
            raise

    def _create_schema(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            conn.execute(POSTGRES_SCHEMA.format(table=self.table, keys=self.keys_table))

    def describe(self) -> str:
        return "postgresql"

    def __repr__(self) -> str:
        return f"PostgresEventStore({self.url!r}, table={self.table!r})"

    def _connection(self, which: str) -> Any:
        conn = self._conns[which]
        if conn is None or conn.closed:
            conn = self._psycopg.connect(
                self._conninfo,
                autocommit=which == "reader",
                connect_timeout=max(int(self.connect_timeout_s), 1),
                application_name=self.application_name,
            )
            self._conns[which] = conn
        return conn

    def _drop_if_broken(self, which: str, reason: str) -> bool:
        """Closes the `which` connection when it is broken (it is reopened on next use); True when it was."""
        conn = self._conns[which]
        if conn is None or not (conn.closed or conn.broken):
            return False
        try:
            conn.close()
        except Exception:  # already dead: nothing to release
            pass
        self._conns[which] = None
        log.warning("event store %s: %s connection lost (%s); it is reopened on next use", self.url, which, reason)
        return True

    def _call(self, which: str, doing: str, work: Callable[[Any], T], retry: bool = False) -> T:
        """Runs `work` on the `which` connection. psycopg errors become a StoreError whose text (and chain) holds
        no password; with `retry`, a connection found broken is reopened and `work` runs once more."""
        with self._locks[which]:
            for _ in range(2 if retry else 1):
                if self._closed:
                    raise StoreError(f"the event store {self.url} is closed")
                reused = self._conns[which] is not None
                try:
                    return work(self._connection(which))
                except self._psycopg.Error as err:
                    reason = _scrub(str(err), self._secrets) or type(err).__name__
                if not (self._drop_if_broken(which, reason) and reused):
                    break
        raise StoreError(f"{doing} {self.url}: {reason}")  # raised outside `except`: no chained psycopg error

    def append(self, events: Sequence[Event], idempotency_key: str | None = None) -> AppendResult:
        key = None if idempotency_key is None else _key_digest(idempotency_key)
        if not events:
            return AppendResult(0, 0, 0)
        _check_events(events)
        content = _content_digest(events) if key is not None else b""
        now = time.time()
        params = (
            now,
            [e.user_id for e in events],
            [e.item_id for e in events],
            [None if e.rating is None else float(e.rating) for e in events],
            [float(e.timestamp) for e in events],
        )

        def work(conn: Any) -> AppendResult:
            with conn.transaction():
                if key is not None:
                    found = self._claim_key(conn, key, content, now)
                    if found is not None:
                        return _replayed(key, content, found)
                sql = (
                    f"INSERT INTO {self.table} (user_id, item_id, rating, ts, received) SELECT u, i, r, t, %s "
                    "FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[]) AS x(u, i, r, t) RETURNING seq"
                )
                seqs = [int(r[0]) for r in conn.execute(sql, params).fetchall()]
                result = AppendResult(len(seqs), min(seqs), max(seqs))
                if key is not None:
                    conn.execute(
                        f"UPDATE {self.keys_table} SET count = %s, first_seq = %s, last_seq = %s WHERE key_sha256 = %s",
                        (result.count, result.first_seq, result.last_seq, key),
                    )
                    self._prune_keys(conn, now)
            return result

        return self._call("writer", f"cannot write {len(events)} events to", work)

    def _claim_key(self, conn: Any, key: bytes, content: bytes, now: float) -> Sequence[Any] | None:
        """Records `key` in the open transaction; None when it is new, else its stored row. The primary key makes a
        concurrent claim of the same key wait for this transaction and then find the committed row."""
        claimed = conn.execute(
            f"INSERT INTO {self.keys_table} (key_sha256, content_sha256, count, first_seq, last_seq, created) "
            "VALUES (%s, %s, 0, 0, 0, %s) ON CONFLICT (key_sha256) DO NOTHING RETURNING key_sha256",
            (key, content, now),
        ).fetchone()
        if claimed is not None:
            return None
        found = conn.execute(
            f"SELECT content_sha256, count, first_seq, last_seq FROM {self.keys_table} WHERE key_sha256 = %s", (key,)
        ).fetchone()
        if found is None:  # pruned between the two statements
            raise StoreError(
                f"idempotency key sha256:{key.hex()[:16]} expired while being checked; send the batch again"
            )
        return found

    def _prune_keys(self, conn: Any, now: float) -> None:
        if now - self._pruned_at >= min(_PRUNE_EVERY_S, self.idempotency_ttl_s):
            conn.execute(f"DELETE FROM {self.keys_table} WHERE created < %s", (now - self.idempotency_ttl_s,))
            self._pruned_at = now

    def delete_user(self, user_id: str) -> int:
        """Deletes the user's rows in one transaction, then `VACUUM`s the table so their space is reclaimed. The
        server's files may keep old bytes (WAL segments, unvacuumed pages, backups) out of this store's reach."""

        def work(conn: Any) -> int:
            with conn.transaction():
                return int(conn.execute(f"DELETE FROM {self.table} WHERE user_id = %s", (user_id,)).rowcount)

        removed = self._call("writer", "cannot delete the events of a user from", work)
        try:
            self._call("reader", "cannot vacuum", lambda c: c.execute(f"VACUUM {self.table}"), retry=True)
        except StoreError as err:
            log.warning("%s; %d deleted events stay in the table's files until autovacuum reclaims them", err, removed)
        return removed

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._call("reader", "cannot read the event store", lambda c: c.execute(sql, params).fetchall(), True)

    def user_events(self, user_id: str, limit: int | None = None) -> list[StoredEvent]:
        _check_limit(limit)
        sql = f"SELECT seq, user_id, item_id, rating, ts FROM {self.table} WHERE user_id = %s ORDER BY seq"
        if limit is None:
            return _rows_to_events(self._query(sql, (user_id,)))
        return _rows_to_events(self._query(f"{sql} DESC LIMIT %s", (user_id, limit))[::-1])

    def users_events(self, user_ids: Sequence[str], limit: int | None = None) -> dict[str, list[StoredEvent]]:
        _check_limit(limit)
        unique = list(dict.fromkeys(user_ids))
        if limit is None:
            sql = f"SELECT seq, user_id, item_id, rating, ts FROM {self.table} WHERE user_id = ANY(%s) ORDER BY seq"
            return _by_user(_rows_to_events(self._query(sql, (unique,))))
        sql = (  # one index range per user
            "SELECT e.seq, e.user_id, e.item_id, e.rating, e.ts FROM unnest(%s::text[]) AS u(id) CROSS JOIN LATERAL "
            f"(SELECT * FROM {self.table} WHERE user_id = u.id ORDER BY seq DESC LIMIT %s) AS e ORDER BY e.seq"
        )
        return _by_user(_rows_to_events(self._query(sql, (unique, limit))))

    def all_events(self, after_seq: int = 0) -> list[StoredEvent]:
        sql = f"SELECT seq, user_id, item_id, rating, ts FROM {self.table} WHERE seq > %s ORDER BY seq"
        return _rows_to_events(self._query(sql, (after_seq,)))

    def has_user(self, user_id: str) -> bool:
        return bool(self._query(f"SELECT EXISTS (SELECT 1 FROM {self.table} WHERE user_id = %s)", (user_id,))[0][0])

    def count(self) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM {self.table}", ())[0][0])

    def ping(self) -> bool:
        try:
            self._query("SELECT 1", ())
        except StoreError:
            return False
        return True

    def close(self) -> None:
        with self._locks["writer"], self._locks["reader"]:
            if self._closed:
                return
            self._closed = True
            for which, conn in self._conns.items():
                if conn is not None:
                    conn.close()
                self._conns[which] = None


def open_store(url: str | Path, table: str = "advrec_events") -> EventStore:
    """An event store from a URL: `sqlite:///file.db`, a bare file path, or `postgresql://…` (events in `table`)."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresEventStore(text, table=table)
    if text.startswith("sqlite:///"):
        return SQLiteEventStore(text[len("sqlite:///") :])  # sqlite:///rel.db, sqlite:////abs/path.db
    if "://" in text:
        raise ConfigError(
            f"unknown event store URL {redact_url(text)!r}: use sqlite:///path/events.db or postgresql://host/db"
        )
    return SQLiteEventStore(text)
