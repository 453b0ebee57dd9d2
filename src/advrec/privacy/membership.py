"""Membership inference against recommenders (Zhang et al., CCS 2021).

The attacker holds a shadow dataset from the same population as the target's users, disjoint from them. It
trains a shadow recommender of the target's kind on part of it (shadow members) and keeps the rest out
(shadow non-members). Each user is described by the difference between the centroid of the vectors of the
items they interacted with and the centroid of the vectors of the items recommended to them; item vectors come
from a truncated SVD of the attacker's own data. An MLP learns member vs non-member on the shadow users and is
applied to the target's members and non-members; the attack's strength is its ROC AUC there.

What the attacker sees of a user (`query`):
- "popular" (the paper's protocol): the system serves users it was trained on (members) with their
  personalized list from their whole history, and users it does not know (non-members) with the most
  popular items. The gap comes from the serving rule as much as from the model.
- "fold_in": every user, member or not, is served the model's list from a random `query_share` of their
  items. A member's remaining (hidden) items were in the training data, so a model that memorizes recommends
  them more: this measures the model's own leakage (what DP-SGD bounds) and is the default. Beside the paper's
  feature the attacker, who knows the target's record, adds the same centroid gap for the hidden items, the
  share of hidden items among the top 10, 20 and k recommendations, and the mean rank of the hidden items among
  all candidates (`hidden_rank`, the recommender's analogue of a loss-threshold attack).

`membership_audit` runs the whole protocol on one dataset: users split into target-in, target-out,
shadow-in, shadow-out (disjoint, at random); `make_model()` builds a fresh recommender (fitted by `fit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions, as_csr
from advrec.errors import ConfigError, DataError, NotFittedError
from advrec.evaluation.report import pyplot, save_figure
from advrec.models.base import Recommender
from advrec.models.torch_base import seed_of

QUERIES = ("fold_in", "popular")


def binary(m: Interactions | sp.spmatrix) -> sp.csr_matrix:
    """A users×items matrix as 0/1 float32 CSR."""
    out = as_csr(m, "interactions").astype(np.float32)
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out


def sample_rows(m: sp.csr_matrix, share: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Each row keeps a random ceil(share·degree) of its entries (at least one when it has any)."""
    m = sp.csr_matrix(m)
    deg = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), deg)
    order = np.lexsort((rng.random(m.nnz), rows))
    rank = np.empty(m.nnz, dtype=np.int64)
    rank[order] = np.arange(m.nnz) - np.repeat(m.indptr[:-1], deg)
    keep = rank < np.ceil(share * deg[rows] - 1e-9)
    return sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape, dtype=np.float32)


def item_vectors(m: sp.spmatrix, dim: int = 32, random_state: Any = 0) -> np.ndarray:
    """Item vectors from a truncated SVD of a 0/1 users×items matrix: V·√Σ, (n_items, dim)."""
    from scipy.sparse.linalg import svds

    m = binary(m)
    k = max(1, min(dim, min(m.shape) - 1))
    v0 = np.random.default_rng(seed_of(random_state)).standard_normal(min(m.shape))
    _, s, vt = svds(m.astype(np.float64), k=k, v0=v0)
    return (vt.T * np.sqrt(s)).astype(np.float32)


