"""Full-ranking evaluation in chunks of users: score all items, drop known ones, take the top K, compute metrics.

The users are ranked a chunk at a time; how many users a chunk holds follows from a memory budget and the
number of items (`users_per_chunk`). Only per-user metric values (users × metrics) and per-item
recommendation counts are kept across chunks: no users × items array of the whole population is ever built.

In a process group of several ranks (`advrec.distributed.active()`), each rank ranks a contiguous share of the
users, and the per-user values (in user order) and item counts are gathered, so every rank returns the report
one process would have. Every rank must then call `evaluate` together, as with any collective operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec import distributed
from advrec.data.splits import EvalSet, Split
from advrec.errors import ConfigError, DataError
from advrec.evaluation.metrics import (
    METRICS,
    coverage_of_counts,
    gini_of_counts,
    item_counts,
    novelty_of_counts,
    paired_test,
    ranking_metrics,
)
from advrec.evaluation.ranking import DEFAULT_MEMORY_BUDGET, entry_positions, top_k, users_per_chunk
from advrec.progress import Steps, progress_wanted

ScoreFn = Callable[[sp.csr_matrix, np.ndarray], np.ndarray]


class Scorer(Protocol):
    def score(self, history: Any, users: np.ndarray) -> np.ndarray: ...


@dataclass
class Report:
    """Metrics of one evaluation: `summary` (mean over evaluated users) and `per_user` values.

    `protocol` says how they were obtained; its "users" entry says which users were evaluated: "all M users"
    or "sample of N of M users (seed s)".
    """

    summary: dict[str, float]
    per_user: pd.DataFrame
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def users(self) -> str:
        """Which users the metrics average over ("all M users" or "sample of N of M users (seed s)")."""
        return str(self.protocol.get("users", f"{len(self.per_user)} users"))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v:.4f}" for k, v in self.summary.items())
        return f"Report({body}; {self.users})"

    def markdown(self, digits: int = 4) -> str:
        """The protocol (users evaluated first) and a metric | value table, as GitHub-flavoured markdown."""
        lines = [f"Users: {self.users}."]
        for key in ("on", "ranking", "ks"):
            if key in self.protocol:
                lines.append(f"{key.capitalize()}: {self.protocol[key]}.")
        lines += ["", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.{digits}f} |" for k, v in self.summary.items()]
        return "\n".join(lines)

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
    batch_size: int | None = None,
    progress: bool | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    sample_users: int | None = None,
    random_state: int | np.random.Generator | None = None,
) -> Report:
    """Full-ranking evaluation of `model` on the validation or test part of `split`.

    Every user with a non-empty target is ranked over all items, minus the items of their history (and,
    on test, their validation items). Metrics follow DESIGN §5; `summary` also holds item coverage,
    novelty and Gini index of the top-K lists, per K. Users are ranked in chunks that fit `memory_budget`
    bytes (`batch_size` users per chunk when given). `progress`: show it (a bar on a terminal, else a log line
    per chunk); None: as `advrec.progress.enable_progress` set it. `sample_users`: evaluate a uniform sample of
    that many of the users instead (drawn with `random_state`); `report.protocol["users"]` says which was done.
    """
    es = split.eval_set(on, cold_only=cold_only)
    popularity = np.bincount(split.train.matrix.indices, minlength=split.n_items)
    score = model.score
    if getattr(model, "sequential", False):  # it ranks from the order of each history: give it the timestamps
        timed = es.timed_history()

        def score(history: Any, users: np.ndarray) -> np.ndarray:
            return model.score(timed, users)

    report = evaluate_scores(
        score,
        es,
        ks=ks,
        metrics=metrics,
        batch_size=batch_size,
        item_popularity=popularity,
        progress=progress,
        memory_budget=memory_budget,
        sample_users=sample_users,
        random_state=random_state,
    )
    ranking = "cold items only" if cold_only else "full"
    report.protocol = {"split": split.protocol, "on": on, "ranking": ranking, "ks": list(ks), **report.protocol}
    return report


def evaluate_scores(
    score: ScoreFn,
    es: EvalSet,
    ks: Sequence[int] = (10, 20),
    metrics: Sequence[str] = METRICS,
    batch_size: int | None = None,
    item_popularity: np.ndarray | None = None,
    progress: bool | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    sample_users: int | None = None,
    random_state: int | np.random.Generator | None = None,
) -> Report:
    """Evaluates a scoring function `score(history, users) -> (len(users), n_items)` on one `EvalSet`.

    Chunks, sampling, progress and sharing out among ranks as in `evaluate`.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError(f"ks must be positive cut-offs, got {ks}")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ConfigError(f"unknown metrics {sorted(unknown)}; known: {list(METRICS)}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1 users, got {batch_size}")
    n_items = es.target.shape[1]
    users, label = sample_of_users(es.users, sample_users, random_state)
    size = batch_size or users_per_chunk(n_items, memory_budget)
    not_candidate = None
    if es.candidates is not None:
        not_candidate = np.ones(n_items, dtype=bool)
        not_candidate[es.candidates] = False
    acc = _Accumulator(ks, metrics, n_items)
    lo, hi = distributed.split_evenly(len(users))
    mine = users[lo:hi]
    what = f"{len(mine):,} of {len(users):,} users on rank 0" if distributed.active() else f"{len(users):,} users"
    for start in _chunk_starts(len(mine), size, progress_wanted(progress) and distributed.is_main(), what):
        ub = mine[start : start + size]
        items, top_scores = _ranked(score, es, ub, ks[-1], not_candidate)
        acc.add(_hits(es.target[ub], items, top_scores), np.diff(es.target[ub].indptr), items, top_scores)
    acc.gather()
    report = acc.report(users, item_popularity, es.history.shape[0])
    report.protocol["users"] = label
    return report


