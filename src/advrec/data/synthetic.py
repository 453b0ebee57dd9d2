"""Synthetic implicit feedback at any size, with power-law item popularity and user activity fitted to real data.

The model: user u interacts with d_u distinct items, d_u drawn from a power law P(d) ∝ d^-user_exponent and
scaled so that the d_u add up to `nnz` exactly; each user draws its items without replacement (successive
sampling) from item weights that follow a power law of exponent `item_exponent`, so item degrees follow it too.
With `clusters=k`, users and items fall into k groups and a user draws from its own group's items with
probability `cluster_affinity`, from all items otherwise. The matrix is built chunk by chunk of users straight
into preallocated CSR arrays, so the peak memory stays within twice the output's.

Randomness: one stream for the per-user and per-item quantities, and one stream per block of `RNG_BLOCK`
users for their draws, so a seed gives one matrix whatever `chunk_users` is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import zeta

from advrec.data.interactions import IdMap, Interactions, as_csr
from advrec.errors import ConfigError, DataError

__all__ = [
    "RNG_BLOCK",
    "PowerLaw",
    "PowerLawFit",
    "fit_discrete_power_law",
    "fit_power_law",
    "like",
    "synthetic_interactions",
]

RNG_BLOCK = 4096
"""Users per random stream: the draws of users in one block come from that block's stream."""

_ROUNDS = 12  # rounds of rejection before the exact fallback for users still short of distinct items
_FALLBACK_CELLS = 1 << 20  # users × items cells of one batch of the exact fallback
_TIME_SPAN = (1_230_768_000, 1_293_840_000)  # 2009-01-01 .. 2011-01-01, seconds


# ---------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class PowerLaw:
    """A discrete power law P(k) ∝ k^-exponent for k ≥ xmin, fitted to `n_tail` of `n` values.

    `ks` is the Kolmogorov–Smirnov distance between the tail's empirical and fitted distributions.
    """

    exponent: float
    xmin: int
    ks: float
    n_tail: int
    n: int


@dataclass(frozen=True)
class PowerLawFit:
    """Power laws of item popularity (interactions per item) and user activity (interactions per user)."""

    items: PowerLaw
    users: PowerLaw

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"items": asdict(self.items), "users": asdict(self.users)}


def fit_discrete_power_law(values: np.ndarray, min_tail: int = 100, max_candidates: int = 60) -> PowerLaw:
    """Clauset, Shalizi & Newman (2009): the discrete maximum-likelihood exponent for each candidate xmin, and
    the xmin whose tail is closest to its fit in KS distance. Zeros are ignored; tails have ≥ `min_tail` values.
    """
    k = np.asarray(values)
    k = k[k > 0]
    if len(k) < min_tail:
        raise DataError(f"a power-law fit needs at least {min_tail} positive values, got {len(k)}")
    vals, counts = np.unique(k, return_counts=True)
    tail_n = np.cumsum(counts[::-1])[::-1]
    tail_log = np.cumsum((np.log(vals) * counts)[::-1])[::-1]
    ok = np.flatnonzero(tail_n >= min_tail)
    cand = np.unique(ok[np.round(np.linspace(0, len(ok) - 1, min(len(ok), max_candidates))).astype(int)])
    best: PowerLaw | None = None
    for j in cand:
        xmin, n = float(vals[j]), int(tail_n[j])
        nll = lambda a, xmin=xmin, n=n, s=tail_log[j]: n * np.log(zeta(a, xmin)) + a * s  # noqa: E731
        alpha = float(minimize_scalar(nll, bounds=(1.0001, 10.0), method="bounded", options={"xatol": 1e-6}).x)
        fitted = zeta(alpha, vals[j:]) / zeta(alpha, xmin)
        ks = float(np.abs(tail_n[j:] / n - fitted).max())
        if best is None or ks < best.ks:
            best = PowerLaw(exponent=alpha, xmin=int(xmin), ks=ks, n_tail=n, n=len(k))
    assert best is not None
    return best


