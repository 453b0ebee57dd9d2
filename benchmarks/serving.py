"""Serving under load on loopback: latency at fixed request rates, ingest throughput, durability across SIGKILL.

Models: EASE (l2 = 1000) and MultVAE (600-32, at most `--vae-epochs` epochs with early stopping) trained on ml-1m
(ratings ≥ 3, 10-core, per-user 8:1:1 split, seed 2020) and written as run directories; `advrec serve` (one
uvicorn worker, SQLite event store) serves each in its own process, and this script is the client, a second
process.

Latency: an open-loop schedule (asyncio + httpx): request i is sent at t0 + i / rate whatever happened to the
earlier ones, so a slow server cannot slow the client down and hide its queueing (no coordinated omission).
Each request is `GET /v1/users/{u}/recommendations?k=10` for a user drawn uniformly from the training users
(history = training row + stored events). Latency is measured from the scheduled send time to the end of the
response; p50/p95/p99, achieved throughput and errors (non-200 answers and transport failures) per rate.
A warm-up of `--warmup` seconds at the same rate precedes each measured window and is discarded.

Ingest: `--events` events (default 100k) posted in batches of `--batch` to `POST /v1/interactions`, one client
connection (closed loop); events/s = acknowledged events / wall time. Durability: the same number of events
again into a fresh store; the server is SIGKILLed once half of them are acknowledged, restarted, and the client
resends the batches it had no answer for, then the rest; every acknowledged event must be in the store.

The machine has 2 cores shared with other jobs: the 1-minute load average (`/proc/loadavg`) is recorded before
and after every measurement; `--wait-load L` waits (at most `--wait-max` s) for it to fall to L first.

Usage: python benchmarks/serving.py [--rates 50 100 200] [--duration 30] [--models EASE MultVAE]
       [--events 100000] [--runs-dir runs/serving-bench] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
API_KEY = "serving-benchmark-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
AUTH_LINE = f"Authorization: Bearer {API_KEY}\r\n"


# ---------------------------------------------------------------------------------------------- machine
def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load average: {Path('/proc/loadavg').read_text().strip()}"


def wait_for_load(limit: float | None, max_wait: float) -> float:
    """Waits until the 1-minute load average is at most `limit` (or `max_wait` s passed); returns the load."""
    if limit is None:
        return load_average()
    deadline = time.monotonic() + max_wait
    while load_average() > limit and time.monotonic() < deadline:
        time.sleep(5)
    return load_average()


# ---------------------------------------------------------------------------------------------- runs
def train_runs(runs_dir: Path, dataset: str, models: list[str], vae_epochs: int, reuse: bool) -> dict[str, Path]:
    """One run directory per model (trained here unless `reuse` and already present)."""
    from advrec.experiment import ExperimentConfig, run_experiment

    out: dict[str, Path] = {}
    for name in models:
        path = runs_dir / f"{dataset}-{name.lower()}"
        if reuse and (path / "manifest.json").exists():
            print(f"reusing {path}", flush=True)
            out[name] = path
            continue
        params: dict[str, Any] = {"epochs": vae_epochs, "device": "cpu"} if name == "MultVAE" else {}
        cfg = ExperimentConfig(dataset=dataset, min_rating=3.0, core=10, seed=2020, model=name, params=params)
        t0 = time.perf_counter()
        _, outcome = run_experiment(cfg, path)
        print(
            f"trained {name} on {dataset} in {time.perf_counter() - t0:.0f}s "
            f"(ndcg@10 {outcome.report.summary['ndcg@10']:.4f}) → {path}",
            flush=True,
        )
        out[name] = path
    return out


# ---------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`advrec serve RUN_DIR` in a subprocess, on a free loopback port."""

    def __init__(self, run_dir: Path, store: str, log: Path, workers: int = 1) -> None:
        self.run_dir, self.store, self.log, self.workers = run_dir, store, log, workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        env = {**os.environ, "ADVREC_API_KEYS": f"{API_KEY} read,write,admin"}
        cmd = [sys.executable, "-m", "advrec.cli", "serve", str(self.run_dir), "--port", str(self.port)]
        cmd += ["--store", self.store, "--workers", str(self.workers)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    if self.workers > 1:  # the first worker answered; give the others time to load
                        time.sleep(10)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after 300 s; see {self.log}")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server process and the workers it waited for, from /proc."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


# ---------------------------------------------------------------------------------------------- load
class RawHTTP:
    """A minimal HTTP/1.1 GET client on asyncio streams with a pool of keep-alive connections.

    It costs the shared CPU a fraction of what httpx does per request, so the measurement sees the server
    rather than the client. Answers must carry Content-Length (the API's do).
    """

    def __init__(self, base: str) -> None:
        host_port = base.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The most recently used idle connection, unless the server may have closed it (uvicorn's keep-alive
        timeout is 5 s: connections idle for 3 s are dropped here, as HTTP clients do)."""
        now = time.perf_counter()
        while self.idle:
            reader, writer, last = self.idle.pop()
            if now - last < 3.0:
                return reader, writer
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened.append(writer)
        return reader, writer

    async def get(self, path: str) -> int:
        reader, writer = await self._connection()
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{AUTH_LINE}\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = None
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length is None:
                raise ConnectionError("answer without Content-Length")
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            return -1
        self.idle.append((reader, writer, time.perf_counter()))
        return status

    async def aclose(self) -> None:
        for writer in self.opened:
            writer.close()


async def open_loop(base: str, paths: list[str], rate: float, warmup_s: float, client: str = "raw") -> dict[str, Any]:
    """Sends GETs on a fixed schedule (i / rate), each as its own task; latency from the scheduled time."""
    n_warm = int(rate * warmup_s)
    latencies = np.full(len(paths), np.nan)
    status = np.zeros(len(paths), dtype=np.int64)
    if client == "raw":
        raw = RawHTTP(base)
        get = raw.get
    else:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        hx = httpx.AsyncClient(base_url=base, limits=limits, timeout=10.0, headers=AUTH)

        async def get(path: str) -> int:
            try:
                return (await hx.get(path)).status_code
            except httpx.HTTPError:
                return -1

    async def one(i: int, scheduled: float) -> None:
        status[i] = await get(paths[i])
        latencies[i] = time.perf_counter() - scheduled

    loop_start = time.perf_counter() + 0.05
    tasks = []
    for i in range(len(paths)):
        scheduled = loop_start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    end = time.perf_counter()
    if client == "raw":
        await raw.aclose()
    else:
        await hx.aclose()
    measured = slice(n_warm, len(paths))
    lat_ms = latencies[measured] * 1000
    ok = status[measured] == 200
    window = end - (loop_start + n_warm / rate)
    return {
        "client": client,
        "rate_target": rate,
        "requests": len(lat_ms),
        "throughput_rps": round(float(ok.sum()) / window, 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 2),
        "p95_ms": round(float(np.percentile(lat_ms, 95)), 2),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 2),
        "max_ms": round(float(lat_ms.max()), 2),
        "errors": int((~ok).sum()),
        "errors_by_status": dict(Counter(str(int(x)) for x in status[measured][~ok])),  # -1: transport failure
    }


def latency_runs(
    server: Server, users: list[str], rates: list[float], duration: float, warmup: float, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(2020)
    rows = []
    for client in args.clients:
        for rate in rates:
            n = int(rate * (duration + warmup))
            picks = rng.integers(0, len(users), size=n)
            paths = [f"/v1/users/{users[u]}/recommendations?k=10" for u in picks]
            load_before = wait_for_load(args.wait_load, args.wait_max)
            server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
            row = asyncio.run(open_loop(server.base, paths, rate, warmup, client))
            row.update(  # CPU per request over the whole schedule (warm-up included), server and client process
                server_cpu_ms_per_request=round((server.cpu_seconds() - server_cpu) * 1000 / n, 2),
                client_cpu_ms_per_request=round((time.process_time() - client_cpu) * 1000 / n, 2),
            )
            row.update(load_before=load_before, load_after=load_average(), uptime_after=uptime())
            rows.append(row)
            print(
                f"  {client} {rate:>5.0f} req/s: {row['throughput_rps']} req/s, p50 {row['p50_ms']} ms, "
                f"p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms, errors {row['errors']} "
                f"(load {load_before:.2f} → {row['load_after']:.2f})",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------------------------------------- ingest
def make_events(n: int, items: list[str], users: int, seed: int) -> list[dict[str, Any]]:
    """n events with a unique timestamp each (the marker that identifies an event in the store)."""
    rng = np.random.default_rng(seed)
    it = rng.integers(0, len(items), size=n)
    us = rng.integers(0, users, size=n)
    return [{"user_id": f"bench-{us[j]}", "item_id": items[it[j]], "timestamp": 1_700_000_000 + j} for j in range(n)]


def post_batches(
    base: str, batches: list[list[dict]], start: int = 0, acked: list[int] | None = None
) -> tuple[list[int], int]:
    """Posts batches in order from `start`, appending each acknowledged batch number to `acked` as it comes;
    returns them and the batch it stopped at (the first without an answer, or the end)."""
    acked = [] if acked is None else acked
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
        b = start
        while b < len(batches):
            try:
                r = client.post("/v1/interactions", json={"events": batches[b]})
            except httpx.HTTPError:
                return acked, b
            if r.status_code != 200:
                raise RuntimeError(f"batch {b}: {r.status_code} {r.text[:200]}")
            acked.append(b)
            b += 1
    return acked, b


def ingest_throughput(
    run_dir: Path, workdir: Path, events: list[dict], batch: int, store: str | None = None
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    store = store or f"sqlite:///{workdir / 'ingest.db'}"
    server = Server(run_dir, store, workdir / "ingest.log").start()
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    try:
        load_before = load_average()
        t0 = time.perf_counter()
        acked, _ = post_batches(server.base, batches)
        secs = time.perf_counter() - t0
    finally:
        server.stop()
    from advrec.serving.store import open_store

    with open_store(store) as s:
        stored = s.count()
    n_acked = sum(len(batches[b]) for b in acked)
    return {
        "store": store.split("://", 1)[0],
        "events": len(events),
        "batch": batch,
        "acknowledged": n_acked,
        "stored": stored,
        "seconds": round(secs, 2),
        "events_per_s": round(n_acked / secs),
        "load_before": load_before,
        "load_after": load_average(),
        "uptime_after": uptime(),
    }


def durability(run_dir: Path, workdir: Path, events: list[dict], batch: int) -> dict[str, Any]:
    """Kills the server with SIGKILL while a client is posting, restarts it, and checks every acked event."""
    import threading

    store = f"sqlite:///{workdir / 'durability.db'}"
    log = workdir / "durability.log"
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    server = Server(run_dir, store, log).start()
    acked1: list[int] = []
    result: dict[str, Any] = {}

    def client() -> None:
        result["stopped_at"] = post_batches(server.base, batches, acked=acked1)[1]

    t = threading.Thread(target=client)
    t0 = time.perf_counter()
    t.start()
    while t.is_alive() and len(acked1) < len(batches) // 2:  # kill once half the batches are acknowledged
        time.sleep(0.005)
    server.kill()
    t.join()
    stopped = result["stopped_at"]
    from advrec.serving.store import open_store

    restart_t0 = time.perf_counter()
    server.start()
    restart_s = time.perf_counter() - restart_t0
    try:  # resend the batch that had no answer (it may or may not be stored: at-least-once), then the rest
        acked2, end = post_batches(server.base, batches, start=stopped)
    finally:
        server.stop()
    total_s = time.perf_counter() - t0
    acked = acked1 + acked2
    with open_store(store) as s:
        stored_events = s.all_events()
    stored = {(e.user_id, e.item_id, e.timestamp) for e in stored_events}
    acked_events = [(e["user_id"], e["item_id"], float(e["timestamp"])) for b in acked for e in batches[b]]
    lost = sum(1 for e in acked_events if e not in stored)
    return {
        "events": len(events),
        "batch": batch,
        "acknowledged_before_kill": sum(len(batches[b]) for b in acked1),
        "acknowledged_total": len(acked_events),
        "stored": len(stored_events),
        "duplicates_from_resend": len(stored_events) - len(stored),
        "lost_acknowledged": lost,
        "restart_seconds": round(restart_s, 1),
        "wall_seconds": round(total_s, 1),
        "completed": end == len(batches),
        "uptime_after": uptime(),
    }


# ---------------------------------------------------------------------------------------------- report
def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Serving under load",
        "",
        f"{payload['created']}; git {payload.get('git_commit') or '?'}; {payload['machine']}.",
        "",
        payload["protocol"],
        "",
        "Models: "
        + "; ".join(
            f"{name}: {r['n_users']:,} users × {r['n_items']:,} items, test NDCG@10 {r['ndcg@10']:.4f}"
            + (f", {r['epochs_run']} epochs" if r.get("epochs_run") else "")
            for name, r in payload["runs"].items()
        )
        + ".",
        "",
        "## Latency of `GET /v1/users/{id}/recommendations?k=10` (open loop)",
        "",
        "| model | client | target req/s | achieved req/s | p50 ms | p95 ms | p99 ms | max ms | errors "
        "| load before → after | CPU ms/req server, client |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for model, rows in payload["latency"].items():
        for r in rows:
            lines.append(
                f"| {model} | {r['client']} | {r['rate_target']:.0f} | {r['throughput_rps']} | {r['p50_ms']} | "
                f"{r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['errors']} | "
                f"{r['load_before']:.2f} → {r['load_after']:.2f} | "
                f"{r.get('server_cpu_ms_per_request', '–')}, {r.get('client_cpu_ms_per_request', '–')} |"
            )
    ing = payload.get("ingest")
    if ing:
        lines += [
            "",
            "## Ingest (`POST /v1/interactions`, one client connection, closed loop)",
            "",
            "| store | events | batch | acknowledged | stored | seconds | events/s | load before → after |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in ing:
            lines.append(
                f"| {r['store']} | {r['events']:,} | {r['batch']} | {r['acknowledged']:,} | {r['stored']:,} | "
                f"{r['seconds']} | {r['events_per_s']:,} | {r['load_before']:.2f} → {r['load_after']:.2f} |"
            )
    dur = payload.get("durability")
    if dur:
        lines += [
            "",
            "## Durability: SIGKILL mid-ingest, restart, resend",
            "",
            f"{dur['events']:,} events in batches of {dur['batch']}; {dur['acknowledged_before_kill']:,} acknowledged "
            f"before the SIGKILL; {dur['acknowledged_total']:,} acknowledged in all; {dur['stored']:,} rows stored "
            f"({dur['duplicates_from_resend']} duplicates from resending the unanswered batch: at-least-once); "
            f"**{dur['lost_acknowledged']} acknowledged events lost**; restart {dur['restart_seconds']} s.",
        ]
    lines += ["", "Load (`uptime`) after each measurement is in serving.json.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--models", nargs="+", default=["EASE", "MultVAE"])
    ap.add_argument("--rates", nargs="+", type=float, default=[50, 100, 200])
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per rate")
    ap.add_argument("--warmup", type=float, default=3.0, help="discarded seconds before each window")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="events per ingest request")
    ap.add_argument("--small-batch", type=int, default=10, help="events per request of the small-batch ingest")
    ap.add_argument("--small-events", type=int, default=20_000, help="events of the small-batch ingest")
    ap.add_argument("--vae-epochs", type=int, default=30)
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/serving-bench"))
    ap.add_argument("--reuse", action="store_true", help="reuse run directories already in --runs-dir")
    ap.add_argument("--wait-load", type=float, default=None, help="wait for this 1-minute load average first")
    ap.add_argument("--wait-max", type=float, default=600.0)
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--postgres-url", default=None, help="also ingest into this (empty) PostgreSQL database")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the served model")
    ap.add_argument(
        "--clients",
        nargs="+",
        choices=["raw", "httpx"],
        default=["raw"],
        help="raw asyncio HTTP/1.1 (light on the shared CPU) and/or httpx.AsyncClient",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: ml-100k, 5 s per rate, 10k events")
    ap.add_argument("--out", type=Path, default=RESULTS / "serving")
    args = ap.parse_args()
    if args.quick:
        args.dataset, args.duration, args.warmup, args.events, args.vae_epochs = "ml-100k", 5.0, 1.0, 10_000, 3
        if args.out == RESULTS / "serving":
            args.out = Path(tempfile.gettempdir()) / "serving-quick"

    from advrec.runs import git_commit, load_run

    runs = train_runs(args.runs_dir, args.dataset, args.models, args.vae_epochs, args.reuse)
    payload: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": f"{os.cpu_count()} CPUs (shared), Python {sys.version.split()[0]}",
        "protocol": (
            f"Models trained on {args.dataset} (ratings ≥ 3, 10-core, per-user 8:1:1 split, seed 2020); served by "
            f"`advrec serve` ({args.workers} uvicorn worker(s), httptools + uvloop, SQLite store), loaded by an "
            f"asyncio client ({' and '.join(args.clients)}) in another process, on loopback. Open loop: "
            f"{args.duration:.0f} s measured per rate after {args.warmup:.0f} s of warm-up; latency from the "
            "scheduled send time to the "
            "end of the response; users drawn uniformly (seed 2020); errors = non-200 answers + transport failures."
        ),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": {},
        "latency": {},
    }
    with tempfile.TemporaryDirectory(prefix="advrec-serving-bench-") as tmp:
        work = Path(tmp)
        for name, run_dir in runs.items():
            run = load_run(run_dir)
            users = [str(u) for u in run.users.ids.tolist()]
            payload["runs"][name] = {
                "run_dir": str(run_dir),
                "ndcg@10": run.manifest.get("metrics", {}).get("ndcg@10"),
                "n_users": len(run.users),
                "n_items": len(run.items),
                "epochs_run": run.manifest.get("training", {}).get("epochs_run_"),
            }
            server = Server(run_dir, f"sqlite:///{work / f'{name}.db'}", work / f"{name}.log", args.workers).start()
            print(f"{name} ({len(run.users)} users × {len(run.items)} items):", flush=True)
            try:
                payload["latency"][name] = latency_runs(server, users, args.rates, args.duration, args.warmup, args)
            finally:
                server.stop()
        if not args.skip_ingest:
            first = next(iter(runs.values()))
            items = [str(i) for i in load_run(first).items.ids.tolist()]
            events = make_events(args.events, items, users=5000, seed=1)
            payload["ingest"] = [ingest_throughput(first, work, events, args.batch)]
            small = events[: args.small_events]  # many small commits: one fsync per request
            payload["ingest"].append(ingest_throughput(first, work / "small", small, args.small_batch))
            if args.postgres_url:  # an empty database: the events table is created and counted there
                payload["ingest"].append(ingest_throughput(first, work, events, args.batch, args.postgres_url))
            for row in payload["ingest"]:
                print(f"ingest: {row}", flush=True)
            events2 = make_events(args.events, items, users=5000, seed=2)
            payload["durability"] = durability(first, work, events2, max(1, args.batch // 2))
            print(f"durability: {payload['durability']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from advrec.io import atomic_write_text

    atomic_write_text(args.out.with_suffix(".json"), json.dumps(payload, indent=2))
    atomic_write_text(args.out.with_suffix(".md"), markdown(payload))
    print(f"→ {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