def sample_of_users(
    users: np.ndarray, sample_users: int | None, random_state: int | np.random.Generator | None = None
) -> tuple[np.ndarray, str]:
    """The users to evaluate and their label: all of them ("all M users"), or a uniform sample of
    `sample_users` without replacement, sorted ("sample of N of M users (seed s)"; s redraws the same sample)."""
    m = len(users)
    if sample_users is None:
        return users, f"all {m} users"
    if isinstance(sample_users, bool) or not isinstance(sample_users, int | np.integer) or sample_users < 1:
        raise ConfigError(f"sample_users must be a positive number of users or None, got {sample_users!r}")
    if sample_users >= m:
        return users, f"all {m} users"
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        seed = int(random_state)
    else:  # a Generator or None: draw the seed, so that the label names a seed that gives this sample again
        drawn = int(np.random.default_rng(random_state).integers(2**31 - 1))
        seed = int(distributed.broadcast_object(drawn))  # type: ignore[call-overload]
    chosen = np.sort(np.random.default_rng(seed).choice(m, size=int(sample_users), replace=False))
    return users[chosen], f"sample of {int(sample_users)} of {m} users (seed {seed})"


def _chunk_starts(n_users: int, size: int, progress: bool | None, what: str = "") -> Iterator[int]:
    """Start of each chunk, with progress (`advrec.progress`): a bar on a terminal, else a log line per chunk."""
    starts = range(0, n_users, size)
    steps = Steps(starts, f"evaluating {what or f'{n_users:,} users'}", progress_wanted(progress), "chunk")
    for start in steps:
        yield start
        steps.report({"users done": min(start + size, n_users)})


def _ranked(
    score: ScoreFn, es: EvalSet, users: np.ndarray, kmax: int, not_candidate: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`kmax` items and scores of `users` (excluded items -inf), padded with misses to `kmax` columns."""
    s = np.array(score(es.history, users), dtype=np.float32)  # a copy: the model's array is not changed
    n_items = es.target.shape[1]
    if s.shape != (len(users), n_items):
        raise DataError(f"score returned shape {s.shape}, expected {(len(users), n_items)}")
    s[np.isnan(s)] = -np.inf
    s[entry_positions(es.exclude[users])] = -np.inf
    if not_candidate is not None:
        s[:, not_candidate] = -np.inf
    items, top_scores = top_k(s, kmax)
    if items.shape[1] < kmax:  # fewer items than the largest cut-off: pad with misses
        pad = kmax - items.shape[1]
        items = np.pad(items, ((0, 0), (0, pad)))
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return items, top_scores


def _hits(target: sp.csr_matrix, items: np.ndarray, top_scores: np.ndarray) -> np.ndarray:
    """hits[u, j]: item `items[u, j]` is in u's target row (and was ranked, not an excluded -inf slot)."""
    n_items = target.shape[1]
    rows = np.repeat(np.arange(target.shape[0], dtype=np.int64), np.diff(target.indptr))
    keys = np.sort(rows * n_items + target.indices)
    query = np.arange(len(items), dtype=np.int64)[:, None] * n_items + items
    pos = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
    found = keys[pos] == query if len(keys) else np.zeros(query.shape, dtype=bool)
    return found & np.isfinite(top_scores)


class _Accumulator:
    """What is kept across chunks: per-user metric values and, per K, how often each item was recommended."""

    def __init__(self, ks: list[int], metrics: Sequence[str], n_items: int) -> None:
        self.ks, self.metrics, self.n_items = ks, list(metrics), n_items
        self.per_user: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for k in ks for m in metrics}
        self.counts = {k: np.zeros(n_items, dtype=np.int64) for k in ks}
        self.n_users = 0

    def add(self, hits: np.ndarray, n_rel: np.ndarray, items: np.ndarray, top_scores: np.ndarray) -> None:
        shown = np.where(np.isfinite(top_scores), items, -1)
        for k in self.ks:
            vals = ranking_metrics(hits, n_rel, k)
            for m in self.metrics:
                self.per_user[f"{m}@{k}"].append(vals[m])
            self.counts[k] += item_counts(shown[:, :k], self.n_items)
        self.n_users += len(hits)

    def gather(self) -> None:
        """Every rank's per-user values, concatenated in rank order, and the item counts summed over ranks."""
        if not distributed.active():
            return
        names = list(self.per_user)
        values = np.zeros((self.n_users, len(names)), dtype=np.float64)
        for j, name in enumerate(names):
            if self.per_user[name]:
                values[:, j] = np.concatenate(self.per_user[name])
        values = distributed.gather_rows(values)
        self.per_user = {name: [values[:, j]] for j, name in enumerate(names)}
        self.n_users = len(values)
        counts = distributed.all_sum(np.stack([self.counts[k] for k in self.ks]))
        self.counts = {k: np.rint(counts[i]).astype(np.int64) for i, k in enumerate(self.ks)}

    def report(self, users: np.ndarray, item_popularity: np.ndarray | None, n_history_users: int) -> Report:
        table = pd.DataFrame(
            {name: np.concatenate(v) if v else np.zeros(0) for name, v in self.per_user.items()},
            index=pd.Index(users, name="user"),
        )
        summary = {name: float(table[name].mean()) if len(table) else float("nan") for name in table.columns}
        for k, counts in self.counts.items():
            summary[f"coverage@{k}"] = coverage_of_counts(counts)
            summary[f"gini@{k}"] = gini_of_counts(counts)
            if item_popularity is not None:
                summary[f"novelty@{k}"] = novelty_of_counts(counts, item_popularity, n_history_users)
        summary["n_users"] = float(len(users))
        return Report(summary=summary, per_user=table)
