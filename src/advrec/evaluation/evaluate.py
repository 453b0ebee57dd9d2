"""Batched full-ranking evaluation: score all items, drop known ones, take the top K, compute metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec.data.splits import EvalSet, Split
from advrec.evaluation.metrics import (
    METRICS,
    gini_index,
    item_coverage,
    novelty,
    paired_test,
    ranking_metrics,
)
from advrec.evaluation.ranking import entry_positions, top_k
from advrec.progress import progress_bar

ScoreFn = Callable[[sp.csr_matrix, np.ndarray], np.ndarray]


class Scorer(Protocol):
    def score(self, history: Any, users: np.ndarray) -> np.ndarray: ...


@dataclass
class Report:
    """Metrics of one evaluation: `summary` (mean over evaluated users) and `per_user` values."""

    summary: dict[str, float]
    per_user: pd.DataFrame
    protocol: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v:.4f}" for k, v in self.summary.items())
        return f"Report({body})"

    def compare(
        self, other: Report, metric: str = "ndcg@10", method: Literal["t", "wilcoxon"] = "t"
    ) -> dict[str, float]:
        """Paired significance test of `metric` between two reports on the same users."""
        if metric not in self.per_user or metric not in other.per_user:
            raise KeyError(f"metric {metric!r} is not in both reports' per-user values")
        if not self.per_user.index.equals(other.per_user.index):
            raise ValueError("the two reports were computed on different users; compare reports of one split")
        return paired_test(self.per_user[metric].to_numpy(), other.per_user[metric].to_numpy(), method=method)


def evaluate(
    model: Scorer,
    split: Split,
    ks: Sequence[int] = (10, 20),
    on: str = "test",
    cold_only: bool = False,
    metrics: Sequence[str] = METRICS,
    batch_size: int = 2048,
    progress: bool = False,
) -> Report:
    """Full-ranking evaluation of `model` on the validation or test part of `split`.

    Every user with a non-empty target is ranked over all items, minus the items of their history (and,
    on test, their validation items). Metrics follow DESIGN §5; `summary` also holds item coverage,
    novelty and Gini index of the top-K lists, per K.
    """
    es = split.eval_set(on, cold_only=cold_only)
    popularity = np.diff(sp.csc_matrix(split.train.matrix).indptr)
    report = evaluate_scores(
        model.score,
        es,
        ks=ks,
        metrics=metrics,
        batch_size=batch_size,
        item_popularity=popularity,
        progress=progress,
    )
    ranking = "cold items only" if cold_only else "full"
    report.protocol = {"split": split.protocol, "on": on, "ranking": ranking, "ks": list(ks)}
    return report


def evaluate_scores(
    score: ScoreFn,
    es: EvalSet,
    ks: Sequence[int] = (10, 20),
    metrics: Sequence[str] = METRICS,
    batch_size: int = 2048,
    item_popularity: np.ndarray | None = None,
    progress: bool = False,
) -> Report:
    """Evaluates a scoring function `score(history, users) -> (len(users), n_items)` on one `EvalSet`."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {list(METRICS)}")
    kmax = ks[-1]
    users = es.users
    n_items = es.target.shape[1]
    not_candidate = None
    if es.candidates is not None:
        not_candidate = np.ones(n_items, dtype=bool)
        not_candidate[es.candidates] = False
    per_user: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for k in ks for m in metrics}
    tops: list[np.ndarray] = []
    batches = range(0, len(users), batch_size)
    for start in progress_bar(batches, desc="evaluating", disable=not progress):
        ub = users[start : start + batch_size]
        s = np.asarray(score(es.history, ub), dtype=np.float32)
        if s.shape != (len(ub), n_items):
            raise ValueError(f"score returned shape {s.shape}, expected {(len(ub), n_items)}")
        s = np.where(np.isnan(s), -np.inf, s)
        s[entry_positions(es.exclude[ub])] = -np.inf
        if not_candidate is not None:
            s[:, not_candidate] = -np.inf
        items, top_scores = top_k(s, kmax)
        if items.shape[1] < kmax:  # fewer items than the largest cut-off: pad with misses
            pad = kmax - items.shape[1]
            items = np.pad(items, ((0, 0), (0, pad)))
            top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        tgt = es.target[ub]
        dense = np.zeros((len(ub), n_items), dtype=bool)
        dense[entry_positions(tgt)] = True
        hits = np.take_along_axis(dense, items, axis=1) & np.isfinite(top_scores)
        n_rel = np.diff(tgt.indptr)
        for k in ks:
            vals = ranking_metrics(hits, n_rel, k)
            for m in metrics:
                per_user[f"{m}@{k}"].append(vals[m])
        tops.append(np.where(np.isfinite(top_scores), items, -1))
    table = pd.DataFrame(
        {name: np.concatenate(v) if v else np.zeros(0) for name, v in per_user.items()},
        index=pd.Index(users, name="user"),
    )
    summary = {name: float(table[name].mean()) if len(table) else float("nan") for name in table.columns}
    top = np.concatenate(tops) if tops else np.zeros((0, kmax), dtype=np.int64)
    for k in ks:
        tk = top[:, :k]
        tk = tk[tk >= 0]
        summary[f"coverage@{k}"] = item_coverage(tk.reshape(-1, 1), n_items)
        summary[f"gini@{k}"] = gini_index(tk.reshape(-1, 1), n_items)
        if item_popularity is not None:
            summary[f"novelty@{k}"] = novelty(tk.reshape(-1, 1), item_popularity, es.history.shape[0])
    summary["n_users"] = float(len(users))
    return Report(summary=summary, per_user=table)