def centroid_gap(history: sp.csr_matrix, recommended: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Zhang et al.'s user feature: centroid of interacted-item vectors minus centroid of recommended-item vectors."""
    deg = np.maximum(np.diff(history.indptr), 1)[:, None]
    interacted = np.asarray(history @ vectors) / deg
    valid = recommended >= 0
    rec_vec = np.where(valid[..., None], vectors[np.maximum(recommended, 0)], 0.0)
    rec_centroid = rec_vec.sum(1) / np.maximum(valid.sum(1), 1)[:, None]
    return (interacted - rec_centroid).astype(np.float32)


def popular_lists(popularity: np.ndarray, history: sp.csr_matrix, k: int) -> np.ndarray:
    """The k most popular items each user has not seen, (n_users, k)."""
    order = np.argsort(-popularity, kind="stable")[: k + int(np.diff(history.indptr).max(initial=0))]
    seen = history[:, order].toarray() > 0
    rank = np.where(seen, np.iinfo(np.int64).max, np.arange(len(order))[None, :])
    pick = np.argsort(rank, axis=1, kind="stable")[:, :k]
    return order[pick]


def hidden_rank(model: Recommender, query: sp.csr_matrix, hidden: sp.csr_matrix, batch_size: int = 1024) -> np.ndarray:
    """Per user, the mean share of candidate items (all but the query's) that `model`, given the query items,
    scores above each hidden item: 0 when every hidden item tops the ranking, about 0.5 when they rank like the
    rest (a loss-style signal: a model that memorized its members ranks their withheld items higher)."""
    out = np.full(query.shape[0], 0.5)
    for start in range(0, query.shape[0], batch_size):
        users = np.arange(start, min(start + batch_size, query.shape[0]))
        S = np.asarray(model.score(query, users), dtype=np.float64)
        S[query[users].toarray() > 0] = -np.inf  # the query's items are not candidates
        position = np.argsort(np.argsort(-S, axis=1, kind="stable"), axis=1)  # 0 = top-scored candidate
        n_cand = np.isfinite(S).sum(1)
        block = hidden[users]
        rows = np.repeat(np.arange(len(users)), np.diff(block.indptr))
        if not len(rows):
            continue
        share = position[rows, block.indices] / np.maximum(n_cand[rows] - 1, 1)
        sums = np.bincount(rows, weights=share, minlength=len(users))
        counts = np.bincount(rows, minlength=len(users))
        has = counts > 0
        out[users[has]] = sums[has] / counts[has]
    return out


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


@dataclass
class MembershipReport:
    """Outcome of one membership-inference audit."""

    auc: float
    accuracy: float
    shadow_auc: float
    member_scores: np.ndarray
    non_member_scores: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "accuracy": self.accuracy,
            "shadow_auc": self.shadow_auc,
            "members": len(self.member_scores),
            "non_members": len(self.non_member_scores),
            "mean_member_score": float(np.mean(self.member_scores)) if len(self.member_scores) else float("nan"),
            "mean_non_member_score": float(np.mean(self.non_member_scores))
            if len(self.non_member_scores)
            else float("nan"),
            **self.params,
        }

    def plot(self, path: str | Path, title: str = "Membership inference") -> Path:
        """Histograms of the attack's membership scores for members and non-members."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        bins = np.linspace(0, 1, 31).tolist()
        ax.hist(self.member_scores, bins=bins, alpha=0.6, label="members", density=True)
        ax.hist(self.non_member_scores, bins=bins, alpha=0.6, label="non-members", density=True)
        ax.set_xlabel("attack score P(member)")
        ax.set_ylabel("density")
        ax.set_title(f"{title} (AUC {self.auc:.3f})")
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)


class MembershipAttack:
    """The shadow-model attack; see the module docstring. `fit` on a shadow model, `score` any model's users."""

    def __init__(
        self,
        k: int = 100,
        query: str = "fold_in",
        query_share: float = 0.5,
        item_dim: int = 32,
        hidden: tuple[int, ...] = (64, 32),
        random_state: Any = 0,
    ) -> None:
        if query not in QUERIES:
            raise ConfigError(f"query must be one of {', '.join(QUERIES)}, not {query!r}")
        if not 0 < query_share < 1:
            raise ConfigError(f"query_share must lie in (0, 1), got {query_share}")
        if k < 1 or item_dim < 1:
            raise ConfigError(f"k and item_dim must be ≥ 1, got {k}, {item_dim}")
        self.k = k
        self.query = query
        self.query_share = query_share
        self.item_dim = item_dim
        self.hidden = hidden
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("k", "query", "query_share", "item_dim", "hidden", "random_state")}

    def features(
        self,
        model: Recommender,
        users: sp.spmatrix,
        known: np.ndarray | None = None,
        popularity: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Feature rows of the users whose histories are the rows of `users`, as recommended by `model`.

        Under query="popular", `known` marks the users the system serves personally (its training users) and
        `popularity` is the item popularity it serves the others from."""
        if not hasattr(self, "vectors_"):
            raise NotFittedError("this MembershipAttack is not fitted yet: call fit(...) first")
        h = binary(users)
        rng = rng or np.random.default_rng(seed_of(self.random_state))
        k = min(self.k, h.shape[1])
        if self.query == "fold_in":
            q = sample_rows(h, self.query_share, rng)
            hidden = (h - q).tocsr()
            hidden.eliminate_zeros()
            recs, _ = model.recommend(q, np.arange(h.shape[0]), k=k)
            rows = np.repeat(np.arange(h.shape[0]), recs.shape[1])
            hit = np.asarray(hidden[rows, np.maximum(recs.ravel(), 0)]).reshape(recs.shape) * (recs >= 0)
            n_hidden = np.diff(hidden.indptr)
            hit_rates = [hit[:, :c].sum(1) / np.maximum(np.minimum(n_hidden, c), 1) for c in sorted({10, 20, k})]
            gap_all = centroid_gap(h, recs, self.vectors_)
            gap_hidden = centroid_gap(hidden, recs, self.vectors_)
            rank = hidden_rank(model, q, hidden)
            return np.hstack([gap_all, gap_hidden, np.column_stack([*hit_rates, rank]).astype(np.float32)])
        else:
            if known is None or popularity is None:
                raise ConfigError("query='popular' needs `known` (users served personally) and `popularity`")
            recs = popular_lists(popularity, h, k)
            idx = np.flatnonzero(known)
            if len(idx):
                recs[idx], _ = model.recommend(h[idx], np.arange(len(idx)), k=k)
        return centroid_gap(h, recs, self.vectors_)

    def fit(
        self,
        shadow_model: Recommender,
        shadow_in: sp.spmatrix,
        shadow_out: sp.spmatrix,
        attacker_data: sp.spmatrix | None = None,
    ) -> MembershipAttack:
        """Learns item vectors from the attacker's data (default: shadow in + out) and the MLP on the shadow
        model's members (`shadow_in`, the shadow model's training rows) and non-members (`shadow_out`)."""
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        s_in, s_out = binary(shadow_in), binary(shadow_out)
        if s_in.shape[0] == 0 or s_out.shape[0] == 0:
            raise DataError("the shadow members and non-members must both be non-empty")
        seed = seed_of(self.random_state)
        rng = np.random.default_rng(seed)
        data = attacker_data if attacker_data is not None else sp.vstack([s_in, s_out]).tocsr()
        self.vectors_ = item_vectors(data, self.item_dim, seed)
        popularity = np.asarray(s_in.sum(0)).ravel()
        H = sp.vstack([s_in, s_out]).tocsr()
        known = np.r_[np.ones(s_in.shape[0], bool), np.zeros(s_out.shape[0], bool)]
        F = self.features(shadow_model, H, known, popularity, rng)
        clf = make_pipeline(
            StandardScaler(),
            MLPClassifier(self.hidden, alpha=1e-3, max_iter=400, random_state=seed % (2**31)),
        )
        self.classifier_ = clf.fit(F, known.astype(int))
        self.shadow_auc_ = _auc(known.astype(int), self.classifier_.predict_proba(F)[:, 1])
        return self

    def score(
        self,
        model: Recommender,
        users: sp.spmatrix,
        known: np.ndarray | None = None,
        popularity: np.ndarray | None = None,
    ) -> np.ndarray:
        """Membership probability of each row of `users` under `model`."""
        F = self.features(model, users, known, popularity)
        return self.classifier_.predict_proba(F)[:, 1]

    def audit(self, model: Recommender, members: sp.spmatrix, non_members: sp.spmatrix) -> MembershipReport:
        """AUC and accuracy (threshold 0.5) on the target model's members (its training rows) vs non-members."""
        m_in, m_out = binary(members), binary(non_members)
        H = sp.vstack([m_in, m_out]).tocsr()
        known = np.r_[np.ones(m_in.shape[0], bool), np.zeros(m_out.shape[0], bool)]
        popularity = np.asarray(m_in.sum(0)).ravel()
        scores = self.score(model, H, known, popularity)
        labels = known.astype(int)
        return MembershipReport(
            auc=_auc(labels, scores),
            accuracy=float(((scores >= 0.5) == known).mean()),
            shadow_auc=self.shadow_auc_,
            member_scores=scores[known],
            non_member_scores=scores[~known],
            params=self.get_params(),
        )


