"""Event stores, SQLite and (when $ADVREC_TEST_POSTGRES_URL is set) PostgreSQL: the same contract for both."""

from __future__ import annotations

import gc
import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from serving_helpers import postgres_url

from advrec.errors import ConfigError
from advrec.serving.store import (
    MAX_EVENTS_PER_USER,
    AppendResult,
    Event,
    EventStore,
    IdempotencyConflict,
    PostgresEventStore,
    SQLiteEventStore,
    StoreError,
    open_store,
)

Opener = Callable[[], EventStore]


@pytest.fixture
def pg_tables(pg_table: str) -> Iterator[str]:
    """`pg_table`, whose idempotency table is dropped afterwards too."""
    yield pg_table
    import psycopg

    with psycopg.connect(str(postgres_url()), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {pg_table}_idempotency")  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A function that opens (or reopens) one store; every store it opened is closed afterwards."""
    opened: list[EventStore] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
        table = "advrec_events"
    else:
        table = request.getfixturevalue("pg_tables")
        url = str(postgres_url())

    def open_() -> EventStore:
        store = open_store(url, table=table)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def events(n: int, user: str = "u1", start: int = 0) -> list[Event]:
    return [Event(user, f"i{start + j}", rating=float(j % 5), timestamp=1000.0 + start + j) for j in range(n)]


def test_append_returns_consecutive_sequence_numbers_and_reads_back(opener: Opener) -> None:
    store = opener()
    first = store.append(events(3))
    second = store.append([Event("u2", "i9", None, 5.0)])
    assert (first.count, first.last_seq - first.first_seq) == (3, 2)
    assert second.first_seq == second.last_seq == first.last_seq + 1
    got = store.user_events("u1")
    assert [e.item_id for e in got] == ["i0", "i1", "i2"]
    assert [e.seq for e in got] == list(range(first.first_seq, first.last_seq + 1))
    assert got[1].rating == 1.0 and got[1].timestamp == 1001.0
    assert store.user_events("u2")[0].rating is None
    assert store.user_events("nobody") == []
    both = store.users_events(["u2", "u1", "nobody", "u1"])
    assert sorted(both) == ["u1", "u2"] and [e.item_id for e in both["u1"]] == ["i0", "i1", "i2"]
    assert store.count() == 4
    assert [e.seq for e in store.all_events(after_seq=first.last_seq)] == [second.first_seq]
    assert store.ping()


def test_events_survive_reopening(opener: Opener) -> None:
    store = opener()
    store.append(events(5, "alice"))
    store.close()
    again = opener()
    assert [e.item_id for e in again.user_events("alice")] == [f"i{j}" for j in range(5)]


def test_empty_append_is_a_no_op_and_bad_events_store_nothing(opener: Opener) -> None:
    store = opener()
    assert store.append([]).count == 0
    with pytest.raises(StoreError, match="rating must be finite"):
        store.append([Event("u", "i", rating=float("nan"), timestamp=1.0)])
    with pytest.raises(StoreError, match="non-empty"):
        store.append([Event("", "i", None, 1.0)])
    assert store.count() == 0


def test_concurrent_appends_lose_nothing_and_batches_stay_contiguous(opener: Opener) -> None:
    store = opener()
    results = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for b in range(10):
            r = store.append(events(20, f"user{t}", start=b * 20))
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.count() == 4 * 10 * 20
    assert all(r.last_seq - r.first_seq == 19 for r in results)
    seqs = sorted(s for r in results for s in range(r.first_seq, r.last_seq + 1))
    assert len(set(seqs)) == len(seqs) == 800
    for t in range(4):
        assert [e.item_id for e in store.user_events(f"user{t}")] == [f"i{j}" for j in range(200)]


def test_closed_store_refuses_and_ping_fails(opener: Opener) -> None:
    store = opener()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append(events(1))
    assert not store.ping()


def test_sqlite_uses_wal_and_full_synchronous(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "e.db")
    try:
        store.append(events(2))
        conn = store._reader()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()
    # a second process (here: a plain connection) reads what was committed
    assert sqlite3.connect(tmp_path / "e.db").execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2


def test_open_store_urls(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path / 'a.db'}", str(tmp_path / "b.db")):
        with open_store(url) as store:
            assert isinstance(store, SQLiteEventStore)
    with pytest.raises(ConfigError, match="unknown event store URL"):
        open_store("redis://localhost/0")


def test_describe_names_only_the_kind(opener: Opener) -> None:
    store = opener()
    assert store.describe() in ("sqlite", "postgresql")
    assert store.describe() == ("postgresql" if isinstance(store, PostgresEventStore) else "sqlite")


# ---------------------------------------------------------------------------------------------- idempotency
def test_a_batch_sent_again_under_its_key_is_stored_once(opener: Opener) -> None:
    store = opener()
    first = store.append(events(3), idempotency_key="batch-1")
    assert first == AppendResult(3, first.first_seq, first.first_seq + 2) and not first.replayed
    again = store.append(events(3), idempotency_key="batch-1")
    assert again == replace(first, replayed=True)
    assert store.count() == 3
    store.close()
    reopened = opener()  # keys are stored with the events, not in memory
    assert reopened.append(events(3), idempotency_key="batch-1") == replace(first, replayed=True)
    assert reopened.append(events(3), idempotency_key="batch-2").first_seq == first.last_seq + 1
    assert reopened.append(events(3)).count == 3  # without a key: stored every time
    assert reopened.count() == 9


def test_a_key_sent_with_other_events_conflicts_and_stores_nothing(opener: Opener) -> None:
    store = opener()
    store.append([Event("alice-private", "i1", 1.0, 1.0)], idempotency_key="k-1")
    digest = hashlib.sha256(b"k-1").hexdigest()[:16]
    with pytest.raises(IdempotencyConflict, match=f"sha256:{digest}") as info:
        store.append([Event("alice-private", "i2", 1.0, 1.0)], idempotency_key="k-1")
    assert isinstance(info.value, StoreError)
    assert "alice-private" not in str(info.value) and "i2" not in str(info.value)
    with pytest.raises(IdempotencyConflict):  # the timestamp is part of the batch too
        store.append([Event("alice-private", "i1", 1.0, 2.0)], idempotency_key="k-1")
    assert [e.item_id for e in store.all_events()] == ["i1"]


def test_idempotency_keys_must_be_1_to_200_printable_ascii_characters(opener: Opener) -> None:
    store = opener()
    for bad in ("", "x" * 201, "clé", "tab\there", "new\nline", "\x7f"):
        with pytest.raises(StoreError, match="idempotency key") as info:
            store.append(events(1), idempotency_key=bad)
        assert not bad or bad not in str(info.value)
    with pytest.raises(StoreError, match="idempotency key"):  # checked even when there is nothing to store
        store.append([], idempotency_key="")
    assert store.count() == 0
    assert store.append(events(1), idempotency_key="x" * 200).count == 1
    assert store.append(events(1), idempotency_key=" !~{}").count == 1


def test_sqlite_keeps_only_digests_of_keys_and_batches(tmp_path: Path) -> None:
    with SQLiteEventStore(tmp_path / "e.db") as store:
        store.append([Event("user-secret-42", "i1", None, 1.0)], idempotency_key="key-secret-42")
    rows = sqlite3.connect(tmp_path / "e.db").execute("SELECT * FROM idempotency").fetchall()
    assert len(rows) == 1 and rows[0][0] == hashlib.sha256(b"key-secret-42").digest()
    assert all(b"secret" not in bytes(v) for v in rows[0][:2]) and "secret" not in repr(rows)


def test_sqlite_events_and_their_key_commit_together(tmp_path: Path) -> None:
    with SQLiteEventStore(tmp_path / "e.db") as store:
        raw = sqlite3.connect(tmp_path / "e.db", isolation_level=None)
        raw.execute("CREATE TRIGGER refuse BEFORE INSERT ON idempotency BEGIN SELECT RAISE(ABORT, 'refused'); END")
        with pytest.raises(StoreError, match="refused"):
            store.append(events(4), idempotency_key="k")
        assert store.count() == 0  # the events were rolled back with their key
        raw.execute("DROP TRIGGER refuse")
        assert not store.append(events(4), idempotency_key="k").replayed
        assert store.count() == 4


def test_postgres_events_and_their_key_commit_together(pg_tables: str) -> None:
    import psycopg

    url = str(postgres_url())
    with open_store(url, table=pg_tables) as store, psycopg.connect(url, autocommit=True) as raw:
        raw.execute(f"ALTER TABLE {pg_tables}_idempotency ADD CONSTRAINT refuse CHECK (count < 0) NOT VALID")  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="refuse"):
            store.append(events(4), idempotency_key="k")
        assert store.count() == 0
        assert raw.execute(f"SELECT COUNT(*) FROM {pg_tables}_idempotency").fetchone() == (0,)  # type: ignore[arg-type]
        raw.execute(f"ALTER TABLE {pg_tables}_idempotency DROP CONSTRAINT refuse")  # type: ignore[arg-type]
        assert not store.append(events(4), idempotency_key="k").replayed
        assert store.count() == 4


