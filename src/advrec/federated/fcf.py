"""Federated implicit ALS (FCF: Ammad-ud-din et al., "Federated Collaborative Filtering for Privacy-Preserving
Personalized Recommendation System", 2019): the item factors Q live on the server, each user's factor x_u only on
the device that holds the user's history.

A round: the server sends Q; a client solves each of its users' factors exactly against Q (the iALS user step,
`advrec.models.ials.solve_users`: x_u never leaves the client), then returns the step of its users' share of the
iALS objective of `advrec.models.IALS`,

    L(Q) = Σ_u L_u(Q) + λ ‖Q‖²,   L_u(Q) = Σ_i c_ui (p_ui − x_u·q_i)²,   c_ui = 1 + α r_ui,

whose gradient for one user is rank one and dense (every item's row moves, so the update's support does not
reveal which items the user has):

    ∇_Q L_u = 2 w_u x_uᵀ,   w_ui = s_ui + [i ∈ I_u] ((c_ui − 1) s_ui − c_ui),   s_ui = x_u·q_i.

User u's update is Δ_u = −lr (∇_Q L_u + 2λ Q / N) (N: the federation's users; the regulariser is shared out
equally), clipped to `clip` in Frobenius norm when set (user-level clipping for differential privacy: ‖Δ_u‖ comes
from ‖w_u‖, ‖x_u‖ and w_u·s_u without forming Δ_u). A client answers Q + mean_u Δ_u with its user count as the
weight, so the weighted mean over clients (FedAvg) is Q + mean over all sampled users; a server optimiser
(FedAdam, FedYogi) reads the difference as a pseudo-gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from advrec.data.splits import EvalSet
from advrec.errors import ConfigError, DataError
from advrec.evaluation.evaluate import evaluate_scores
from advrec.models.ials import SparseRows, block_width, objective, solve_users

# scores held at once while computing a client's update: blocks of users of at most this many users × items floats
BLOCK_FLOATS = 1 << 22


@dataclass(frozen=True)
class FCFSettings:
    """The client's side of a round: the iALS weights, the step and the clipping (None: no clipping)."""

    alpha: float = 10.0
    reg: float = 10.0
    lr: float = 1.0
    clip: float | None = None
    n_users: int = 1  # users of the whole federation (the regulariser's share of each user is λ / n_users)

    def __post_init__(self) -> None:
        for name in ("alpha", "reg", "lr"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be a finite non-negative number, got {getattr(self, name)}")
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"clip must be positive (or None), got {self.clip}")
        if self.n_users < 1:
            raise ConfigError(f"n_users must be at least 1, got {self.n_users}")


def user_factors(rows: sp.csr_matrix, Q: np.ndarray, settings: FCFSettings) -> torch.Tensor:
    """Each row's exact iALS user factor against the item factors `Q` (float64)."""
    if rows.shape[1] != Q.shape[0]:
        raise DataError(f"the rows have {rows.shape[1]} items but the item factors {Q.shape[0]}")
    Y = torch.from_numpy(np.ascontiguousarray(Q, dtype=np.float64))
    reg = np.full(rows.shape[0], settings.reg, dtype=np.float64)
    return solve_users(rows.tocsr(), Y, settings.alpha, reg)


