"""The server under abuse: JSON that is not JSON, huge bodies, retried batches, heavy requests beside /healthz."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from serving_helpers import AUTH, KEYS, free_port, start_server, stop_server

from advrec.runs import load_run
from advrec.serving.app import create_app
from advrec.serving.jsonbody import strict_loads
from advrec.serving.store import open_store

pytestmark = pytest.mark.integration

# every POST operation, with a place (%s) for one JSON value
POST_BODIES = {
    "/v1/recommendations": '{"history": [{"item_id": 50, "rating": %s}], "k": 5}',
    "/v1/users/recommendations": '{"user_ids": ["1"], "k": %s}',
    "/v1/interactions": '{"events": [{"user_id": "u", "item_id": 1, "rating": %s}]}',
    "/v1/admin/reload": '{"run_dir": %s}',
}
NOT_JSON = {
    "NaN": "NaN is not JSON",
    "Infinity": "Infinity is not JSON",
    "-Infinity": "-Infinity is not JSON",
    "1e400": "the number 1e400 is out of range",
    "-2.5E+999": "the number -2.5E+999 is out of range",
    '"\\ud800"': "lone surrogate",
    '"ok \\udfff"': "lone surrogate",
    "1" * 150: "an integer of 150 digits is out of range",
}


@pytest.fixture
def client(ease_run: Path, store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(ease_run, store_url=store_url, api_keys=KEYS), headers=AUTH) as c:
        yield c


@pytest.mark.parametrize("path", list(POST_BODIES))
def test_json_that_is_not_json_is_422_naming_the_problem_and_where(
    client: TestClient, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    template = POST_BODIES[path]
    for value, problem in NOT_JSON.items():
        with caplog.at_level(logging.WARNING):
            r = client.post(path, content=(template % value).encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422, (value, r.text)
        error = r.json()["detail"][0]
        assert problem in error["msg"] and f"at character {template.index('%s')}" in error["msg"], error
        assert error["loc"] == ["body", template.index("%s")]
        assert "Traceback" not in caplog.text and not [x for x in caplog.records if x.levelno >= logging.ERROR]


def test_strict_parser_keeps_valid_json() -> None:
    text = '{"a": [1, -2.5e3, "NaN", "Infinity 1e400", "\\ud83d\\ude00", "\\\\ud800", null, true]}'
    assert strict_loads(text.encode()) == {"a": [1, -2500.0, "NaN", "Infinity 1e400", "😀", "\\ud800", None, True]}
    for body, problem in ((b'{"a": "\xed\xa0\x80"}', "not UTF-8"), (b"[" * 100_000 + b"]" * 100_000, "nested")):
        with pytest.raises(ValueError, match=problem):
            strict_loads(body)


def test_validation_errors_do_not_echo_the_body(client: TestClient) -> None:
    big = "x" * 100_000
    for kwargs in (
        {"json": {"history": big}},
        {"json": {"history": [], big: 1}},
        {"content": big.encode(), "headers": {"content-type": "text/plain"}},
        {"content": b"\xff" * 100_000, "headers": {"content-type": "application/json"}},
        {"content": ("[" * 100_000).encode(), "headers": {"content-type": "application/json"}},
    ):
        r = client.post("/v1/recommendations", **kwargs)
        assert r.status_code == 422 and len(r.content) < 2_000, (r.status_code, len(r.content))
        assert "x" * 101 not in r.text
    r = client.post("/v1/recommendations", json={"history": big})
    assert "… (100000 characters)" in r.json()["detail"][0]["input"]


def test_a_retried_batch_with_an_idempotency_key_is_stored_once(client: TestClient, store_url: str) -> None:
    events = {"events": [{"user_id": "retry", "item_id": i, "timestamp": 1_700_000_000 + i} for i in (1, 50, 100)]}
    key = {"Idempotency-Key": "batch-0001"}
    first = client.post("/v1/interactions", json=events, headers=key)
    again = client.post("/v1/interactions", json=events, headers=key)
    assert first.status_code == again.status_code == 200, again.text
    assert not first.json()["replayed"] and again.json()["replayed"] and again.headers["idempotent-replayed"] == "true"
    assert (again.json()["first_seq"], again.json()["last_seq"]) == (
        first.json()["first_seq"],
        first.json()["last_seq"],
    )
    other = {"events": [{**events["events"][0], "item_id": 181}]}
    conflict = client.post("/v1/interactions", json=other, headers=key)
    assert conflict.status_code == 409 and "different batch" in conflict.json()["detail"]
    assert client.post("/v1/interactions", json=events, headers={"Idempotency-Key": "k" * 201}).status_code == 422
    untimed = {"events": [{"user_id": "retry", "item_id": 1}]}
    r = client.post("/v1/interactions", json=untimed, headers={"Idempotency-Key": "batch-0002"})
    assert r.status_code == 422 and "timestamp" in r.json()["detail"]
    assert "advrec_events_ingested_total 3.0" in client.get("/metrics").text
    with open_store(store_url) as store:
        assert store.count() == 3


def test_healthz_answers_while_four_clients_send_the_heaviest_requests(ease_run: Path, tmp_path: Path) -> None:
    """Scoring runs in worker threads: /healthz, answered on the event loop, stays quick.

    The heaviest requests allowed: 1,000 users × k = 100 in one batch (100,000 entries, ~7 MB of JSON), and
    explanations (n = 100) of a user with 20,000 events, of which a read takes the 10,000 most recent.
    Measured on the shared 2-core machine (load average 1.5–2.9): /healthz p50 9–13 ms, p90 32–42 ms, max
    145–262 ms over 5 s, while the four clients completed 40–80 heavy requests. The code before this test (reads
    on the event loop, the whole batch scored and encoded in one call) gave p50 480–710 ms and max 1.7 s. The
    bounds asserted leave room for a busier machine: p50 under 100 ms and p90 under 500 ms; the maximum, one
    sample at the mercy of the scheduler, is printed, not asserted.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(ease_run, f"sqlite:///{tmp_path / 'events.db'}", port, tmp_path / "server.log")
    try:
        users = [str(u) for u in load_run(ease_run).users.ids.tolist()]
        with httpx.Client(base_url=base, headers=AUTH, timeout=60) as c:
            for part in range(2):
                events = [{"user_id": "heavy", "item_id": 1 + (part * 10_000 + j) % 1600} for j in range(10_000)]
                assert c.post("/v1/interactions", json={"events": events}).status_code == 200
        heavy = [
            ("POST", "/v1/users/recommendations", {"json": {"user_ids": (users * 2)[:1000], "k": 100}}),
            ("GET", "/v1/users/heavy/explanations/50", {"params": {"n": 100}}),
        ]
        stop = threading.Event()
        done: list[int] = []

        def load(which: int) -> None:
            method, path, kwargs = heavy[which % 2]
            with httpx.Client(base_url=base, headers=AUTH, timeout=60) as c:
                while not stop.is_set():
                    done.append(c.request(method, path, **kwargs).status_code)

        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        latencies = []
        with httpx.Client(base_url=base, timeout=10) as c:
            time.sleep(0.5)
            end = time.monotonic() + 5
            while time.monotonic() < end:
                t0 = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.02)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        stop_server(server)
    assert done and set(done) == {200}, set(done)
    latencies.sort()
    p50, p90, worst = statistics.median(latencies), latencies[int(0.9 * (len(latencies) - 1))], latencies[-1]
    print(f"/healthz under load: n={len(latencies)} p50 {p50 * 1e3:.1f} ms, p90 {p90 * 1e3:.1f} ms, ", end="")
    print(f"max {worst * 1e3:.1f} ms; {len(done)} heavy requests")
    assert p50 < 0.1 and p90 < 0.5, (p50, p90, worst)


