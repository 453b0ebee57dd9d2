"""Synthetic user behaviour: a profile generator, its realism measures, and training-data augmentation.

`ProfileGenerator` wraps a fitted generative recommender that gives, for a history, a distribution over
items: softmax(scores / `temperature`) — MultVAE's scores are logits (temperature 1); a user-based CFGAN's
are reconstructed 0/1 entries, so its default temperature is 0.1 (an output of 1 is e^10 times likelier
than one of 0). `sample(n_users)` draws new users, each with a profile size drawn from the real size
distribution and distinct items drawn from that distribution. Latent codes for MultVAE:
`prior="standard"`, z ~ N(0, I) (no real user involved); `prior="posterior"`, z ~ q(z | x_r) of a random
real user r (the aggregate posterior: closer to the real item popularity, but each synthetic user derives
from one real user). CFGAN always starts from a real user's generated vector, whose items are then drawn
again, so the synthetic user is near that real user (a privacy matter; see the privacy audits).
An item–item model (`EASE`) grows each synthetic user in `rounds` rounds: the first draws one seed item from
the item prior (`item_log_prior_`, log item frequencies, set by `fit`), every later one draws the next share
of the profile from softmax(scores of the profile so far / `temperature`), the items already drawn excluded.
`complete(history, users)` gives the generator's item probabilities for known users.
`realism(real, synthetic)` reports the Kolmogorov–Smirnov distance between the profile sizes and between
the item popularity of two datasets.

`augment(train, generator, strategy)`:
- "densify": the sparsest `share` of users get the items the generator gives probability ≥ `threshold`
  (at most `max_add` each, never an item they already have);
- "users": `n_users` synthetic users are appended (raw ids "synthetic-0", ...).
The result is an `Interactions` any model trains on unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
import torch
from scipy import stats

from advrec.data.interactions import IdMap, Interactions
from advrec.errors import ConfigError, NotFittedError
from advrec.models import CFGAN, EASE, MultVAE, Recommender
from advrec.models.mult_vae import VAE
from advrec.models.torch_base import seed_of

STRATEGIES = ("densify", "users")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _draw_rows(log_probs: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """One binary row per line of `log_probs`, with `sizes[r]` (≥ 0) distinct items drawn ∝ exp(log_probs[r])
    without replacement (Gumbel top-k)."""
    n, m = log_probs.shape
    sizes = np.clip(sizes, 0, m)
    keys = log_probs + rng.gumbel(size=log_probs.shape)
    kmax = int(sizes.max()) if n else 0
    part = np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax] if 0 < kmax < m else np.tile(np.arange(m), (n, 1))
    order = np.take_along_axis(part, np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1), axis=1)
    mask = np.arange(order.shape[1])[None, :] < sizes[:, None]
    rows = np.repeat(np.arange(n), sizes)
    cols = order[mask]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, m))


DEFAULT_TEMPERATURE = {MultVAE: 1.0, CFGAN: 0.1, EASE: 0.05}
"""softmax temperature of each generator's scores (EASE: chosen by TSTR NDCG@10 on ml-1m validation users)."""


