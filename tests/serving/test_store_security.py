"""Event store privacy: forgotten ids leave no byte behind (SQLite), private file modes, no password anywhere."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import stat
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from serving_helpers import postgres_url

from advrec.serving.store import Event, PostgresEventStore, SQLiteEventStore, StoreError, open_store, redact_url

FORGET = "forget-me-7f3a9c"
PASSWORD = "s3cr3t-Pa55-9e1d"


def occurrences(folder: Path, needle: bytes) -> dict[str, int]:
    """How often `needle` occurs in the bytes of each file of `folder`."""
    return {p.name: p.read_bytes().count(needle) for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------- forgetting
def test_a_deleted_user_id_is_in_no_byte_of_the_sqlite_files(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    store = SQLiteEventStore(folder / "events.db")
    try:
        for b in range(30):  # interleaved batches: the user's rows spread over many pages, split and rebalanced
            batch = [Event(FORGET, f"item{b}-{j}", 4.0, 1000.0 + j) for j in range(40)]
            batch += [Event(f"other{j % 7}", f"item{b}-{j}", None, 2000.0 + j) for j in range(60)]
            store.append(batch, idempotency_key=f"batch-{b}")
            store.user_events(FORGET, limit=10)
        threading.Thread(target=lambda: store.has_user(FORGET)).start()  # a reader in another thread
        idle = sqlite3.connect(folder / "events.db")  # a reader of another process, idle
        assert idle.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3000
        assert sum(occurrences(folder, FORGET.encode()).values()) > 0  # the search finds it before
        assert store.delete_user(FORGET) == 1200
        found = occurrences(folder, FORGET.encode())
        assert {"events.db", "events.db-wal", "events.db-shm"} <= set(found)
        assert found == dict.fromkeys(found, 0), found
        assert not store.has_user(FORGET) and store.count() == 1800
        assert occurrences(folder, b"other3")["events.db"] > 0  # others' events are still there
        assert len(store.user_events("other3")) == 30 * 9  # j % 7 == 3 for 9 of every 60
        store.append([Event("other3", "new", None, 1.0)])  # the store goes on working
        assert store.user_events("other3", limit=1)[0].item_id == "new"
        idle.close()
    finally:
        store.close()
    assert sum(occurrences(folder, FORGET.encode()).values()) == 0
    with SQLiteEventStore(folder / "events.db") as reopened:
        assert reopened.count() == 1801 and not reopened.has_user(FORGET)


def test_postgres_delete_user_removes_the_rows_and_vacuums(pg_table: str) -> None:
    import psycopg

    url = str(postgres_url())
    try:
        with open_store(url, table=pg_table) as store:
            store.append([Event(FORGET, f"i{j}", None, float(j)) for j in range(50)] + [Event("kept", "i1", None, 1)])
            assert store.delete_user(FORGET) == 50
            assert not store.has_user(FORGET) and [e.user_id for e in store.all_events()] == ["kept"]
        with psycopg.connect(url, autocommit=True) as conn:  # statistics may lag a little before PostgreSQL 15
            query = "SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = %s AND last_vacuum IS NOT NULL"
            deadline = time.monotonic() + 5
            while not conn.execute(query, (pg_table,)).fetchall() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert conn.execute(query, (pg_table,)).fetchall()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {pg_table}_idempotency")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- file modes
@pytest.fixture
def open_umask() -> Iterator[None]:
    """A permissive umask (0022) while the test runs, as on most machines."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_sqlite_files_are_created_readable_by_their_owner_only(tmp_path: Path, open_umask: None) -> None:
    with SQLiteEventStore(tmp_path / "new" / "events.db") as store:
        store.append([Event("u", "i", None, 1.0)])
        store.user_events("u")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "new").iterdir()}
    assert set(modes) == {"events.db", "events.db-wal", "events.db-shm"}
    assert modes == dict.fromkeys(modes, 0o600)


def test_an_existing_sqlite_file_keeps_the_mode_its_owner_chose(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "events.db"
    sqlite3.connect(path).close()
    path.chmod(0o640)
    with SQLiteEventStore(path) as store:
        store.append([Event("u", "i", None, 1.0)])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# ---------------------------------------------------------------------------------------------- credentials
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def all_text(err: BaseException) -> str:
    return str(err) + repr(err) + "".join(traceback.format_exception(err))


@pytest.mark.parametrize(
    "form",
    [
        "postgresql://advrec:{pw}@127.0.0.1:{port}/db",
        "postgresql://advrec:{pw}@127.0.0.1:{port}/db?sslmode=disable",
        "postgres://advrec@127.0.0.1:{port}/db?password={pw}&application_name=x",
        "postgresql://advrec:p%40{pw}@127.0.0.1:{port}/db",
        "host=127.0.0.1 port={port} user=advrec password='{pw} x' dbname=db",
        "host=127.0.0.1 port={port} password={pw} dbname=db",
    ],
)
def test_no_password_in_the_error_of_an_unreachable_server(form: str, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("psycopg")
    url = form.format(pw=PASSWORD, port=closed_port())
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreError, match="cannot open the event store") as info:
        PostgresEventStore(url, connect_timeout_s=2)
    text = all_text(info.value)
    assert PASSWORD not in text and "p@" not in text and "***" in text
    assert "Connection refused" in text or "connection" in text.lower()
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert PASSWORD not in caplog.text


def test_redact_url_hides_passwords_in_every_form() -> None:
    assert redact_url("postgresql://me:pw@h:5432/db") == "postgresql://me:***@h:5432/db"
    assert redact_url("postgresql://me@h/db") == "postgresql://me@h/db"
    assert redact_url("postgresql://me:p/w@d@h/db?password=x&sslpassword=y&a=b") == (
        "postgresql://me:***@h/db?password=***&sslpassword=***&a=b"
    )
    assert redact_url("host=h password='a b\\' c' user=me") == "host=h password=*** user=me"
    assert redact_url("host=h PASSWORD = pw dbname=d") == "host=h PASSWORD = *** dbname=d"


@pytest.fixture
def url_with_password(pg_table: str) -> Iterator[str]:
    """The test server's URL with a password added (the server does not ask for it)."""
    parts = urlsplit(str(postgres_url()))
    if parts.password:
        pytest.skip("the test server's URL has a password of its own")
    netloc = f"{parts.username or 'postgres'}:{PASSWORD}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    yield urlunsplit(parts._replace(netloc=netloc))
    import psycopg

    with psycopg.connect(str(postgres_url()), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {pg_table}_idempotency")  # type: ignore[arg-type]


def test_a_live_postgres_store_shows_no_password(
    url_with_password: str, pg_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    caplog.set_level(logging.DEBUG)
    name = f"advrec_test_{uuid.uuid4().hex[:8]}"
    store = PostgresEventStore(url_with_password, table=pg_table, application_name=name)
    try:
        store.append([Event("u", "i", None, 1.0)])
        assert store.describe() == "postgresql"
        seen = [repr(store), store.url, store.describe()]
        with psycopg.connect(str(postgres_url()), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,))
        try:
            store.append([Event("u", "j", None, 1.0)])
        except StoreError as err:
            seen.append(all_text(err))
        assert store.ping()
        store.close()
        with pytest.raises(StoreError, match="closed") as info:
            store.count()
        seen.append(all_text(info.value))
    finally:
        store.close()
    assert all(PASSWORD not in text for text in [*seen, caplog.text]), seen
    assert "***" in repr(store)
