"""LightGCN's learning curve on Gowalla (official split, validation carved from train.txt) within a CPU budget.

LightGCN's published Gowalla numbers (Recall@20 0.1830, NDCG@20 0.1554) come from about 1,000 epochs on a GPU;
on one CPU core every batch propagates the whole 70,839-node graph, so this records how far a budget gets:
validation Recall@20 / NDCG@20 and wall time after every validated epoch, written as the fit goes (a run cut
short keeps its curve), then a plot.

Usage: python benchmarks/lightgcn_curve.py [--minutes 30] [--batch-size 8192] [--lr 0.005] [--eval-every 2]
Results: benchmarks/results/lightgcn_gowalla_curve.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import torch

from advrec.io import atomic_write_text
from advrec.models import LightGCN
from advrec.models.torch_base import TrainingPlugin

RESULTS = Path(__file__).resolve().parent / "results"
PUBLISHED = {"recall@20": 0.1830, "ndcg@20": 0.1554}


class Curve(TrainingPlugin):
    """Writes every epoch's log row to `path` as it comes, and stops the fit once `budget_s` has passed."""

    changes_training: ClassVar[bool] = False

    def __init__(self, path: Path, setting: dict[str, Any], budget_s: float) -> None:
        self.path, self.setting, self.budget_s = path, setting, budget_s
        self.rows: list[dict[str, float]] = []
        self.t0 = time.perf_counter()

    def epoch_end(self, model: Any, row: dict[str, float]) -> None:
        self.rows.append({**row, "elapsed_s": time.perf_counter() - self.t0})
        payload = {"setting": self.setting, "published": PUBLISHED, "rows": self.rows}
        atomic_write_text(self.path, json.dumps(payload, indent=1))
        if time.perf_counter() - self.t0 > self.budget_s:
            raise TimeoutError


def report(path: Path) -> None:
    """The Markdown table and the plot of a saved curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(path.read_text())
    rows = [r for r in data["rows"] if "valid_recall@20" in r]
    lines = [
        "# LightGCN on Gowalla within a CPU budget",
        "",
        f"Setting: {json.dumps(data['setting'])}. Validation = 10% of each user's train.txt items (seed 2020). "
        f"Published (test, ~1,000 epochs on GPU): Recall@20 {PUBLISHED['recall@20']}, NDCG@20 {PUBLISHED['ndcg@20']}.",
        "",
        "| epoch | loss | valid Recall@20 | elapsed min |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['epoch']:.0f} | {r['loss']:.4f} | {r['valid_recall@20']:.4f} | {r['elapsed_s'] / 60:.1f} |" for r in rows
    ]
    atomic_write_text(path.with_suffix(".md"), "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["elapsed_s"] / 60 for r in rows], [r["valid_recall@20"] for r in rows], marker="o", label="valid")
    ax.axhline(PUBLISHED["recall@20"], color="grey", ls="--", label="published (test)")
    ax.set_xlabel("minutes on one CPU core")
    ax.set_ylabel("Recall@20")
    ax.set_title("LightGCN, Gowalla")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)


def main() -> None:
    from advrec.data import official_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    split = official_split("gowalla", data_dir=os.environ.get("ADVREC_DATA_DIR"), valid_share=0.1)
    setting = {"batch_size": args.batch_size, "lr": args.lr, "layers": 3, "factors": 64, "reg": 1e-4, "threads": 1}
    model = LightGCN(
        batch_size=args.batch_size, lr=args.lr, epochs=1000, eval_every=args.eval_every, patience=1000,
        valid_metric="recall@20", device="cpu", random_state=2020,
    )  # fmt: skip
    path = args.out / "lightgcn_gowalla_curve.json"
    try:
        model.fit(split.train, valid=split, plugins=[Curve(path, setting, args.minutes * 60)])
    except TimeoutError:
        pass
    report(path)
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
