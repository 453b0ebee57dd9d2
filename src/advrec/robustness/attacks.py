"""Data poisoning (shilling) attacks: fake user profiles that push or nuke target items.

Each fake profile holds the target items, `selected` items chosen by the attack kind, and `filler` items
(random unless the kind says otherwise), rated on the data's own rating scale:

- random:    filler rated ~ N(global mean, global std);
- average:   filler rated ~ N(item mean, item std);
- bandwagon: the `selected` most popular items rated max; filler as random;
- popular:   (AoP) filler drawn from the top `popular_share` most popular items, rated as average;
- segment:   `selected` items of the target's segment (items sharing its genres, else those most co-rated
             with it) rated max; filler rated min;
- gan:       whole profiles sampled from a fitted `ProfileGenerator` (realistic item sets), rated with the
             item means; the targets added.

Push rates the targets max, nuke min. With implicit feedback (all values 1) every rating is 1, so a nuke
attack adds interactions: it only makes sense for models that read ratings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions
from advrec.data.splits import as_generator
from advrec.errors import ConfigError, DataError, UnknownIdError

KINDS = ("random", "average", "bandwagon", "popular", "segment", "gan")
INTENTS = ("push", "nuke")


@dataclass
class ShillingAttack:
    """One attack: `size` fake users as a share of the genuine users, each with `filler` filler items (a count,
    or a share of the items when < 1; None = the median genuine profile length) and the `targets` (item indices)."""

    kind: str
    targets: Sequence[int]
    size: float = 0.03
    filler: float | None = None
    intent: str = "push"
    selected: int = 10
    popular_share: float = 0.1
    generator: Any = None  # a fitted advrec.generative.ProfileGenerator, for kind="gan"
    params: dict[str, Any] = field(default_factory=dict)

    def check(self, n_items: int) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"attack kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.intent not in INTENTS:
            raise ConfigError(f"intent must be 'push' or 'nuke', not {self.intent!r}")
        if not 0 < self.size <= 1:
            raise ConfigError(f"attack size is a share of the genuine users in (0, 1], got {self.size}")
        t = np.asarray(self.targets)
        if t.size == 0:
            raise ConfigError("an attack needs at least one target item")
        if t.dtype.kind not in "iu" or t.min() < 0 or t.max() >= n_items:
            raise UnknownIdError(f"target items must be item indices in [0, {n_items}), got {list(self.targets)}")
        if self.filler is not None and not self.filler > 0:
            raise ConfigError(f"filler must be positive (a count, or a share of the items when < 1), got {self.filler}")
        if self.kind == "gan" and not hasattr(self.generator, "sample"):
            raise ConfigError("a 'gan' attack needs generator=<a fitted ProfileGenerator>")

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "targets": [int(t) for t in self.targets], "size": self.size,
                "filler": self.filler, "intent": self.intent, "selected": self.selected}  # fmt: skip


@dataclass
class _Stats:
    """What an attacker knows of the data: rating scale, global and per-item rating statistics, popularity."""

    lo: float
    hi: float
    mean: float
    std: float
    item_mean: np.ndarray
    item_std: np.ndarray
    popularity: np.ndarray

    @classmethod
    def of(cls, m: sp.csr_matrix) -> _Stats:
        counts = np.bincount(m.indices, minlength=m.shape[1])
        sums = np.bincount(m.indices, weights=m.data, minlength=m.shape[1])
        sq = np.bincount(m.indices, weights=m.data.astype(np.float64) ** 2, minlength=m.shape[1])
        mean, std = float(m.data.mean()), float(m.data.std())
        with np.errstate(invalid="ignore", divide="ignore"):
            im = np.where(counts > 0, sums / counts, mean)
            isd = np.sqrt(np.maximum(np.where(counts > 0, sq / counts, mean**2 + std**2) - im**2, 0.0))
        return cls(float(m.data.min()), float(m.data.max()), mean, std, im, isd, counts)


def _ratings(loc: np.ndarray | float, scale: np.ndarray | float, size: int, s: _Stats, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Normal draws rounded and clipped to the rating scale (all 1 on implicit data)."""
    if s.hi == s.lo:
        return np.full(size, s.hi, dtype=np.float32)
    return np.clip(np.rint(rng.normal(loc, scale, size)), s.lo, s.hi).astype(np.float32)


