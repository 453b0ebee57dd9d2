"""Human-readable results: markdown tables and bar charts of several models' metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd


def results_frame(results: Mapping[str, Mapping[str, float]], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per model, one column per metric (all metrics, or `columns` in that order)."""
    df = pd.DataFrame({name: dict(values) for name, values in results.items()}).T
    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]
    return df


def markdown_table(df: pd.DataFrame, digits: int = 4, index_name: str = "model") -> str:
    """A GitHub-flavoured markdown table of a results frame."""
    header = [index_name, *map(str, df.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(df.columns)) + "|"]
    for name, row in df.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Writes `fig` as PNG to `path` (parent folders created; temporary file, then rename) and closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
    tmp.replace(path)
    return path


def bar_chart(df: pd.DataFrame, metrics: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Grouped bar chart of `metrics` per model, written as PNG."""
    plt = pyplot()
    cols = [m for m in metrics if m in df.columns]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(df), 3.6))
    df[cols].plot.bar(ax=ax, rot=0, width=0.75)
    ax.set_ylabel("score")
    ax.set_xlabel("")
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=7, padding=1)  # type: ignore[arg-type]
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


CURVE_PANELS = (
    ("losses", ("loss", "d_loss", "g_loss")),
    ("discriminator accuracy", ("d_real_acc", "d_fake_acc")),
    ("generated profiles", ("gen_coverage", "gen_jaccard")),
    ("validation", ("valid_ndcg@10",)),
)


def training_curves(log: Sequence[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Per-epoch training curves as PNG: losses, D accuracy, diversity of generated profiles, validation
    NDCG@10 — one panel for each group the log has; epochs with a mode-collapse alarm are shaded."""
    plt = pyplot()
    df = pd.DataFrame(list(log))
    if df.empty:
        raise ValueError("the training log is empty")
    if "g_loss" in df:  # a GAN's "loss" is its generator loss
        df = df.drop(columns="loss")
    panels = [(name, [k for k in keys if k in df]) for name, keys in CURVE_PANELS]
    panels = [(name, keys) for name, keys in panels if keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            part = df[["epoch", key]].dropna()
            ax.plot(part["epoch"], part[key], label=key, marker="." if len(part) < 30 else None)
        if "collapse" in df:
            for epoch in df.loc[df["collapse"] == 1, "epoch"]:
                ax.axvspan(epoch - 0.5, epoch + 0.5, color="red", alpha=0.15, lw=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