def client_step(rows: sp.csr_matrix, Q: np.ndarray, settings: FCFSettings) -> tuple[np.ndarray, dict[str, float]]:
    """The sum over `rows`' users of their (clipped) updates Δ_u, and statistics: users, the mean norm of Δ_u
    before clipping, the share of users clipped. Rows without interactions take no part."""
    rows = sp.csr_matrix(rows, dtype=np.float64)
    active = np.flatnonzero(np.diff(rows.indptr) > 0)
    rows = rows[active]
    Qt = torch.from_numpy(np.ascontiguousarray(Q, dtype=np.float64))
    X = user_factors(rows, Q, settings)
    total = torch.zeros_like(Qt)
    shared = 2 * settings.reg / settings.n_users  # each user's share of the regulariser's gradient, times Q
    norms, clipped = [], 0
    step = max(1, BLOCK_FLOATS // max(Q.shape[0], 1))
    for lo in range(0, rows.shape[0], step):
        block, x = rows[lo : lo + step], X[lo : lo + step]
        S = x @ Qt.T  # (b, items) scores
        W = S.clone()
        r, c = (
            torch.from_numpy(np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))),
            torch.from_numpy(block.indices.astype(np.int64)),
        )
        conf = 1 + settings.alpha * torch.from_numpy(block.data)
        s_obs = S[r, c]
        W[r, c] = s_obs + (conf - 1) * s_obs - conf
        # ‖2 w xᵀ + shared Q‖² = 4‖w‖²‖x‖² + 4 shared w·(Q x) + shared²‖Q‖², with Q x = s
        sq = 4 * (W * W).sum(1) * (x * x).sum(1) + 4 * shared * (W * S).sum(1) + shared**2 * float((Qt * Qt).sum())
        norm = settings.lr * torch.sqrt(torch.clamp(sq, min=0.0))
        scale = torch.ones_like(norm)
        if settings.clip is not None:
            scale = torch.clamp(settings.clip / torch.clamp(norm, min=1e-12), max=1.0)
            clipped += int((norm > settings.clip).sum())
        norms.append(norm)
        # Σ_u −lr·scale_u (2 w_u x_uᵀ + shared Q)
        total -= settings.lr * (2 * (W * scale[:, None]).T @ x + shared * float(scale.sum()) * Qt)
    n = rows.shape[0]
    stats = {
        "users": float(n),
        "update_norm": float(torch.cat(norms).mean()) if n else 0.0,
        "clipped_share": clipped / n if n else 0.0,
    }
    return total.numpy(), stats


def ials_loss(rows: sp.csr_matrix, Q: np.ndarray, settings: FCFSettings) -> float:
    """This client's share of the iALS objective at its users' exact factors: Σ_u (L_u(Q) + λ‖x_u‖²) plus
    λ‖Q‖²·(users / n_users) (`advrec.models.ials.objective`, which never forms the users × items scores). Its
    gradient in Q is the sum of the users' unclipped updates over −lr (the factors are optimal, so their own change
    does not count)."""
    rows = sp.csr_matrix(rows, dtype=np.float64)
    rows = rows[np.flatnonzero(np.diff(rows.indptr) > 0)]  # as in `client_step`: rows without interactions are out
    Y = torch.from_numpy(np.ascontiguousarray(Q, dtype=np.float64))
    reg = np.full(rows.shape[0], settings.reg, dtype=np.float64)
    sparse = SparseRows.build(rows, settings.alpha, reg, Y.dtype, Y.device, block_width(Y.shape[1], Y.dtype, Y.device))
    item_reg = torch.full((Q.shape[0],), settings.reg * rows.shape[0] / settings.n_users, dtype=Y.dtype)
    return objective(sparse, user_factors(rows, Q, settings), Y, item_reg)


def client_metrics(es: EvalSet, Q: np.ndarray, settings: FCFSettings, ks: tuple[int, ...] = (10, 20)) -> dict:
    """Full-ranking metrics of the evaluation set's users, each scored on the client from its own history
    (x_u solved against Q, the history's items excluded): per-metric sums and the user count."""

    def score(history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        X = user_factors(history[users], Q, settings).numpy()
        return X @ Q.T

    return metric_sums(es, score, ks)


def metric_sums(es: EvalSet, score: Callable[[sp.csr_matrix, np.ndarray], np.ndarray], ks: tuple[int, ...]) -> dict:
    """Per-metric sums of NDCG and Recall at `ks` over the evaluation set's users scored by `score(history,
    users)`, and the user count."""
    if len(es.users) == 0:
        return {"users": 0.0}
    report = evaluate_scores(score, es, ks=ks, metrics=("ndcg", "recall"), progress=False)
    n = float(report.summary["n_users"])
    out = {"users": n}
    for k in ks:
        for m in ("ndcg", "recall"):
            out[f"{m}@{k}"] = float(report.summary[f"{m}@{k}"]) * n  # sums: the server divides by all users
    return out
