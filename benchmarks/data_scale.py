"""Data at real catalogue sizes on one machine: streamed ingest of 50M-row CSV and Parquet files, the synthetic
generator at 5M and 50M interactions, power-law fits of ml-1m and Gowalla, and Gowalla's loading time.

Every measurement runs in a fresh subprocess, so its peak RSS (`ru_maxrss`) is its own. The same process's RSS
after its imports (interpreter, numpy, pandas, pyarrow, scipy: the baseline) is recorded too, and each peak is
given as a ratio to the output (CSR arrays + id maps), both as is and less the baseline.

The ingest files are written by the `write` step from the generator (rows/50 users × rows/500 items, raw user and
item ids random distinct 9- and 7-digit integers, a rating 1-5, rows in random order; columns user,item,rating)
into a temporary folder, which is deleted afterwards. The whole-file reader `load_interactions` is measured on
the 5M-row file for comparison (on 50M rows it would need several GB).

Usage: python benchmarks/data_scale.py [--quick]    all steps (--quick: 5M-row files, small generator only)
       python benchmarks/data_scale.py STEP ARGS...  one step in this process; prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 2**20


# ---------------------------------------------------------------------------------------------- measuring
def peak_rss() -> int:
    """Peak resident set size of this process, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def output_bytes(X: Any) -> dict[str, int]:
    m = X.matrix
    csr = m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    ids = X.users.ids.nbytes + X.items.ids.nbytes
    times = 0 if X.timestamps is None else X.timestamps.nbytes
    return {"csr_bytes": int(csr), "id_map_bytes": int(ids), "timestamp_bytes": int(times)}


def measured(fn: Any, baseline: int) -> dict[str, Any]:
    """Runs `fn` (returning an Interactions and extra fields); wall time, peak RSS and ratios to the output."""
    t0 = time.perf_counter()
    X, extra = fn()
    wall = time.perf_counter() - t0
    out = output_bytes(X)
    total = sum(out.values())
    peak = peak_rss()
    return {
        **extra,
        "shape": [X.n_users, X.n_items],
        "nnz": X.nnz,
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(peak / MiB, 1),
        "baseline_rss_mib": round(baseline / MiB, 1),
        "output_mib": round(total / MiB, 1),
        **out,
        "peak_over_output": round(peak / total, 2),
        "peak_less_baseline_over_output": round((peak - baseline) / total, 2),
    }


