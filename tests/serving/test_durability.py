"""The real server (`advrec serve` under uvicorn), SIGKILLed mid-ingest, loses no acknowledged event."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving_helpers import API_KEY, AUTH

from advrec.serving.store import open_store

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run_dir: Path, store: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ADVREC_API_KEYS": API_KEY}
    cmd = [sys.executable, "-m", "advrec.cli", "serve", str(run_dir), "--port", str(port), "--store", store]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the server did not become ready: {log.read_text()[-2000:]}")


def test_sigkill_mid_ingest_loses_no_acknowledged_event(ease_run: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'events.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = start_server(ease_run, store, port, log)
    acked: list[tuple[str, str, float]] = []
    failures: list[str] = []
    stop = threading.Event()

    def ingest() -> None:
        with httpx.Client(base_url=base, headers=AUTH, timeout=10) as client:
            batch_no = 0
            while not stop.is_set():
                events = [
                    {
                        "user_id": f"d{batch_no % 7}",
                        "item_id": 1 + (batch_no * 50 + j) % 1000,
                        "timestamp": batch_no * 50 + j,
                    }
                    for j in range(50)
                ]
                batch_no += 1
                try:
                    r = client.post("/v1/interactions", json={"events": events})
                except httpx.HTTPError as err:  # the server died: this batch was never acknowledged
                    failures.append(type(err).__name__)
                    if len(failures) > 3:
                        return
                    continue
                if r.status_code == 200:
                    assert r.json()["accepted"] == 50
                    acked.extend((e["user_id"], str(e["item_id"]), float(e["timestamp"])) for e in events)

    thread = threading.Thread(target=ingest)
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < 2000 and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.01)
        assert len(acked) >= 2000, f"only {len(acked)} events acknowledged before the kill"
        server.send_signal(signal.SIGKILL)  # mid-ingest: the client is still sending
        server.wait(10)
        thread.join(30)
        assert failures, "the client saw no failed request: the kill did not happen mid-ingest"
        with open_store(store) as s:
            stored = {(e.user_id, e.item_id, e.timestamp) for e in s.all_events()}
        missing = set(acked) - stored
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
        # after a restart the server serves the users the events created
        server = start_server(ease_run, store, port, log)
        r = httpx.get(f"{base}/v1/users/d3/recommendations", params={"k": 5}, timeout=10)
        assert r.status_code == 200 and r.json()["strategy"] == "fold-in"
        r = httpx.post(
            f"{base}/v1/interactions", json={"events": [{"user_id": "d3", "item_id": 1}]}, headers=AUTH, timeout=10
        )
        assert r.status_code == 200 and r.json()["first_seq"] > len(acked) - 1
    finally:
        stop.set()
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