@dataclass
class UserPartition:
    """Disjoint user sets of the membership protocol (0/1 rows over one item catalogue)."""

    target_in: sp.csr_matrix
    target_out: sp.csr_matrix
    shadow_in: sp.csr_matrix
    shadow_out: sp.csr_matrix


def partition_users(
    X: Interactions | sp.spmatrix,
    shares: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25),
    random_state: Any = 0,
) -> UserPartition:
    """Users with interactions split at random into target-in, target-out, shadow-in, shadow-out."""
    m = binary(X)
    if len(shares) != 4 or min(shares) <= 0 or sum(shares) > 1 + 1e-9:
        raise ConfigError(f"shares must be 4 positive numbers summing to at most 1, got {shares}")
    users = np.flatnonzero(np.diff(m.indptr) > 0)
    users = np.random.default_rng(seed_of(random_state)).permutation(users)
    cuts = np.floor(np.cumsum(shares) * len(users)).astype(int)
    parts = np.split(users, cuts[:3])
    parts[3] = users[cuts[2] : cuts[3]]
    if any(len(p) == 0 for p in parts):
        raise DataError(f"{len(users)} users are too few for four non-empty user sets")
    return UserPartition(*(m[np.sort(p)] for p in parts))


def membership_audit(
    make_model: Callable[[], Recommender],
    X: Interactions | sp.spmatrix,
    fit: Callable[[Recommender, sp.csr_matrix], Recommender] | None = None,
    attack: MembershipAttack | None = None,
    partition: UserPartition | None = None,
    random_state: Any = 0,
) -> MembershipReport:
    """The whole protocol: partition users, train target and shadow models, fit the attack, audit the target."""
    parts = partition or partition_users(X, random_state=random_state)
    fit = fit or (lambda model, m: model.fit(m))
    target = fit(make_model(), parts.target_in)
    shadow = fit(make_model(), parts.shadow_in)
    attack = attack or MembershipAttack(random_state=random_state)
    attack.fit(shadow, parts.shadow_in, parts.shadow_out)
    return attack.audit(target, parts.target_in, parts.target_out)