# ---------------------------------------------------------------------------------------------- steps
def step_write(folder: str, rows: int) -> dict[str, Any]:
    """Writes interactions.csv and interactions.parquet with `rows` rows (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from advrec.data.synthetic import synthetic_interactions

    t0 = time.perf_counter()
    X = synthetic_interactions(rows // 50, rows // 500, rows, random_state=7)
    rng = np.random.default_rng(8)
    users = rng.choice(900_000_000, size=X.n_users, replace=False) + 100_000_000
    items = rng.choice(9_000_000, size=X.n_items, replace=False) + 1_000_000
    m = X.matrix
    u = np.repeat(np.arange(X.n_users, dtype=np.int32), np.diff(m.indptr))
    i = m.indices.astype(np.int32)
    del X, m
    order = rng.permutation(rows)
    u, i = u[order], i[order]
    del order
    rating = rng.integers(1, 6, rows, dtype=np.int8)
    schema = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("rating", pa.int8())])
    csv_path, parquet_path = Path(folder) / "interactions.csv", Path(folder) / "interactions.parquet"
    options = pacsv.WriteOptions(quoting_style="none")
    with pacsv.CSVWriter(csv_path, schema, write_options=options) as w, pq.ParquetWriter(parquet_path, schema) as p:
        for s in range(0, rows, 1_000_000):
            sl = slice(s, s + 1_000_000)
            batch = pa.record_batch([users[u[sl]], items[i[sl]], rating[sl]], schema=schema)
            w.write_batch(batch)
            p.write_batch(batch, row_group_size=1_000_000)
    return {
        "rows": rows,
        "csv_mib": round(csv_path.stat().st_size / MiB, 1),
        "parquet_mib": round(parquet_path.stat().st_size / MiB, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def step_ingest(path: str, reader: str, batch_rows: int) -> dict[str, Any]:
    from advrec.data import load_interactions, load_interactions_streamed

    baseline = peak_rss()

    def run() -> tuple[Any, dict[str, Any]]:
        if reader == "streamed":
            X = load_interactions_streamed(path, rating="rating", batch_rows=batch_rows)
        else:
            X = load_interactions(path, rating="rating")
        return X, {"file": Path(path).suffix.lstrip("."), "reader": reader, "batch_rows": batch_rows}

    row = measured(run, baseline)
    row["rows_per_s"] = round(row["nnz"] / row["wall_s"])
    row["file_mib"] = round(Path(path).stat().st_size / MiB, 1)
    return row


def step_generate(n_users: int, n_items: int, nnz: int, trace: bool) -> dict[str, Any]:
    from advrec.data.synthetic import synthetic_interactions

    baseline = peak_rss()
    if trace:
        import tracemalloc

        tracemalloc.start()
    row = measured(lambda: (synthetic_interactions(n_users, n_items, nnz, random_state=0), {}), baseline)
    if trace:
        row["traced_peak_over_csr"] = round(tracemalloc.get_traced_memory()[1] / row["csr_bytes"], 2)
        tracemalloc.stop()
    row["traced"] = trace
    return row


def step_fit() -> dict[str, Any]:
    """Power-law fits of ml-1m (all ratings, and ratings ≥ 3 10-core) and Gowalla, and of data generated like
    Gowalla at its own size, fitted back."""
    from advrec.data import load_gowalla, load_movielens
    from advrec.data.synthetic import fit_power_law, like

    out: dict[str, Any] = {}
    data = {
        "ml-1m": lambda: load_movielens("ml-1m"),
        "ml-1m (≥3, 10-core)": lambda: load_movielens("ml-1m", min_rating=3, core=10),
        "gowalla": load_gowalla,
    }
    for name, load in data.items():
        X = load()
        t0 = time.perf_counter()
        fit = fit_power_law(X)
        out[name] = {**fit.to_dict(), "fit_s": round(time.perf_counter() - t0, 3), "shape": [*X.shape, X.nnz]}
    G = load_gowalla()
    Y = like(G, G.n_users, G.n_items, G.nnz, random_state=0)
    out["synthetic like gowalla"] = {**fit_power_law(Y).to_dict(), "shape": [*Y.shape, Y.nnz]}
    return out


def step_gowalla() -> dict[str, Any]:
    from advrec.data import gowalla_split, load_gowalla

    out = {}
    for name, fn in (("load_gowalla", load_gowalla), ("gowalla_split", gowalla_split)):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = {"best_s": round(min(times), 3), "runs_s": [round(t, 3) for t in times]}
    return out


STEPS = {
    "write": step_write,
    "ingest": step_ingest,
    "generate": step_generate,
    "fit": step_fit,
    "gowalla": step_gowalla,
}


# ---------------------------------------------------------------------------------------------- driver
def in_subprocess(*args: Any) -> dict[str, Any]:
    """Runs one step in a fresh interpreter; its last stdout line is the step's JSON."""
    before = load_average()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, *map(str, args)]
    print("$", " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["load_before"], row["load_after"] = before, load_average()
    print(json.dumps(row), flush=True)
    return row


def run_all(quick: bool, batch_rows: int) -> dict[str, Any]:
    big = 5_000_000 if quick else 50_000_000
    sizes = [(100_000, 10_000, 5_000_000)] + ([] if quick else [(1_000_000, 100_000, 50_000_000)])
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        },
        "ingest": [],
        "generator": [],
    }
    folder = Path(tempfile.mkdtemp(prefix="advrec-data-scale-", dir="/tmp"))
    try:
        for rows in sorted({5_000_000, big}):
            sub = folder / str(rows)
            sub.mkdir()
            results.setdefault("files", []).append(in_subprocess("write", sub, rows))
            for ext in ("csv", "parquet"):
                path = sub / f"interactions.{ext}"
                results["ingest"].append(in_subprocess("ingest", path, "streamed", batch_rows))
                if rows == 5_000_000:
                    results["ingest"].append(in_subprocess("ingest", path, "whole", batch_rows))
            shutil.rmtree(sub)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for n_users, n_items, nnz in sizes:
        for trace in (0, 1):
            results["generator"].append(in_subprocess("generate", n_users, n_items, nnz, trace))
    results["fit"] = in_subprocess("fit")
    results["gowalla"] = in_subprocess("gowalla")
    return results


