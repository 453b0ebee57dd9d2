"""Reports of run directories: one self-contained HTML page (and markdown beside it) per run or per comparison.

A run's report re-evaluates its model on its split and shows the protocol, every metric with a 95% confidence
interval over users, the training curves, the metrics by user activity (quintiles of training history length),
and where the run has them its privacy budget, its federation, and its robustness curves and attacks. A
comparison evaluates several runs, pairs their per-user values on the test users they share (by raw user id),
tests each run against the first (paired t-test and Wilcoxon), and draws one chart with the intervals. Plots are
PNG files beside the markdown and embedded in the HTML (base64), so the page needs nothing else to render.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from advrec.errors import ConfigError
from advrec.evaluation.evaluate import Report, evaluate
from advrec.evaluation.metrics import paired_test
from advrec.evaluation.report import bar_chart, pyplot, save_figure, training_curves
from advrec.io import atomic_write_text
from advrec.runs import REPORT_DIR, Run, load_run

KS = (10, 20)
SHOWN = ("ndcg@10", "recall@10", "precision@10", "hit@10", "mrr@10", "ndcg@20", "recall@20")


@dataclass
class Page:
    """A report being written: sections of markdown and their HTML, and the figures they show."""

    title: str
    folder: Path
    md: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.md += [f"## {text}", ""]
        self.body.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str) -> None:
        self.md += [text, ""]
        self.body.append(f"<p>{html.escape(text)}</p>")

    def table(self, df: pd.DataFrame, digits: int = 4) -> None:
        shown = df.map(lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v))
        header = "| " + " | ".join([str(shown.index.name or ""), *map(str, shown.columns)]) + " |"
        self.md += [header, "|" + "---|" * (len(shown.columns) + 1)]
        self.md += ["| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in shown.iterrows()] + [""]
        self.body.append(shown.to_html(classes="t", border=0, escape=True))

    def figure(self, path: Path, caption: str) -> None:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.md += [f"![{caption}]({path.name})", ""]
        self.body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip

    def write(self) -> Path:
        """`report.md` and `report.html` in the folder; returns the HTML's path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / "report.md", "\n".join([f"# {self.title}", "", *self.md]))
        style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}table.t{border-collapse:"
                 "collapse}table.t td,table.t th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}"
                 "img{max-width:100%}figcaption{font-size:.85em;color:#555}")  # fmt: skip
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
                f"</title><style>{style}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "".join(self.body) + "</body></html>")  # fmt: skip
        return atomic_write_text(self.folder / "report.html", page)


def ranking_words(report: Report) -> str:
    """What was ranked, in words ("every item but the user's training items", or only the cold items)."""
    if report.protocol.get("ranking") == "cold items only":
        return "only the cold items ranked (items without training interactions)"
    return "every item ranked but the user's training items"


def intervals(report: Report, metrics: Sequence[str] = SHOWN) -> pd.DataFrame:
    """Mean and 95% confidence interval (normal approximation, mean ± 1.96·sd/√n over users) of each metric."""
    rows = {}
    for m in metrics:
        if m not in report.per_user:
            continue
        v = report.per_user[m].to_numpy(dtype=np.float64)
        half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        rows[m] = {"mean": float(v.mean()), "ci_low": float(v.mean() - half), "ci_high": float(v.mean() + half)}
    out = pd.DataFrame(rows).T
    out.index.name = "metric"
    return out


def by_activity(run: Run, report: Report, metric: str = "ndcg@10", groups: int = 5) -> pd.DataFrame:
    """`metric` by quintile of the users' training history length (Q1: the least active)."""
    length = np.diff(run.split.train.matrix.indptr)[report.per_user.index.to_numpy()]
    ranks = pd.Series(length).rank(method="first").to_numpy()
    bucket = np.minimum((ranks - 1) * groups // len(ranks), groups - 1).astype(int) if len(ranks) else ranks
    df = pd.DataFrame({"bucket": bucket, "length": length, metric: report.per_user[metric].to_numpy()})
    out = df.groupby("bucket").agg(users=(metric, "size"), min_items=("length", "min"), max_items=("length", "max"),
                                   mean=(metric, "mean"))  # fmt: skip
    out.index = [f"Q{b + 1}" for b in out.index]
    out.index.name = "activity"
    return out


def bar_with_intervals(table: dict[str, pd.DataFrame], metric: str, path: Path, title: str) -> Path:
    """One bar per run (or group) with its 95% interval."""
    plt = pyplot()
    names = list(table)
    rows = np.array([table[n].loc[metric, ["mean", "ci_low", "ci_high"]].to_numpy(dtype=float) for n in names])
    means = rows[:, 0]
    err = [means - rows[:, 1], rows[:, 2] - means]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 3.2))
    ax.bar(names, means, yerr=err, capsize=4, color="#4c72b0")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def run_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """The report of one run directory, in `out` (default `RUN_DIR/report`); returns the HTML file."""
    run = load_run(run_dir)
    folder = Path(out) if out is not None else run.path / REPORT_DIR
    name = type(run.model).__name__
    page = Page(f"{name} on {run.manifest.get('dataset', {}).get('name', '?')} ({run.path.name})", folder)
    report = evaluate(run.model, run.split, ks=KS)
    page.heading("Protocol")
    page.text(f"Split: {json.dumps(run.manifest.get('split', {}))}. Evaluated: {report.users}, on the test part; "
              f"{ranking_words(report)}.")  # fmt: skip
    page.heading("Metrics (mean over users, 95% interval)")
    page.table(intervals(report))
    log = getattr(run.model, "training_log_", None)
    if log:
        page.heading("Training")
        page.figure(training_curves(log, folder / "training.png", title=name), "per-epoch training curves")
    page.heading("By user activity")
    activity = by_activity(run, report)
    page.table(activity)
    chart = bar_chart(activity.rename(columns={"mean": "ndcg@10"}), ["ndcg@10"], folder / "activity.png",
                      title="by training history length (Q1: least active users)")  # fmt: skip
    page.figure(chart, "NDCG@10 by user activity")
    _extras(run, page, folder)
    return page.write()


