"""A real deployment on loopback: a SuperLink and 3 SuperNodes as separate processes, each node given only its
own partition file, a run submitted with `flwr run` whose settings point at no dataset; its item factors equal
FedAvg by hand, as in the simulation."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from advrec.federated.app import federation_data, settings_of, write_flower_app, write_partitions
from advrec.federated.fcf import FCFSettings, client_step

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent  # flwr's commands start each other by name: they must be on PATH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_listening(port: int, proc: subprocess.Popen, log: Path, seconds: float = 180.0) -> None:
    """Block until `proc` accepts connections on `port`: on a loaded machine it can take many seconds to start."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{log.name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{log.name} did not listen on {port} within {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_superlink_and_three_supernodes(data_dir, tmp_path):
    if shutil.which("flower-superlink", path=str(BIN)) is None:
        pytest.fail(f"flower-superlink is not installed next to {sys.executable}")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(tmp_path / "home")}
    link = free_port()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    config = {"data-dir": str(data_dir), "factors": 8, "rounds": 2, "strategy": "fedavg", "lr": 20.0,
              "min-nodes": 3, "out": str(tmp_path / "out")}  # fmt: skip
    files = write_partitions(config, 3, tmp_path / "nodes")
    split, _ = federation_data(settings_of(config))
    # the run's settings name no loadable dataset: neither the server nor a node may open one
    app = write_flower_app(tmp_path / "app", {**config, "dataset": "none", "data-dir": str(tmp_path / "no-data"),
                                              "n-items": split.n_items, "n-users": split.n_users})  # fmt: skip
    text = (app / "pyproject.toml").read_text()
    assert f"n-items = {split.n_items}" in text and f"n-users = {split.n_users}" in text
    procs = [start([str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                    "--host", "127.0.0.1", "--port", str(link)], tmp_path / "superlink.log", env)]  # fmt: skip
    try:
        wait_listening(link, procs[0], tmp_path / "superlink.log")
        for i in range(3):
            node = [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                    "--host", "127.0.0.1", "--port", str(free_port()),
                    "--node-config", f'partition-id={i} num-partitions=3 data-file="{files[i]}"']  # fmt: skip
            procs.append(start(node, tmp_path / f"supernode{i}.log", env))
        run = subprocess.run([str(BIN / "flwr"), "run", str(app), "local", "--stream"], env=env, timeout=600,
                             capture_output=True, text=True)  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        stop(procs)
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    got = load_file(str(tmp_path / "out" / "item_factors.safetensors"))["item_factors"]
    s = settings_of(config)
    split, _ = federation_data(s)
    Q = np.random.default_rng(s["seed"]).normal(scale=0.1 / np.sqrt(8), size=(split.n_items, 8)).astype(np.float32)
    fcf = FCFSettings(alpha=s["alpha"], reg=s["reg"], lr=s["lr"], n_users=split.n_users)
    rounds = []
    for _ in range(2):
        total, _ = client_step(split.train.matrix, Q, fcf)
        Q = (Q + total / split.n_users).astype(np.float32)
        rounds.append(Q)
    np.testing.assert_allclose(got, rounds[history["best_round"] - 1], rtol=1e-4, atol=1e-6)