def test_concurrent_appends_under_one_key_store_one_copy(opener: Opener) -> None:
    stores = [opener(), opener()]  # two connections (two processes would do the same)
    rounds = 15
    barrier = threading.Barrier(2)
    results: list[list[AppendResult]] = [[], []]

    def worker(t: int) -> None:
        for r in range(rounds):
            barrier.wait()
            results[t].append(stores[t].append(events(5, f"user{r}"), idempotency_key=f"round-{r}"))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert stores[0].count() == rounds * 5
    for a, b in zip(*results, strict=True):
        assert (a.count, a.first_seq, a.last_seq) == (b.count, b.first_seq, b.last_seq)
        assert sorted([a.replayed, b.replayed]) == [False, True]
    assert all(len(stores[1].user_events(f"user{r}")) == 5 for r in range(rounds))


def test_expired_keys_are_forgotten(tmp_path: Path) -> None:
    with SQLiteEventStore(tmp_path / "e.db", idempotency_ttl_s=3600) as store:
        store.append(events(2), idempotency_key="old")
        raw = sqlite3.connect(tmp_path / "e.db", isolation_level=None)
        raw.execute("UPDATE idempotency SET created = created - 7200")
        store._pruned_at = 0.0  # as in a process started later
        store.append(events(1, "u2"), idempotency_key="new")  # prunes keys older than the TTL
        assert raw.execute("SELECT COUNT(*) FROM idempotency").fetchone()[0] == 1
        assert not store.append(events(2), idempotency_key="old").replayed
        assert store.count() == 5