def fit_power_law(X: Interactions | sp.spmatrix, min_tail: int = 100) -> PowerLawFit:
    """Power laws of item popularity and user activity of a dataset (see `fit_discrete_power_law`)."""
    m = as_csr(X)
    items = np.bincount(m.indices, minlength=m.shape[1])
    return PowerLawFit(
        items=fit_discrete_power_law(items, min_tail), users=fit_discrete_power_law(np.diff(m.indptr), min_tail)
    )


# ---------------------------------------------------------------------- the generator's parts
def _entropy(random_state: int | np.random.Generator | None) -> int:
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63))
    if random_state is None:
        return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    return int(random_state)


def _stream(entropy: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=key)))


def _pareto(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """`n` draws of the continuous power law of density ∝ x^-exponent on [1, ∞)."""
    return (1.0 - rng.random(n)) ** (-1.0 / (exponent - 1.0))


def _scaled(x: np.ndarray, total: int, lo: float, hi: float) -> np.ndarray:
    """clip(s·x, lo, hi), with the scale s that makes it add up to `total` (bisection on log s)."""
    a, b = np.log(total / x.sum()) - 1.0, np.log(total / x.sum()) + 1.0
    while np.clip(np.exp(b) * x, lo, hi).sum() < total:
        a, b = b, b + 2.0
    while np.clip(np.exp(a) * x, lo, hi).sum() > total:
        a, b = a - 2.0, a
    for _ in range(60):
        mid = (a + b) / 2
        a, b = (mid, b) if np.clip(np.exp(mid) * x, lo, hi).sum() < total else (a, mid)
    return np.clip(np.exp(b) * x, lo, hi)


def _integer_parts(v: np.ndarray, total: int, hi: int) -> np.ndarray:
    """Integers near `v` (floor, plus one for the largest remainders below `hi`) that add up to `total`."""
    d = np.floor(v).astype(np.int64)
    rest = total - int(d.sum())
    if rest > 0:
        frac = np.where(d < hi, v - d, -1.0)
        d[np.argpartition(-frac, rest - 1)[:rest]] += 1
    elif rest < 0:
        frac = np.where(d > 1, v - d, 2.0)
        d[np.argpartition(frac, -rest - 1)[:-rest]] -= 1
    return d


def alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of the distribution `p` (Vose's sweep, vectorised with prefix sums): item j is drawn
    by taking a column c uniformly, then c with probability prob[c], else alias[c].

    Light columns (n·p < 1) are filled, in order, by the heavy whose cumulative surplus first exceeds the
    deficit before them; a heavy then keeps what is left (≤ 1) and takes the next heavy as its alias.
    """
    n = len(p)
    q = p * (n / p.sum())
    prob, alias = np.ones(n), np.arange(n)
    light, heavy = np.flatnonzero(q < 1.0), np.flatnonzero(q >= 1.0)
    if not len(light) or not len(heavy):
        return prob, alias
    deficit = np.cumsum(1.0 - q[light])  # D_1..D_a
    surplus = np.cumsum(q[heavy] - 1.0)  # S_1..S_b
    before = np.r_[0.0, deficit[:-1]]  # D_{i-1}
    prob[light] = q[light]
    alias[light] = heavy[np.minimum(np.searchsorted(surplus, before, side="right"), len(heavy) - 1)]
    served = np.searchsorted(before, surplus, side="left")  # lights served up to each heavy's turn
    prob[heavy] = np.clip(1.0 + surplus - np.r_[0.0, deficit][served], 0.0, 1.0)
    alias[heavy] = np.r_[heavy[1:], heavy[-1]]
    prob[heavy[-1]] = 1.0
    return prob, alias


@dataclass
class _Sampler:
    """Draws items for users by alias tables (O(1) a draw): from the global item distribution `p`, or with
    probability `affinity` from the items of the user's group."""

    p: np.ndarray
    user_group: np.ndarray | None = None
    item_group: np.ndarray | None = None
    affinity: float = 0.0

    def __post_init__(self) -> None:
        self.prob, self.alias = alias_table(self.p)
        if self.item_group is not None:
            k = int(self.item_group.max()) + 1
            self.order = np.argsort(self.item_group, kind="stable")  # items by group: group g is one segment
            self.sizes = np.bincount(self.item_group, minlength=k)
            self.gfirst = np.r_[0, np.cumsum(self.sizes)[:-1]]
            self.gmass = np.bincount(self.item_group, weights=self.p, minlength=k)
            self.gprob, self.galias = np.ones(len(self.p)), np.arange(len(self.p))
            for g in np.flatnonzero(self.gmass > 0):  # one table per group (k groups, not items)
                seg = slice(self.gfirst[g], self.gfirst[g] + self.sizes[g])
                self.gprob[seg], alias = alias_table(self.p[self.order[seg]])
                self.galias[seg] = alias + self.gfirst[g]

    def draw(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        column, coin = rng.random(len(users)), rng.random(len(users))
        c = np.minimum((column * len(self.p)).astype(np.int64), len(self.p) - 1)
        items = np.where(coin < self.prob[c], c, self.alias[c])
        if self.user_group is None:
            return items
        g = self.user_group[users]
        own = (rng.random(len(users)) < self.affinity) & (self.gmass[g] > 0)
        g = g[own]
        c = self.gfirst[g] + np.minimum((column[own] * self.sizes[g]).astype(np.int64), self.sizes[g] - 1)
        items[own] = self.order[np.where(coin[own] < self.gprob[c], c, self.galias[c])]
        return items

    def weights(self, users: np.ndarray) -> np.ndarray:
        """Each user's draw probabilities over all items (users × items)."""
        w = np.broadcast_to(self.p, (len(users), len(self.p)))
        if self.user_group is None or self.item_group is None:
            return w
        g = self.user_group[users]
        mass = np.where(self.gmass[g] > 0, self.gmass[g], 1.0)
        own = np.where(self.item_group[None, :] == g[:, None], self.p[None, :] / mass[:, None], 0.0)
        a = np.where(self.gmass[g] > 0, self.affinity, 0.0)[:, None]
        return (1.0 - a) * w + a * own


def _exact_fill(
    sampler: _Sampler, rng: np.random.Generator, users: np.ndarray, need: np.ndarray, keys: np.ndarray, first: int
) -> np.ndarray:
    """Keys of the `need` further distinct items of each (chunk-local) user by exact successive sampling
    (Efraimidis–Spirakis: the smallest Exp(1)/w among the items not yet drawn), in batches of `_FALLBACK_CELLS`
    cells. `keys` are those drawn so far; `first` is the chunk's first user."""
    n_items = len(sampler.p)
    rows = max(1, _FALLBACK_CELLS // n_items)
    found = []
    for s in range(0, len(users), rows):
        us, ns = users[s : s + rows], need[s : s + rows]
        # items of weight 0 (outside the group at affinity 1) come last in random order, items drawn already never
        score = rng.exponential(size=(len(us), n_items)) / np.maximum(sampler.weights(us + first), 1e-200)
        have = keys[np.isin(keys // n_items, us)]
        score[np.searchsorted(us, have // n_items), have % n_items] = np.nan  # argsort puts NaN last
        order = np.argsort(score, axis=1, kind="stable")
        take = np.arange(n_items)[None, :] < ns[:, None]
        found.append(us[:, None].repeat(n_items, 1)[take] * n_items + order[take])
    return np.concatenate(found)


def _merge(keys: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted union of the sorted unique `keys` and `new`, the keys that were not in `keys` yet); the new keys
    are inserted, not re-sorted with the old."""
    new = np.sort(new)
    new = new[np.r_[True, new[1:] != new[:-1]]] if len(new) else new
    if len(keys):
        at = np.minimum(np.searchsorted(keys, new), len(keys) - 1)
        new = new[keys[at] != new]
    return np.insert(keys, np.searchsorted(keys, new), new), new


def _chunk_keys(sampler: _Sampler, deg: np.ndarray, first: int, entropy: int, n_items: int) -> np.ndarray:
    """Sorted keys (local user · n_items + item) of the users `first`, `first + 1`, ... with degrees `deg`.

    `first` is a multiple of `RNG_BLOCK`; each block of users draws from its own stream, so the result does
    not depend on how users are grouped into chunks.
    """
    n = len(deg)
    edges: np.ndarray = np.r_[np.arange(0, n, RNG_BLOCK), n]
    rngs = [_stream(entropy, 1, (first + s) // RNG_BLOCK) for s in edges[:-1]]
    keys = np.empty(0, dtype=np.int64)
    need = deg.astype(np.int64)
    for _ in range(_ROUNDS):
        if not need.any():
            return keys
        rows: np.ndarray = np.repeat(np.arange(n), need)
        cut = np.searchsorted(rows, edges)
        items = np.concatenate(
            [sampler.draw(rng, rows[a:b] + first) for rng, a, b in zip(rngs, cut[:-1], cut[1:], strict=True)]
        )
        keys, added = _merge(keys, rows * n_items + items)
        need -= np.bincount(added // n_items, minlength=n)
    short = np.flatnonzero(need)
    for k, rng in enumerate(rngs):
        users = short[(short >= edges[k]) & (short < edges[k + 1])]
        if len(users):
            found = _exact_fill(sampler, rng, users, need[users], keys, first)
            keys, _ = _merge(keys, found)
    return keys


def _check(n_users: int, n_items: int, nnz: int, item_exponent: float, user_exponent: float, cap: int) -> None:
    if n_users < 1 or n_items < 1:
        raise ConfigError(f"n_users and n_items must be ≥ 1, got {n_users} and {n_items}")
    if not 1 <= cap <= n_items:
        raise ConfigError(f"max_user_degree must lie in [1, n_items] = [1, {n_items}], got {cap}")
    if not n_users <= nnz <= n_users * cap:
        raise ConfigError(
            f"nnz must lie in [n_users, n_users·max_user_degree] = [{n_users}, {n_users * cap}], got {nnz}"
        )
    for key, value in (("item_exponent", item_exponent), ("user_exponent", user_exponent)):
        if not value > 1:
            raise ConfigError(f"{key} must be > 1 (a power law k^-exponent), got {value}")


def _timestamps(
    indptr: np.ndarray, first: int, last: int, windows: tuple[np.ndarray, np.ndarray], entropy: int
) -> np.ndarray:
    """Times of users first..last-1's entries: uniform within each user's active window, from the blocks' streams
    (drawn after their items, so the matrix does not depend on `timestamps`)."""
    start, length = windows
    out = []
    for s in range(first, last, RNG_BLOCK):
        e = min(s + RNG_BLOCK, last)
        rng = _stream(entropy, 2, s // RNG_BLOCK)
        deg = np.diff(indptr[s : e + 1])
        users = np.repeat(np.arange(s, e), deg)
        out.append(start[users] + np.floor(rng.random(len(users)) * length[users]).astype(np.int64))
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def synthetic_interactions(
    n_users: int,
    n_items: int,
    nnz: int,
    item_exponent: float = 2.5,
    user_exponent: float = 2.7,
    clusters: int | None = None,
    cluster_affinity: float = 0.8,
    timestamps: bool = False,
    max_user_degree: int | None = None,
    random_state: int | np.random.Generator | None = 0,
    chunk_users: int | None = None,
) -> Interactions:
    """Implicit feedback (every value 1) of `n_users` × `n_items` with exactly `nnz` distinct (user, item) pairs.

    User activity follows P(d) ∝ d^-user_exponent (every user has ≥ 1 item, none more than `max_user_degree`,
    default n_items) and item popularity P(k) ∝ k^-item_exponent (the defaults are Gowalla's, see
    `fit_power_law`). `clusters=k` puts users and items in k random groups (column "group" of `user_features`
    and `item_features`); a user draws from its own group's items with probability `cluster_affinity`.
    `timestamps` adds int64 seconds within 2009-2010, uniform within each user's active window. Users are
    generated `chunk_users` at a time (rounded up to a multiple of `RNG_BLOCK`; default: about nnz/64
    interactions a chunk), straight into CSR arrays: the peak memory stays within twice the output.
    """
    cap = n_items if max_user_degree is None else max_user_degree
    _check(n_users, n_items, nnz, item_exponent, user_exponent, cap)
    if clusters is not None and not 1 <= clusters <= n_items:
        raise ConfigError(f"clusters must lie in [1, n_items] = [1, {n_items}] or be None, got {clusters}")
    if not 0 <= cluster_affinity <= 1:
        raise ConfigError(f"cluster_affinity must lie in [0, 1], got {cluster_affinity}")
    entropy = _entropy(random_state)
    rng = _stream(entropy, 0)
    deg = _integer_parts(_scaled(_pareto(rng, n_users, user_exponent), nnz, 1.0, cap), nnz, cap)
    expected = _scaled(_pareto(rng, n_items, item_exponent), nnz, 0.0, n_users)
    p = expected / expected.sum()
    ug, ig = (rng.integers(clusters, size=n_users), rng.integers(clusters, size=n_items)) if clusters else (None, None)
    sampler = _Sampler(p, ug, ig, cluster_affinity)
    idx = np.int32 if max(nnz, n_items) < 2**31 - 1 else np.int64
    indptr = np.zeros(n_users + 1, dtype=idx)
    np.cumsum(deg, out=indptr[1:])
    indices = np.empty(nnz, dtype=idx)
    if chunk_users is None:
        chunk_users = max(1, (max(nnz // 64, 1 << 16) * n_users) // nnz)
    step = -(-max(1, chunk_users) // RNG_BLOCK) * RNG_BLOCK
    for first in range(0, n_users, step):
        last = min(first + step, n_users)
        keys = _chunk_keys(sampler, deg[first:last], first, entropy, n_items)
        indices[indptr[first] : indptr[last]] = keys % n_items
    del deg
    ts = None
    if timestamps:
        t0, t1 = _TIME_SPAN
        length = np.maximum(1, (t1 - t0) * np.minimum(1.0, rng.exponential(0.25, n_users))).astype(np.int64)
        start = t0 + np.floor(rng.random(n_users) * (t1 - t0 - length)).astype(np.int64)
        ts = _timestamps(indptr, 0, n_users, (start, length), entropy)
    matrix = sp.csr_matrix((np.ones(nnz, dtype=np.float32), indices, indptr), shape=(n_users, n_items))
    params = dict(item_exponent=item_exponent, user_exponent=user_exponent, clusters=clusters, max_user_degree=cap)
    params |= dict(
        cluster_affinity=cluster_affinity, random_state=random_state if isinstance(random_state, int) else None
    )
    return Interactions(
        matrix,
        IdMap(np.arange(n_users), name="user"),
        IdMap(np.arange(n_items), name="item"),
        timestamps=ts,
        user_features=None if ug is None else pd.DataFrame({"group": ug}),
        item_features=None if ig is None else pd.DataFrame({"group": ig}),
        name="synthetic",
        meta={"dataset": "synthetic", **params},
    )


def like(
    X: Interactions | sp.spmatrix, n_users: int, n_items: int, nnz: int, random_state: int = 0, **kw: Any
) -> Interactions:
    """Synthetic interactions of the given size with the power laws fitted to `X` (`fit_power_law`); the fit is
    in `meta["fit"]`. `kw` go to `synthetic_interactions` (clusters, timestamps, chunk_users, ...)."""
    fit = fit_power_law(X)
    Y = synthetic_interactions(
        n_users,
        n_items,
        nnz,
        item_exponent=fit.items.exponent,
        user_exponent=fit.users.exponent,
        random_state=random_state,
        **kw,
    )
    Y.meta["fit"] = fit.to_dict()
    return Y
