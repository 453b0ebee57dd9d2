"""The spread of every statistical claim of the test suite over seeds: where each test's threshold comes from.

A statistical test (marker `statistical`) takes its seeds from `$ADVREC_TEST_SEED` and records each value it
asserts on with the `claim` fixture (tests/conftest.py). This script runs those tests once per seed (0..N-1),
collects the recorded values, and writes per claim the minimum, median and maximum, with the seeds whose run
failed an assertion. A threshold is then set with a margin beyond the worst seed, and the range written beside
the assertion. Rows of earlier runs are kept unless the same test, claim and seed are measured again, so a
subset can be re-measured (`-k`, or test paths).

Usage: python benchmarks/test_spread.py [--seeds 10 | --only-seeds 3 7] [--workers 2] [-k EXPR] [tests/privacy ...]
Results: benchmarks/results/test_spread.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from advrec.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run_seed(seed: int, workers: int, select: list[str], claims: Path) -> tuple[set[str], float]:
    """Runs the statistical tests with one seed; returns the ids of the failed tests and the wall time."""
    env = {**os.environ, "ADVREC_TEST_SEED": str(seed), "ADVREC_CLAIMS_FILE": str(claims)}
    report = claims.with_suffix(f".seed{seed}.txt")
    cmd = [sys.executable, "-m", "pytest", "-m", "statistical", "-q", "-p", "no:cacheprovider", "-rf"]
    cmd += ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []
    t0 = time.perf_counter()
    with report.open("w") as out:
        subprocess.run([*cmd, *select], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    failed = {line.split()[1] for line in report.read_text().splitlines() if line.startswith("FAILED ")}
    return failed, time.perf_counter() - t0


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    g = rows.groupby(["test", "claim"], sort=True)["value"]
    table = pd.DataFrame({"seeds": g.size(), "min": g.min(), "median": g.median(), "max": g.max()})
    failed = rows[rows["failed"]].groupby(["test", "claim"])["seed"].apply(lambda s: ",".join(map(str, sorted(s))))
    table["failed seeds"] = failed.astype(object).reindex(table.index, fill_value="")
    return table.reset_index()


def write(rows: pd.DataFrame, seconds: dict[int, float]) -> None:
    table = summarise(rows)
    RESULTS.mkdir(exist_ok=True)
    payload = {"rows": rows.to_dict(orient="records"), "seconds_per_seed": seconds}
    atomic_write_text(RESULTS / "test_spread.json", json.dumps(payload, indent=1))
    lines = [
        "# Spread of the test suite's statistical claims over seeds",
        "",
        "Each statistical test run once per seed (`$ADVREC_TEST_SEED`, which moves its data, split, model and "
        "attack seeds); the thresholds in the tests sit beyond the worst seed with a margin. "
        "`python benchmarks/test_spread.py` re-measures (packages as in requirements.lock).",
        "",
        "| test | claim | seeds | min | median | max | failed seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.test} | {r.claim} | {r.seeds} | {r.min:.4f} | {r.median:.4f} | {r.max:.4f} | {r[6]} |")
    atomic_write_text(RESULTS / "test_spread.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    ap.add_argument("--only-seeds", type=int, nargs="+", default=None, help="these seeds instead (re-measure)")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per seed")
    ap.add_argument("-k", default=None, help="pytest -k expression (re-measure a subset)")
    ap.add_argument("paths", nargs="*", help="test files or folders (default: the whole suite)")
    args = ap.parse_args()
    select = [*(["-k", args.k] if args.k else []), *args.paths]
    old = RESULTS / "test_spread.json"
    previous = json.loads(old.read_text()) if old.exists() else {"rows": [], "seconds_per_seed": {}}
    new_rows: list[dict] = []
    seconds: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.only_seeds or range(args.seeds):
            claims = Path(tmp) / f"claims-{seed}.jsonl"
            claims.touch()
            failed, seconds[seed] = run_seed(seed, args.workers, select, claims)
            got = [json.loads(line) for line in claims.read_text().splitlines()]
            for row in got:
                row["failed"] = row["test"] in failed
            new_rows += got
            print(f"seed {seed}: {len(got)} values, {len(failed)} failed tests, {seconds[seed]:.0f}s", flush=True)
    new = pd.DataFrame(new_rows, columns=["test", "claim", "seed", "value", "failed"])
    keys = ["test", "claim", "seed"]
    rows = pd.concat([pd.DataFrame(previous["rows"], columns=new.columns), new], ignore_index=True)
    rows = rows.drop_duplicates(subset=keys, keep="last").sort_values(keys, ignore_index=True)
    write(rows, {**previous.get("seconds_per_seed", {}), **{str(k): v for k, v in seconds.items()}})
    print(summarise(new).to_string(index=False))


if __name__ == "__main__":
    main()