# ---------------------------------------------------------------------------------------------- bounded reads
def test_bounded_reads_return_the_most_recent_events_in_order(opener: Opener) -> None:
    store = opener()
    assert MAX_EVENTS_PER_USER == 10_000
    big = store.append(events(20_000, "big"))
    store.append(events(5, "small"))
    last = store.user_events("big", limit=100)
    assert [e.item_id for e in last] == [f"i{j}" for j in range(19_900, 20_000)]
    assert [e.seq for e in last] == list(range(big.last_seq - 99, big.last_seq + 1))
    both = store.users_events(["small", "big", "nobody", "big"], limit=100)
    assert sorted(both) == ["big", "small"]
    assert both["big"] == last and [e.item_id for e in both["small"]] == [f"i{j}" for j in range(5)]
    assert len(store.user_events("big", limit=MAX_EVENTS_PER_USER)) == MAX_EVENTS_PER_USER
    assert len(store.user_events("big")) == 20_000
    assert len(store.users_events(["big"])["big"]) == 20_000
    assert store.user_events("big", limit=0) == [] and store.users_events(["big"], limit=0) == {}
    for bad in (-1, 1.5, True):
        with pytest.raises(StoreError, match="limit"):
            store.user_events("big", limit=bad)  # type: ignore[arg-type]