class ProfileGenerator:
    """Synthetic users and completions from a fitted MultVAE, user-based CFGAN or EASE; see the module docstring."""

    def __init__(
        self,
        model: Recommender,
        prior: str = "standard",
        temperature: float | None = None,
        batch_size: int = 1024,
        rounds: int = 20,
    ) -> None:
        if not isinstance(model, MultVAE | CFGAN | EASE) or (isinstance(model, CFGAN) and model.mode != "user"):
            raise ConfigError("ProfileGenerator needs a MultVAE, a user-based CFGAN (mode='user') or an EASE")
        if prior not in ("standard", "posterior"):
            raise ConfigError(f"prior must be 'standard' or 'posterior', not {prior!r}")
        if rounds < 1:
            raise ConfigError(f"rounds must be ≥ 1, got {rounds}")
        self.model = model
        self.prior = prior
        self.temperature = temperature if temperature is not None else DEFAULT_TEMPERATURE[type(model)]
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.batch_size = batch_size
        self.rounds = rounds

    def fit(self, X: Interactions | sp.spmatrix, valid: Any = None) -> ProfileGenerator:
        """Fits the wrapped model unless it is fitted already, and records the real profile sizes."""
        m = X.matrix if isinstance(X, Interactions) else sp.csr_matrix(X)
        if not self.model.is_fitted:
            self.model.fit(X, valid=valid)
        sizes = np.diff(m.indptr)
        self.sizes_ = sizes[sizes > 0]
        counts = np.bincount(m.indices, minlength=m.shape[1]).astype(np.float64)
        self.item_log_prior_ = np.log((counts + 1.0) / (counts.sum() + m.shape[1]))  # add-one smoothed
        # a conditional generator, or the posterior prior, needs real histories to start from
        self._history = m if isinstance(self.model, CFGAN) or self.prior == "posterior" else None
        return self

    def _check(self) -> None:
        if not hasattr(self, "sizes_"):
            raise NotFittedError("this ProfileGenerator is not fitted yet: call fit(X) first")

    def _log_probs(self, scores: np.ndarray) -> np.ndarray:
        """Row-normalised log-probabilities over items: log softmax(scores / temperature)."""
        return _log_softmax(np.asarray(scores, dtype=np.float64) / self.temperature)

    def complete(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """The generator's item probabilities for `users` given their history, (len(users), n_items)."""
        self._check()
        out = [
            np.exp(self._log_probs(self.model.score(history, users[s : s + self.batch_size])))
            for s in range(0, len(users), self.batch_size)
        ]
        return np.vstack(out) if out else np.zeros((0, self.model.n_items_), np.float32)

    def _logits(self, n: int, rng: np.random.Generator) -> np.ndarray:
        model = self.model
        eps = rng.standard_normal((n, model.latent)).astype(np.float32) if isinstance(model, MultVAE) else None
        if isinstance(model, MultVAE) and self.prior == "standard":
            net = cast(VAE, model.network_)
            with torch.no_grad():
                net.eval()
                return net.decode(torch.from_numpy(eps).to(model.device_)).cpu().numpy()
        assert self._history is not None
        users = rng.choice(np.flatnonzero(np.diff(self._history.indptr) > 0), size=n)
        if isinstance(model, MultVAE):
            net = cast(VAE, model.network_)
            x = torch.from_numpy(self._history[users].toarray().astype(np.float32)).to(model.device_)
            x[x > 0] = 1.0
            with torch.no_grad():
                net.eval()
                mu, logvar = net.encode(x)
                z = mu + torch.exp(0.5 * logvar) * torch.from_numpy(eps).to(model.device_)
                return net.decode(z).cpu().numpy()
        return model.score(self._history, users)

    def _grow_rows(self, sizes: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
        """Rows grown in `rounds` rounds from an item–item model: the prior first, then the profile's scores."""
        B = cast(EASE, self.model).weights_
        n, m = len(sizes), B.shape[0]
        sizes = np.clip(sizes, 1, m)
        step = np.ones(n, dtype=np.int64)  # one seed item from the prior, then the rest in rounds − 1 rounds
        later = np.maximum(1, np.ceil((sizes - 1) / max(1, self.rounds - 1))).astype(np.int64)
        rows = sp.csr_matrix((n, m), dtype=np.float32)
        logits = np.broadcast_to(self.item_log_prior_, (n, m))
        scores = np.zeros((n, m), dtype=np.float32)
        while (take := np.minimum(step, sizes - np.diff(rows.indptr))).any():
            step = later
            new = _draw_rows(np.where(rows.toarray() > 0, -np.inf, logits), take, rng)
            rows = (rows + new).tocsr()
            scores += np.asarray(new @ B)
            logits = self._log_probs(scores)
        return rows

    def sample(self, n_users: int, random_state: int | np.random.Generator | None = 0) -> sp.csr_matrix:
        """`n_users` synthetic binary interaction rows over the model's items."""
        self._check()
        if n_users < 0:
            raise ConfigError(f"n_users must be ≥ 0, got {n_users}")
        rng = np.random.default_rng(seed_of(random_state))
        parts = []
        for start in range(0, n_users, self.batch_size):
            n = min(self.batch_size, n_users - start)
            sizes = rng.choice(self.sizes_, size=n)
            if isinstance(self.model, EASE):
                parts.append(self._grow_rows(sizes, rng))
            else:
                parts.append(_draw_rows(self._log_probs(self._logits(n, rng)), sizes, rng))
        return sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, self.model.n_items_), dtype=np.float32)


@dataclass
class Realism:
    size_ks: float
    popularity_ks: float

    def as_dict(self) -> dict[str, float]:
        return {"size_ks": self.size_ks, "popularity_ks": self.popularity_ks}


def realism(real: sp.spmatrix, synthetic: sp.spmatrix) -> Realism:
    """KS distances between two datasets: profile sizes, and item popularity (each item's share of users);
    users without interactions are left out of both."""
    real, synthetic = sp.csr_matrix(real), sp.csr_matrix(synthetic)
    real, synthetic = real[np.diff(real.indptr) > 0], synthetic[np.diff(synthetic.indptr) > 0]
    size_ks = stats.ks_2samp(np.diff(real.indptr), np.diff(synthetic.indptr)).statistic
    pop_r = np.bincount(real.indices, minlength=real.shape[1]) / max(real.shape[0], 1)
    pop_s = np.bincount(synthetic.indices, minlength=synthetic.shape[1]) / max(synthetic.shape[0], 1)
    return Realism(float(size_ks), float(stats.ks_2samp(pop_r, pop_s).statistic))


def augment(
    train: Interactions,
    generator: ProfileGenerator,
    strategy: str = "densify",
    share: float = 0.2,
    threshold: float = 0.01,
    max_add: int = 10,
    n_users: int = 0,
    random_state: int | np.random.Generator | None = 0,
) -> Interactions:
    """`train` plus generated interactions (see the module docstring); added entries have value 1."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    generator._check()
    X = train.matrix
    if strategy == "densify":
        if not 0 < share <= 1 or max_add < 1 or not threshold > 0:
            raise ConfigError(f"need 0 < share ≤ 1, max_add ≥ 1, threshold > 0; got {share}, {max_add}, {threshold}")
        degree = np.diff(X.indptr)
        active = np.flatnonzero(degree > 0)
        sparse_users = active[np.argsort(degree[active], kind="stable")[: max(1, round(share * len(active)))]]
        probs = generator.complete(X, sparse_users)
        probs[(X[sparse_users] > 0).toarray()] = 0.0
        k = min(max_add, probs.shape[1])
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        keep = np.take_along_axis(probs, top, axis=1) >= threshold
        rows = np.repeat(sparse_users, k).reshape(-1, k)[keep]
        added = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, top[keep])), shape=X.shape)
        out = train.with_matrix(X + added)
        out.meta = {
            **train.meta,
            "augmented": {"strategy": strategy, "users": len(sparse_users), "added": int(added.nnz)},
        }
        return out
    synth = generator.sample(n_users, random_state)
    users = IdMap(np.concatenate([train.users.ids.astype(str), [f"synthetic-{i}" for i in range(n_users)]]), "user")
    out = Interactions(
        sp.vstack([X, synth]).tocsr(), users, train.items, item_features=train.item_features, name=train.name
    )
    out.meta = {**train.meta, "augmented": {"strategy": strategy, "users": n_users, "added": int(synth.nnz)}}
    return out