def _choose(pool: np.ndarray, n_rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """`k` distinct items of `pool` per row, (n_rows, k), by random keys."""
    k = min(k, len(pool))
    if k == 0:
        return np.zeros((n_rows, 0), dtype=np.int64)
    keys = rng.random((n_rows, len(pool)))
    return pool[np.argpartition(keys, k - 1, axis=1)[:, :k]]


def _segment(X: Interactions, m: sp.csr_matrix, targets: np.ndarray, n: int) -> np.ndarray:
    """Up to `n` items of the targets' segment: sharing a genre with them (most popular first), else most co-rated."""
    pop = np.bincount(m.indices, minlength=m.shape[1])
    feats = X.item_features
    if feats is not None and "genres" in feats:
        genres = feats["genres"].fillna("").astype(str).str.split("|")
        wanted = {g for t in targets for g in genres.iloc[int(t)] if g}
        same = np.array([bool(wanted & set(gs)) for gs in genres])
        same[targets] = False
        if same.any():
            cand = np.flatnonzero(same)
            return cand[np.argsort(-pop[cand], kind="stable")[:n]]
    b = m.copy()
    b.data[:] = 1.0
    co = np.asarray(b[:, targets].sum(axis=1)).ravel()  # per user: how many targets they have
    score = np.asarray(b.T @ co).ravel()
    score[targets] = -1
    return np.argsort(-score, kind="stable")[:n]


def fake_profiles(X: Interactions, attack: ShillingAttack, random_state: int | np.random.Generator | None = 0):  # type: ignore[no-untyped-def]
    """The attack's fake rows: a (n_fake, n_items) float32 CSR matrix of ratings."""
    m = X.matrix
    if m.nnz == 0:
        raise DataError("cannot attack an empty dataset")
    attack.check(X.n_items)
    rng = as_generator(random_state)
    s = _Stats.of(m)
    n_fake = max(1, round(attack.size * X.n_users))
    targets = np.unique(np.asarray(attack.targets, dtype=np.int64))
    target_rating = s.hi if attack.intent == "push" else s.lo
    sizes = np.diff(m.indptr)
    if attack.filler is None:
        n_filler = int(np.median(sizes[sizes > 0]))
    else:
        n_filler = round(attack.filler * X.n_items) if attack.filler < 1 else int(attack.filler)
    others = np.setdiff1d(np.arange(X.n_items), targets)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []

    def add(items: np.ndarray, ratings: np.ndarray) -> None:
        rows.append(np.repeat(np.arange(n_fake), items.shape[1]))
        cols.append(items.ravel())
        vals.append(ratings.ravel().astype(np.float32))

    kind = attack.kind
    if kind == "gan":
        sampled = sp.csr_matrix(attack.generator.sample(n_fake, random_state=rng))
        if sampled.shape[1] != X.n_items:
            raise DataError(f"the generator has {sampled.shape[1]} items, the data {X.n_items}")
        coo = sampled.tocoo()
        keep = ~np.isin(coo.col, targets)
        r, c = coo.row[keep], coo.col[keep]
        rows.append(r)
        cols.append(c)
        vals.append(np.clip(np.rint(s.item_mean[c]), s.lo, s.hi).astype(np.float32))
    else:
        chosen = np.zeros(0, dtype=np.int64)
        if kind in ("bandwagon", "segment"):
            if kind == "bandwagon":
                ranked = others[np.argsort(-s.popularity[others], kind="stable")]
                chosen = ranked[: attack.selected]
            else:
                chosen = _segment(X, m, targets, attack.selected)
            sel = np.tile(chosen, (n_fake, 1))
            add(sel, np.full(sel.shape, s.hi))
        pool = np.setdiff1d(others, chosen)
        if kind == "popular":
            top = max(1, round(attack.popular_share * X.n_items))
            pool = pool[np.argsort(-s.popularity[pool], kind="stable")[:top]]
        filler = _choose(pool, n_fake, max(0, n_filler - len(chosen)), rng)
        if kind in ("random", "bandwagon"):
            ratings = _ratings(s.mean, s.std, filler.size, s, rng).reshape(filler.shape)
        elif kind in ("average", "popular"):
            f = filler.ravel()
            ratings = _ratings(s.item_mean[f], np.maximum(s.item_std[f], 1e-6), f.size, s, rng).reshape(filler.shape)
        else:  # segment: filler rated min
            ratings = np.full(filler.shape, s.lo, dtype=np.float32)
        add(filler, ratings)
    tgt = np.tile(targets, (n_fake, 1))
    add(tgt, np.full(tgt.shape, target_rating))
    out = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_fake, X.n_items),
        dtype=np.float32,
    )
    out.sum_duplicates()
    out.data = np.clip(out.data, s.lo, s.hi)
    return out


def inject(
    train: Interactions, attack: ShillingAttack, random_state: int | np.random.Generator | None = 0
) -> tuple[Interactions, np.ndarray]:
    """`train` with the attack's fake users appended (ids "fake-0", ...), and the fake users' indices.

    Genuine users keep their indices, so models with one vector per user score them as before.
    """
    fake = fake_profiles(train, attack, random_state)
    n = train.n_users
    ids = [f"fake-{i}" for i in range(fake.shape[0])]
    if train.users.ids.dtype.kind in "iu":
        start = int(train.users.ids.max()) + 1  # integer ids stay integers: fakes take the next free ids
        ids = list(range(start, start + fake.shape[0]))  # type: ignore[arg-type]
    elif set(ids) & set(train.users.ids.tolist()):
        raise DataError("the data already has user ids of the form 'fake-N'")
    matrix = sp.vstack([train.matrix, fake]).tocsr()
    ts = None
    if train.timestamps is not None:  # fakes act after every genuine interaction
        ts = np.concatenate([train.timestamps, np.full(fake.nnz, int(train.timestamps.max()) + 1, dtype=np.int64)])
    uf = None
    if train.user_features is not None:
        uf = train.user_features.reindex(np.arange(n + fake.shape[0])).reset_index(drop=True)
    poisoned = Interactions(
        matrix, IdMap(np.concatenate([train.users.ids, np.asarray(ids)]) if train.users.ids.dtype.kind in "iu"
                      else [*train.users.ids.tolist(), *ids], "user"),
        train.items, timestamps=ts, item_features=train.item_features, user_features=uf,
        name=train.name, meta={**train.meta, "attack": attack.describe()},
    )  # fmt: skip
    return poisoned, np.arange(n, n + fake.shape[0])


def pick_targets(
    X: Interactions,
    n: int = 5,
    min_count: int = 10,
    max_count: int = 50,
    random_state: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """`n` random target items among those with between `min_count` and `max_count` interactions (the long tail an
    attacker would push)."""
    counts = X.item_counts()
    pool = np.flatnonzero((counts >= min_count) & (counts <= max_count))
    if len(pool) < n:
        raise DataError(f"only {len(pool)} items have {min_count}–{max_count} interactions; {n} targets wanted")
    return np.sort(as_generator(random_state).choice(pool, size=n, replace=False))