def test_sqlite_bounded_reads_walk_the_user_index(tmp_path: Path) -> None:
    with SQLiteEventStore(tmp_path / "e.db") as store:
        store.append(events(10))
        plan = store._reader().execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?", ("u1", 5)
        )
        details = " ".join(str(row[-1]) for row in plan)
    assert "events_by_user" in details and "TEMP B-TREE" not in details


# ---------------------------------------------------------------------------------------------- forgetting users
def test_delete_user_removes_every_event_of_that_user_only(opener: Opener) -> None:
    store = opener()
    store.append(events(3, "gone") + events(2, "kept") + events(4, "gone", start=10))
    assert store.has_user("gone") and store.has_user("kept") and not store.has_user("nobody")
    assert store.delete_user("gone") == 7
    assert not store.has_user("gone") and store.user_events("gone") == []
    assert [e.item_id for e in store.user_events("kept")] == ["i0", "i1"]
    assert store.delete_user("gone") == 0 and store.delete_user("nobody") == 0
    store.close()
    reopened = opener()  # the delete was committed
    assert not reopened.has_user("gone") and reopened.count() == 2
    assert reopened.append(events(1, "gone")).count == 1 and reopened.has_user("gone")


# ---------------------------------------------------------------------------------------------- connections
def test_sqlite_reader_connections_of_ended_threads_are_closed(tmp_path: Path) -> None:
    with SQLiteEventStore(tmp_path / "e.db") as store:
        store.append(events(2))
        conns: list[sqlite3.Connection] = []

        def read() -> None:
            assert store.count() == 2
            conns.append(store._reader())

        for _ in range(20):
            th = threading.Thread(target=read)
            th.start()
            th.join()
        gc.collect()
        assert len(store._readers) == 0
        for conn in conns:
            with pytest.raises(sqlite3.ProgrammingError, match="closed"):
                conn.execute("SELECT 1")
        assert store.count() == 2  # the calling thread's reader is unaffected


def test_postgres_reconnects_after_its_connections_are_killed(pg_tables: str, caplog: pytest.LogCaptureFixture) -> None:
    import psycopg

    url = str(postgres_url())
    name = f"advrec_test_{uuid.uuid4().hex[:8]}"
    store = PostgresEventStore(url, table=pg_tables, application_name=name)
    try:
        store.append(events(3), idempotency_key="before")
        assert store.count() == 3
        with psycopg.connect(url, autocommit=True) as admin:
            query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            killed = admin.execute(f"SELECT pg_terminate_backend(pid) FROM ({query}) AS s", (name,)).fetchall()
            assert len(killed) == 2  # the writer and the reader
            deadline = time.monotonic() + 10
            while admin.execute(query, (name,)).fetchall() and time.monotonic() < deadline:
                time.sleep(0.05)
        try:  # the writer's connection is dead: this fails fast, or (if it raced the kill) succeeds
            store.append(events(2, "u2"), idempotency_key="after")
        except StoreError as err:
            assert "cannot write" in str(err)
        assert store.ping()  # the reader reconnected
        again = store.append(events(2, "u2"), idempotency_key="after")  # the writer reconnects
        assert again.count == 2
        assert store.append(events(1, "u3")).count == 1
        assert store.count() == 6 and len(store.user_events("u2")) == 2  # nothing stored twice
        assert store.append(events(3), idempotency_key="before").replayed
        assert "connection lost" in caplog.text
    finally:
        store.close()
