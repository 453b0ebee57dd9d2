"""The real server (`advrec serve --workers 2` under uvicorn), SIGKILLed mid-ingest and restarted while clients retry
their batches under idempotency keys: no acknowledged event is lost and none is stored twice (SQLite, PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from serving_helpers import AUTH, free_port, kill_server, start_server, stop_server

from advrec.serving.store import open_store

pytestmark = pytest.mark.integration

BATCH = 50
CLIENTS = 2


class RetryingClient(threading.Thread):
    """Sends numbered batches; each is resent under the same Idempotency-Key until the server acknowledges it."""

    def __init__(self, base: str, name: str, stop: threading.Event) -> None:
        super().__init__()
        self.base, self.tag, self.stop = base, name, stop
        self.acked: list[tuple[str, str, float]] = []
        self.sent: set[tuple[str, str, float]] = set()
        self.retries = 0
        self.replays = 0

    def batch(self, n: int) -> list[dict]:
        return [
            {"user_id": f"{self.tag}-{n % 7}", "item_id": 1 + (n * BATCH + j) % 1000, "timestamp": n * BATCH + j}
            for j in range(BATCH)
        ]

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers=AUTH, timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                events = self.batch(n)
                self.sent |= {(e["user_id"], str(e["item_id"]), float(e["timestamp"])) for e in events}
                if self.send(client, events, f"{self.tag}-batch-{n}"):
                    self.acked.extend((e["user_id"], str(e["item_id"]), float(e["timestamp"])) for e in events)
                    n += 1

    def send(self, client: httpx.Client, events: list[dict], key: str) -> bool:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = client.post("/v1/interactions", json={"events": events}, headers={"Idempotency-Key": key})
            except httpx.HTTPError:  # the server died or is not up yet: this batch was not acknowledged
                r = None
            if r is not None and r.status_code == 200:
                assert r.json()["accepted"] == len(events)
                self.replays += r.json()["replayed"]
                return True
            assert r is None or r.status_code == 503, r.text
            self.retries += 1
            time.sleep(0.1)
        return False


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_mid_ingest_loses_and_duplicates_no_event(
    backend: str, ease_run: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = f"sqlite:///{tmp_path / 'events.db'}" if backend == "sqlite" else request.getfixturevalue("pg_schema_url")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = start_server(ease_run, store, port, log, "--workers", "2")
    stop = threading.Event()
    clients = [RetryingClient(base, f"c{i}", stop) for i in range(CLIENTS)]
    try:
        for c in clients:
            c.start()
        wait_for(lambda: sum(len(c.acked) for c in clients) >= 2000, "2,000 events acknowledged before the kill")
        kill_server(server)  # mid-ingest: the clients are still sending, and will retry what was not answered
        time.sleep(0.5)
        server = start_server(ease_run, store, port, log, "--workers", "2")
        before = sum(len(c.acked) for c in clients)
        wait_for(lambda: sum(len(c.acked) for c in clients) >= before + 1000, "1,000 more events after the restart")
        stop.set()
        for c in clients:
            c.join(150)
        retries, replays = sum(c.retries for c in clients), sum(c.replays for c in clients)
        print(
            f"{backend}: {sum(len(c.acked) for c in clients)} events acknowledged, {retries} retries, {replays} replays"
        )
        assert retries > 0, "no client had to retry: the kill did not happen mid-ingest"
        with open_store(store) as s:
            stored = Counter((e.user_id, e.item_id, e.timestamp) for e in s.all_events())
        acked = [e for c in clients for e in c.acked]
        missing = set(acked) - set(stored)
        twice = {e: n for e, n in stored.items() if n > 1}
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
        assert not twice, f"{len(twice)} events stored more than once, e.g. {sorted(twice.items())[:3]}"
        assert set(stored) <= set().union(*(c.sent for c in clients))
        # after the restart the server serves the users the events created
        r = httpx.get(f"{base}/v1/users/c0-3/recommendations", params={"k": 5}, headers=AUTH, timeout=10)
        assert r.status_code == 200 and r.json()["strategy"] == "fold-in"
    finally:
        stop.set()
        stop_server(server)


def wait_for(condition, what: str, seconds: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
