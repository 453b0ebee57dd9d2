"""Event stores, SQLite and (when $ADVREC_TEST_POSTGRES_URL is set) PostgreSQL: the same contract for both."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serving_helpers import postgres_url

from advrec.errors import ConfigError
from advrec.serving.store import Event, EventStore, SQLiteEventStore, StoreError, open_store

Opener = Callable[[], EventStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A function that opens (or reopens) one store; every store it opened is closed afterwards."""
    opened: list[EventStore] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
        table = "advrec_events"
    else:
        table = request.getfixturevalue("pg_table")
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