def _extras(run: Run, page: Page, folder: Path) -> None:
    """Privacy, federation, robustness and attack sections, where the run has them."""
    manifest = run.manifest
    for key, title in (("privacy", "Privacy budget"), ("federated", "Federation")):
        if isinstance(manifest.get(key), dict):
            entry = {k: v for k, v in manifest[key].items() if not isinstance(v, dict | list)}
            page.heading(title)
            page.table(pd.DataFrame({"value": pd.Series(entry, dtype=object)}).rename_axis(key))
    curves = run.path / "robustness" / "robustness.json"
    if curves.is_file():
        from advrec.robustness.report import curve_plot

        df = pd.DataFrame(json.loads(curves.read_text()))
        page.heading("Robustness")
        page.figure(curve_plot(df, folder / "robustness.png", title="NDCG@10 under attacks on the embeddings"),
                    "NDCG@10 against the perturbation's norm")  # fmt: skip
    attacks = sorted((run.path / "attacks").glob("*/attack.json")) if (run.path / "attacks").is_dir() else []
    if attacks:
        rows = {}
        for path in attacks:
            a = json.loads(path.read_text())["undefended"]
            rows[path.parent.name] = {k: a[k] for k in ("hr@10_before", "hr@10_after", "rank_shift") if k in a}
        page.heading("Data-poisoning attacks")
        page.table(pd.DataFrame(rows).T.rename_axis("attack"))


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path, metric: str = "ndcg@10") -> Path:
    """One comparison page of several runs: metrics with intervals, paired tests against the first run on the
    test users all runs share (by raw id), one chart; returns the HTML file."""
    if len(run_dirs) < 2:
        raise ConfigError("compare needs at least two run directories")
    runs = [load_run(d) for d in run_dirs]
    names = [f"{type(r.model).__name__} ({r.path.name})" for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in runs]
    reports = [evaluate(r.model, r.split, ks=KS) for r in runs]
    per_user = [rep.per_user[metric].set_axis(r.users.raw(rep.per_user.index.to_numpy()).astype(str))
                for r, rep in zip(runs, reports, strict=True)]  # fmt: skip
    shared = sorted(set.intersection(*(set(p.index) for p in per_user)))
    if len(shared) < 2:
        raise ConfigError(f"the runs share {len(shared)} test users: compare runs evaluated on the same users")
    folder = Path(out)
    page = Page(f"Comparison of {len(runs)} runs on {metric}", folder)
    table = {n: intervals(rep) for n, rep in zip(names, reports, strict=True)}
    page.heading("Metrics (mean over each run's test users, 95% interval)")
    cells = {n: {m: f"{r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]" for m, r in t.iterrows()}
             for n, t in table.items()}  # fmt: skip
    page.table(pd.DataFrame(cells).T.rename_axis("run"))
    page.heading(f"Paired tests on the {len(shared):,} shared test users ({metric}, against {names[0]})")
    ref = per_user[0].loc[shared].to_numpy()
    rows = {}
    for n, p in zip(names[1:], per_user[1:], strict=True):
        values = p.loc[shared].to_numpy()
        t, w = paired_test(values, ref, "t"), paired_test(values, ref, "wilcoxon")
        rows[n] = {
            "mean difference": f"{np.mean(values - ref):+.4f}",
            "t-test p": f"{t['p_value']:.2g}",
            "Wilcoxon p": f"{w['p_value']:.2g}",
        }
    page.table(pd.DataFrame(rows).T.rename_axis("run"), digits=4)
    page.figure(bar_with_intervals(table, metric, folder / "compare.png", f"{metric}, test, 95% intervals"),
                f"{metric} of each run")  # fmt: skip
    return page.write()