def own_tcp_ports() -> set[int]:
    """Local ports of this process's TCP sockets (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_writes_resume_after_postgres_drops_the_connections(ease_run: Path, pg_schema_url: str) -> None:
    """The database ends the server's connections (as a restart does): answers are 503 at worst, without the
    URL, and writes resume without restarting the server."""
    import psycopg

    events = {"events": [{"user_id": "pg-drop", "item_id": 1}]}
    with TestClient(create_app(ease_run, store_url=pg_schema_url, api_keys=KEYS), headers=AUTH) as c:
        assert c.post("/v1/interactions", json=events).status_code == 200
        assert c.get("/v1/users/pg-drop/recommendations").status_code == 200
        with psycopg.connect(pg_schema_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY(%s) "
                "AND pid <> pg_backend_pid()",
                (sorted(own_tcp_ports()),),
            ).fetchall()
        assert ended, "no connection of the server was found to end"
        answers = [c.post("/v1/interactions", json=events) for _ in range(3)]
        assert {r.status_code for r in answers} <= {200, 503} and answers[-1].status_code == 200
        assert all("postgres" not in r.text and "127.0.0.1" not in r.text for r in answers)
        assert c.get("/readyz").status_code == 200
        assert c.get("/v1/users/pg-drop/recommendations").status_code == 200
