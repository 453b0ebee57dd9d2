"""`ServedModel`: a run directory loaded for serving, with its item-side structures computed once per load.

Everything the request path needs is built here, so a request does only its own work: id lookups are
dict look-ups, the training history is one CSR matrix, popularity (the fallback ranking) and the
column-normalised co-occurrence matrix (similar items for models that keep one vector per user) are
ready, and raw ids and titles are plain Python lists for the JSON answer. With `AnnOptions(method="faiss")`
a model whose score is ⟨user vector, item vector⟩ (BPRMF, IRGAN) also gets an HNSW graph over its item
vectors, and known users' top-k and similar items come from it (`advrec.serving.ann`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions
from advrec.data.sequences import order_positions
from advrec.errors import ConfigError, UnknownIdError
from advrec.evaluation.ranking import entry_positions, top_k
from advrec.runs import Run, load_run
from advrec.serving.ann import AnnOptions, Factors, HNSWIndex, factors_of, first_kept, rank, seen_mask

SCORE_CHUNK = 128  # rows scored in one call (a sparse × dense product holds the interpreter while it runs)


def model_version(run_dir: Path) -> str:
    """`<class>-<12 hex digits>`: a digest of the model files, so the same model always has the same version."""
    h = hashlib.sha256()
    for f in sorted((run_dir / "model").rglob("*")):
        if f.is_file():
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:12]


@dataclass
class Histories:
    """Rows of users to score: `liked` feeds the model, `seen` (liked or rated below min_rating) is excluded."""

    liked: sp.csr_matrix
    seen: sp.csr_matrix
    train_users: np.ndarray  # training index of each row, -1 for users the model never saw
    order: sp.csr_matrix | None = None  # for a sequential model: `liked` with each item's position in time order

    def slice(self, start: int, stop: int) -> Histories:
        order = None if self.order is None else self.order[start:stop]
        return Histories(self.liked[start:stop], self.seen[start:stop], self.train_users[start:stop], order)


class ServedModel:
    """A run's model, id maps, titles and training history, ready to answer requests."""

    def __init__(self, run: Run, ann: AnnOptions | None = None) -> None:
        self.run = run
        self.path = Path(run.path)
        self.model = run.model
        self.model_name = type(run.model).__name__
        self.version = f"{self.model_name}-{model_version(self.path)}"
        self.loaded_at = time.time()
        self.uses_history = bool(run.model.uses_history)
        dataset = run.manifest.get("dataset", {}) or {}
        self.min_rating: float | None = dataset.get("min_rating")
        history = sp.csr_matrix(run.history(), dtype=np.float32)
        history.sum_duplicates()
        history.data[:] = 1.0
        self.history = history
        self.n_users, self.n_items = history.shape
        self.sequential = bool(getattr(run.model, "sequential", False))
        self.order: sp.csr_matrix | None = None
        if self.sequential:  # the training rows in time order: what the model reads
            self.order = self._training_order(run)
        if self.n_items != self.model.n_items_:
            raise ConfigError(
                f"{self.path}: the run's data has {self.n_items} items but its model was fitted on "
                f"{self.model.n_items_}"
            )
        self.ann = ann or AnnOptions()
        self.factors: Factors | None = None
        self.ann_index: HNSWIndex | None = None
        if self.ann.enabled:
            self.factors = factors_of(self.model, self.history)
            self.ann_index = HNSWIndex(self.factors.item, self.ann)
        self.item_ids: list[int | str] = run.items.ids.tolist()
        self.user_lookup = {str(u): i for i, u in enumerate(run.users.ids.tolist())}
        self.item_lookup = {str(x): i for i, x in enumerate(self.item_ids)}
        self.titles: list[str | None] = (
            [None if t is None else str(t) for t in run.titles.tolist()]
            if run.titles is not None
            else [None] * self.n_items
        )
        # item vectors of a model that folds a new history in (IALS), taken once rather than copied per request
        embeddings = getattr(self.model, "embeddings", None)
        self.item_vectors = embeddings()[1] if embeddings is not None and hasattr(self.model, "fold_in") else None
        counts = np.asarray(history.sum(axis=0)).ravel().astype(np.float32)
        self.popularity = counts / max(1.0, float(counts.max(initial=0.0)))
        norms = np.sqrt(counts)
        self.cooc_items = sp.csr_matrix(history.T.multiply(1.0 / np.where(norms > 0, norms, 1.0)[:, None]))
        self.cooc_users = self.cooc_items.T.tocsr()
        self.warm_up()

    def _training_order(self, run: Run) -> sp.csr_matrix:
        times = run.split.history_times()
        if times is None:
            raise ConfigError(
                f"{self.path}: {self.model_name} ranks from the order of each history, but the run's data has no "
                "timestamps"
            )
        order = order_positions(sp.csr_matrix(run.split.history()), times.data)
        same = np.array_equal(order.indptr, self.history.indptr) and np.array_equal(order.indices, self.history.indices)
        if not same:
            raise ConfigError(f"{self.path}: the run's training history holds repeated (user, item) entries")
        return order

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, ann: AnnOptions | None = None) -> ServedModel:
        return cls(load_run(run_dir), ann=ann)

    def warm_up(self) -> None:
        """One scoring call, so the first request does not pay for lazy initialisation."""
        rows = self.histories([0 if self.n_users else -1], [np.zeros(0, np.int64)], [np.zeros(0, bool)])
        self.recommend(rows, k=1)

    # ------------------------------------------------------------------ ids
    def user_index(self, raw: str) -> int:
        """Training index of a raw user id, -1 when the model did not train on that user."""
        return self.user_lookup.get(raw, -1)

    def item_index(self, raw: str, where: str = "item") -> int:
        idx = self.item_lookup.get(raw)
        if idx is None:
            raise UnknownIdError(
                f"unknown {where} id {raw!r}: not one of the {self.n_items} items of model {self.version}"
            )
        return idx

    def item_indices(self, raws: Sequence[str], where: str = "item") -> np.ndarray:
        """Indices of raw item ids; `UnknownIdError` names the first unknown one and its position."""
        out = np.empty(len(raws), dtype=np.int64)
        for pos, raw in enumerate(raws):
            idx = self.item_lookup.get(raw)
            if idx is None:
                raise UnknownIdError(
                    f"{where}[{pos}]: unknown item id {raw!r}: not one of the {self.n_items} items of model "
                    f"{self.version}"
                )
            out[pos] = idx
        return out

    def liked_mask(self, ratings: Sequence[float | None]) -> np.ndarray:
        """Which interactions count as liked: no rating, or a rating at least the run's `min_rating`."""
        r = np.array([np.nan if x is None else x for x in ratings], dtype=np.float64)
        if self.min_rating is None:
            return np.ones(len(r), dtype=bool)
        return np.isnan(r) | (r >= self.min_rating)

    def known_item_mask(self, raws: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the raw ids this model knows, and which raw ids those are (events may predate it)."""
        idx = np.array([self.item_lookup.get(r, -1) for r in raws], dtype=np.int64)
        return idx[idx >= 0], idx >= 0

    # ------------------------------------------------------------------ histories
    def histories(
        self, train_users: Sequence[int], extra_items: Sequence[np.ndarray], extra_liked: Sequence[np.ndarray]
    ) -> Histories:
        """One row per user: the training row (when the user has one) plus extra items (events, ad-hoc).

        An item is liked if any of its interactions is (a later low rating does not undo a training positive).
        """
        tu = np.asarray(train_users, dtype=np.int64)
        empty = np.zeros(0, dtype=np.int32)
        seen_rows: list[np.ndarray] = []
        liked_rows: list[np.ndarray] = []
        for u, items, ok in zip(tu, extra_items, extra_liked, strict=True):
            train = self.history.indices[self.history.indptr[u] : self.history.indptr[u + 1]] if u >= 0 else empty
            items = np.asarray(items, dtype=np.int32)
            if len(items) == 0:  # the common case: the training row as it is (sorted, unique)
                seen_rows.append(train)
                liked_rows.append(train)
                continue
            seen_rows.append(np.union1d(train, items).astype(np.int32, copy=False))
            liked_rows.append(np.union1d(train, items[np.asarray(ok, dtype=bool)]).astype(np.int32, copy=False))
        liked = self._csr(liked_rows)
        order = self._order(tu, extra_items, extra_liked, liked) if self.sequential else None
        return Histories(liked, self._csr(seen_rows), tu, order)

    def _order(
        self, tu: np.ndarray, extra_items: Sequence[np.ndarray], extra_liked: Sequence[np.ndarray], liked: sp.csr_matrix
    ) -> sp.csr_matrix:
        """`liked` with, as values, each item's position in time order: the training row's order, then the liked
        extra items in the order given (an item met again takes its latest place)."""
        assert self.order is not None
        out = liked.copy()
        for r, (u, items, ok) in enumerate(zip(tu, extra_items, extra_liked, strict=True)):
            lo, hi = (self.order.indptr[u], self.order.indptr[u + 1]) if u >= 0 else (0, 0)
            train = self.order.indices[lo:hi][np.argsort(self.order.data[lo:hi], kind="stable")]
            extra = np.asarray(items, dtype=np.int64)[np.asarray(ok, dtype=bool)]
            walk = np.concatenate([train, extra])
            latest = {int(item): pos for pos, item in enumerate(walk)}  # the latest place of each item
            row = out.indices[out.indptr[r] : out.indptr[r + 1]]
            out.data[out.indptr[r] : out.indptr[r + 1]] = [latest[int(i)] + 1 for i in row]
        return out

    def _csr(self, rows: list[np.ndarray]) -> sp.csr_matrix:
        """Binary CSR rows from sorted, unique column indices."""
        indptr = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum([len(r) for r in rows], out=indptr[1:])
        indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
        m = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(rows), self.n_items))
        m.has_sorted_indices = True
        return m

    # ------------------------------------------------------------------ scoring
    def scores(self, rows: Histories) -> tuple[np.ndarray, list[str]]:
        """Scores of all items for each row, and how each row was scored (strategy)."""
        n = rows.liked.shape[0]
        if self.sequential or self.uses_history:
            # a model that scores from the history has nothing to go on without one: popularity, and say so
            s = np.empty((n, self.n_items), dtype=np.float32)
            if self.sequential:  # a sequential model reads the order of the whole history
                assert rows.order is not None
                has = np.diff(rows.order.indptr) > 0
            else:
                has = np.diff(rows.liked.indptr) > 0
            s[~has] = self.popularity
            strategy = ["popularity" if not h else "history" if u >= 0 else "fold-in"
                        for h, u in zip(has, rows.train_users, strict=True)]  # fmt: skip
            if has.any():
                some = np.flatnonzero(has)
                if self.sequential:
                    assert rows.order is not None
                    s[some] = self.model.score(self._timed(rows.order[some]), np.arange(len(some)))
                else:
                    s[some] = self.model.score(rows.liked[some], np.arange(len(some)))
            return s, strategy
        s = np.empty((n, self.n_items), dtype=np.float32)
        known = (rows.train_users >= 0) & (rows.train_users < self.model.n_users_)
        if known.any():
            s[known] = self.model.score(self.history, rows.train_users[known])
        s[~known] = self.popularity
        strategy = ["user-vector" if k else "popularity" for k in known]
        fold = np.flatnonzero(~known & (np.diff(rows.liked.indptr) > 0))
        fold_in = getattr(self.model, "fold_in", None)
        if fold.size and fold_in is not None and self.item_vectors is not None:  # the history's vector, the items'
            s[fold] = fold_in(rows.liked[fold]) @ self.item_vectors.T
            for r in fold:
                strategy[r] = "fold-in"
        return s, strategy

    def _timed(self, order: sp.csr_matrix) -> Interactions:
        """Rows whose values are positions in time order, as the interactions a sequential model scores."""
        ids = IdMap(np.arange(order.shape[0]), "user"), IdMap(np.arange(self.n_items), "item")
        return Interactions(order, *ids, timestamps=order.data.astype(np.int64))

    def recommend(
        self, rows: Histories, k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Top-k item indices and scores per row (item -1 where fewer than k are left), and the strategy."""
        if self.ann_index is not None:
            return self._recommend_ann(rows, min(k, self.n_items), exclude_seen)
        return self._recommend_exact(rows, k, exclude_seen)

    def _recommend_exact(self, rows: Histories, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
        n = rows.liked.shape[0]
        if n > SCORE_CHUNK:  # one scoring call per chunk: other threads (the event loop) run in between
            parts = [
                self._recommend_exact(rows.slice(start, start + SCORE_CHUNK), k, exclude_seen)
                for start in range(0, n, SCORE_CHUNK)
            ]
            strategy = [how for p in parts for how in p[2]]
            return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts]), strategy
        s, strategy = self.scores(rows)
        s = np.nan_to_num(np.array(s, dtype=np.float32), nan=-np.inf)
        if exclude_seen:
            s[entry_positions(rows.seen)] = -np.inf
        items, values = top_k(s, min(k, self.n_items))
        items = np.where(np.isfinite(values), items, -1)
        return items, values, strategy

    def _recommend_ann(self, rows: Histories, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Known users through the HNSW graph: search k + (seen items), drop the seen, rank by exact score.

        Rows left with fewer than k items, and rows whose search would cover over half the catalogue (where
        the graph is slower than scoring every item), are scored exactly. Searches are batched by width
        (powers of two).
        """
        assert self.factors is not None and self.ann_index is not None
        n, tu = len(rows.train_users), rows.train_users
        items = np.full((n, k), -1, dtype=np.int64)
        values = np.full((n, k), -np.inf, dtype=np.float32)
        width = k + (np.diff(rows.seen.indptr) if exclude_seen else np.zeros(n, dtype=np.int64))
        use = (tu >= 0) & (tu < len(self.factors.user)) & (width <= self.n_items // 2)
        bucket = np.minimum(2 ** np.ceil(np.log2(np.maximum(width, 1))).astype(np.int64), self.n_items)
        done = np.zeros(n, dtype=bool)
        for w in np.unique(bucket[use]):
            r = np.flatnonzero(use & (bucket == w))
            labels = self.ann_index.search(self.factors.user[tu[r]], int(w))
            keep = labels >= 0
            if exclude_seen:
                keep &= ~seen_mask(rows.seen[r], labels)
            cand, enough = first_kept(labels, keep, k)
            r, cand = r[enough], cand[enough]
            scores = np.einsum("nd,nkd->nk", self.factors.user[tu[r]], self.factors.item[cand])
            items[r], values[r] = rank(cand, scores)
            done[r] = True
        strategy = ["user-vector"] * n
        rest = np.flatnonzero(~done)
        if rest.size:
            sub = Histories(rows.liked[rest], rows.seen[rest], tu[rest])
            items[rest], values[rest], exact = self._recommend_exact(sub, k, exclude_seen)
            for row, how in zip(rest.tolist(), exact, strict=True):
                strategy[row] = how
        return items, values, strategy

    def popular(self, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k items with most interactions in the training data, and their share of the largest count."""
        items, values = top_k(self.popularity[None], min(k, self.n_items))
        return items[0], values[0]

    def similar(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray, str]:
        """Items most like `item`: the model's scores for a one-item history, the inner product of item vectors
        (with approximate search), or co-occurrence cosine."""
        if self.factors is not None and self.ann_index is not None:
            return self._similar_vectors(item, k)
        if self.uses_history:
            one = sp.csr_matrix((np.ones(1, np.float32), ([0], [item])), shape=(1, self.n_items))
            s = np.array(self.model.score(self._timed(one) if self.sequential else one, [0]), dtype=np.float32)
            strategy = "model"
        else:
            s = np.asarray((self.cooc_items[item] @ self.cooc_users).toarray(), dtype=np.float32)
            strategy = "co-occurrence"
        s[0, item] = -np.inf
        items, values = top_k(s, min(k, self.n_items))
        items = np.where(np.isfinite(values), items, -1)
        return items[0], values[0], strategy

    def _similar_vectors(self, item: int, k: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The items of largest ⟨query vector of `item`, item vector⟩: from the graph, exactly when it finds too few."""
        assert self.factors is not None and self.ann_index is not None
        q = self.factors.query[item]
        if k + 1 <= self.n_items // 2:
            labels = self.ann_index.search(q[None], k + 1)
            cand, enough = first_kept(labels, (labels >= 0) & (labels != item), k)
            if enough[0]:
                items, values = rank(cand, (self.factors.item[cand[0]] @ q)[None])
                return items[0], values[0], "item-vector"
        s = (self.factors.item @ q)[None]
        s[0, item] = -np.inf
        items, values = top_k(s, min(k, self.n_items))
        items = np.where(np.isfinite(values), items, -1)
        return items[0], values[0], "item-vector"

    def explain(self, rows: Histories, item: int, n: int = 3) -> tuple[float, list[tuple[int, float]]]:
        """The score of `item` for the one row, and the history items that add most to it."""
        if not self.uses_history:
            raise ConfigError(
                f"{self.model_name} keeps one vector per user and cannot explain a score by history items"
            )
        s, _ = self.scores(rows)
        return float(s[0, item]), self.model.explain(rows.liked, 0, item, n=n)
