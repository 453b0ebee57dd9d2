"""A PostgreSQL server of the test's own, stopped and started again under a serving app: /readyz is 503 while it is
down, writes fail cleanly, and resume after the restart without restarting the app."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_helpers import AUTH, KEYS, free_port

from advrec.serving.app import create_app

pytestmark = pytest.mark.integration


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program on the PATH or in Debian's versioned folders."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    return None


class PrivateServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (run as `postgres` when the tests run as root)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else os.environ.get("USER", "postgres")
        if self.as_root:
            shutil.chown(root, user="postgres")
        self.run(pg_bin("initdb"), "-D", str(root / "data"), "-A", "trust", "-U", self.user)
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def run(self, *cmd: str | None) -> None:
        args = [str(c) for c in cmd]
        if self.as_root:
            args = ["su", "-s", "/bin/sh", "postgres", "-c", " ".join(f"'{a}'" for a in args)]
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
        self.run(pg_bin("pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-o", options,
                 "start")  # fmt: skip

    def stop(self) -> None:
        self.run(pg_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_pg() -> Iterator[PrivateServer]:
    if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
        pytest.skip("needs PostgreSQL's server programs (initdb, pg_ctl), as .ci/run installs them")
    root = Path(tempfile.mkdtemp(prefix="advrec-pg-"))
    os.chmod(root, 0o755)
    server = PrivateServer(root)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(root, ignore_errors=True)


def event(n: int) -> dict:
    return {"events": [{"user_id": "restart-user", "item_id": 1 + n, "timestamp": 1000 + n}]}


def test_writes_resume_after_postgresql_restarts(ease_run: Path, private_pg: PrivateServer) -> None:
    app = create_app(ease_run, store_url=private_pg.url, api_keys=KEYS, runs_root=ease_run.parent.parent)
    with TestClient(app, headers=AUTH) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/interactions", json=event(0)).status_code == 200
        private_pg.stop()
        down = client.get("/readyz")
        assert down.status_code == 503 and private_pg.url not in down.text and "127.0.0.1" not in down.text
        failed = client.post("/v1/interactions", json=event(1))
        assert failed.status_code == 503 and "postgres" not in failed.text.lower()
        private_pg.start()
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/interactions", json=event(2)).status_code == 200
        items = [x["item_id"] for x in client.get("/v1/users/restart-user/recommendations?k=1000").json()["items"]]
        assert 1 not in items and 3 not in items  # the events stored before and after the restart are seen
