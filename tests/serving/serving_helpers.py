"""Helpers shared by the serving tests (a module of its own: `conftest` names clash across test folders)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

API_KEY = "test-key-0123456789abcdef"  # every scope
READ_KEY = "read-key-0123456789abcdef"
WRITE_KEY = "write-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
KEYS = {API_KEY: ("read", "write", "admin"), READ_KEY: ("read",), WRITE_KEY: ("write",), ADMIN_KEY: ("admin",)}
KEYS_ENV = f"{API_KEY} read,write,admin"  # $ADVREC_API_KEYS for a server started in a subprocess
POSTGRES_ENV = "ADVREC_TEST_POSTGRES_URL"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


AUTH = bearer(API_KEY)


def postgres_url() -> str | None:
    """The PostgreSQL server of the tests ($ADVREC_TEST_POSTGRES_URL), or None: those tests are skipped."""
    return os.environ.get(POSTGRES_ENV) or None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run_dir: Path, store: str, port: int, log: Path, *options: str) -> subprocess.Popen:
    """`advrec serve RUN_DIR` in a subprocess with every scope on `API_KEY`; returns once /readyz answers 200."""
    env = {**os.environ, "ADVREC_API_KEYS": KEYS_ENV}
    cmd = [sys.executable, "-m", "advrec.cli", "serve", str(run_dir), "--port", str(port), "--store", store, *options]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
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
    kill_server(proc)
    raise AssertionError(f"the server did not become ready: {log.read_text()[-2000:]}")


def kill_server(proc: subprocess.Popen) -> None:
    """SIGKILL to the server and its workers (its own process group), as a crash would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server and its workers; SIGKILL if they are not gone after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        kill_server(proc)