# ---------------------------------------------------------------------------------------------- report
def markdown(r: dict[str, Any]) -> str:
    steps = [*r["files"], *r["ingest"], *r["generator"], r["fit"], r["gowalla"]]
    loads = [x[k] for x in steps for k in ("load_before", "load_after")]
    lines = [
        f"# Data at scale ({r['date'][:10]})",
        "",
        f"One process per measurement; peak RSS = `ru_maxrss`; baseline = RSS after imports. {r['machine']['cpus']} "
        f"CPUs shared with other jobs: 1-min load average {min(loads):.2f}-{max(loads):.2f} around the steps (each "
        "step's in the JSON), so wall times are those of a busy machine. Output = CSR arrays (indptr, indices, "
        "float32 data) + id maps.",
        "",
        "## Ingest: `load_interactions_streamed` (columns user,item,rating; raw ids random 9/7-digit integers)",
        "",
        "| file | reader | rows | file MiB | wall s | rows/s | peak RSS MiB | baseline MiB | output MiB | "
        "peak / output | (peak − baseline) / output |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["ingest"]:
        lines.append(
            f"| {x['file']} | {x['reader']} | {x['nnz']:,} | {x['file_mib']:,} | {x['wall_s']} | {x['rows_per_s']:,} | "
            f"{x['peak_rss_mib']:,} | {x['baseline_rss_mib']} | {x['output_mib']} | {x['peak_over_output']} | "
            f"{x['peak_less_baseline_over_output']} |"
        )
    big = max(x["nnz"] for x in r["ingest"])
    worst = max(x["peak_over_output"] for x in r["ingest"] if x["nnz"] == big and x["reader"] == "streamed")
    lines += [
        "",
        f"At {big:,} rows the streamed reader peaks at {worst}× its output, RSS baseline included (target ≤ 3×). "
        "The rows hold no repeated (user, item) pair, so nnz = rows.",
        "",
        "## Synthetic generator: `synthetic_interactions` (defaults: item exponent 2.5, user exponent 2.7)",
        "",
        "| users × items | nnz | wall s | peak RSS MiB | baseline MiB | output MiB | peak / output | "
        "(peak − baseline) / output | tracemalloc peak / CSR |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["generator"]:
        traced = x.get("traced_peak_over_csr", "–")
        lines.append(
            f"| {x['shape'][0]:,} × {x['shape'][1]:,} | {x['nnz']:,} | "
            f"{x['wall_s']}{' (traced)' if x['traced'] else ''} | "
            f"{x['peak_rss_mib']:,} | {x['baseline_rss_mib']} | {x['output_mib']} | {x['peak_over_output']} | "
            f"{x['peak_less_baseline_over_output']} | {traced} |"
        )
    top = max(r["generator"], key=lambda x: (x["nnz"], -x["traced"]))
    lines += [
        "",
        f"At {top['nnz']:,} interactions the generator peaks at {top['peak_over_output']}× its output, RSS baseline "
        "included (target ≤ 2×).",
        "",
        "## Power-law fits (`fit_power_law`: discrete MLE, xmin by least KS distance, tails ≥ 100 values)",
        "",
        "| data | users × items, nnz | item exponent | item xmin | item KS | item tail share | user exponent | "
        "user xmin | user KS | user tail share |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in r["fit"].items():
        if name in ("load_before", "load_after"):
            continue
        it, us = f["items"], f["users"]
        lines.append(
            f"| {name} | {f['shape'][0]:,} × {f['shape'][1]:,}, {f['shape'][2]:,} | "
            f"{it['exponent']:.3f} | {it['xmin']} | "
            f"{it['ks']:.4f} | {it['n_tail'] / it['n']:.2f} | {us['exponent']:.3f} | {us['xmin']} | {us['ks']:.4f} | "
            f"{us['n_tail'] / us['n']:.2f} |"
        )
    g = r["gowalla"]
    lines += [
        "",
        f"Gowalla (LightGCN files): `load_gowalla` {g['load_gowalla']['best_s']} s, `gowalla_split` (validation "
        f"carved) {g['gowalla_split']['best_s']} s, best of 3.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in STEPS:
        step, args = sys.argv[1], sys.argv[2:]
        convert = {"write": (str, int), "ingest": (str, str, int), "generate": (int, int, int, int)}.get(step, ())
        print(json.dumps(STEPS[step](*(c(a) for c, a in zip(convert, args, strict=True)))))  # type: ignore[operator]
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5M-row files and the small generator size only")
    parser.add_argument("--batch-rows", type=int, default=500_000)
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the saved .json")
    args = parser.parse_args()
    from advrec.io import atomic_write_text

    name = "data_scale_quick" if args.quick else "data_scale"
    RESULTS.mkdir(exist_ok=True)
    if args.render:
        results = json.loads((RESULTS / f"{name}.json").read_text())
    else:
        results = run_all(args.quick, args.batch_rows)
        atomic_write_text(RESULTS / f"{name}.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(RESULTS / f"{name}.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
