"""`MultVAE` (Liang et al., WWW 2018): a variational autoencoder with a multinomial likelihood."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from advrec import distributed
from advrec.errors import ConfigError
from advrec.models.params import Dimension, Float, Int, Interval, Options, declare
from advrec.models.torch_base import Phase, TorchRecommender, TrainingPlugin, csr_to_sparse_torch, csr_to_torch


def sparse_input_layer(x: torch.Tensor, layer: nn.Linear, dropout: float, training: bool) -> torch.Tensor:
    """`layer` applied to the L2-normalised sparse CSR rows `x` after input dropout `dropout` (while `training`):
    dropout acts on the stored entries only (dropping a zero changes nothing), then a sparse × dense product; the
    function of the dense path layer(dropout(normalize(x))), at O(nnz · out_features)."""
    counts = x.crow_indices().diff()
    rows = torch.repeat_interleave(torch.arange(len(counts), device=x.device), counts)
    values = x.values()
    norm = torch.zeros(len(counts), device=x.device).index_add_(0, rows, values * values).sqrt_()
    values = F.dropout(values / norm.clamp_min_(1e-12)[rows], dropout, training)  # F.normalize's eps
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        normed = torch.sparse_csr_tensor(
            x.crow_indices(), x.col_indices(), values, size=x.shape, check_invariants=False
        )
    return torch.sparse.mm(normed, layer.weight.t()) + layer.bias


class VAE(nn.Module):
    """I → hidden → (μ, log σ²) of size latent → hidden → I, tanh activations.

    With `group_prior` (the share of each of G user groups), the decoder also reads the user's group: a learned
    vector per group is added to its hidden layer; group −1 (unknown) gets the prior-weighted mean vector.
    With `eraser` ((latent + 1) × latent), the latent mean is mapped by the affine eraser μ ↦ μ·E[:-1] + E[-1]
    (see `set_eraser`).
    """

    def __init__(
        self,
        n_items: int,
        hidden: int,
        latent: int,
        dropout: float,
        noise: float = 1.0,
        group_prior: np.ndarray | None = None,
        eraser: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.noise = noise
        self.encoder = nn.Linear(n_items, hidden)
        self.to_latent = nn.Linear(hidden, 2 * latent)
        self.from_latent = nn.Linear(latent, hidden)
        self.decoder = nn.Linear(hidden, n_items)
        self.latent = latent
        self.drop = nn.Dropout(dropout)
        for layer in (self.encoder, self.to_latent, self.from_latent, self.decoder):
            nn.init.xavier_normal_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)
        self.group: nn.Embedding | None = None
        if group_prior is not None:
            self.group = nn.Embedding(len(group_prior), hidden)
            nn.init.normal_(self.group.weight, std=0.001)
            self.group_prior: torch.Tensor
            self.register_buffer("group_prior", torch.as_tensor(np.asarray(group_prior), dtype=torch.float32))
        self.eraser: torch.Tensor | None
        self.register_buffer("eraser", None)
        if eraser is not None:
            self.set_eraser(eraser)

    def set_eraser(self, eraser: np.ndarray) -> None:
        """Maps every latent mean through the affine map μ ↦ μ·E[:-1] + E[-1] (e.g. a LEACE concept eraser)."""
        e = np.asarray(eraser, dtype=np.float32)
        if e.shape != (self.latent + 1, self.latent):
            raise ConfigError(
                f"the eraser of a {self.latent}-dim code is {self.latent + 1}×{self.latent}, not {e.shape}"
            )
        device = self.encoder.weight.device
        self.register_buffer("eraser", torch.from_numpy(e).to(device))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of the rows of `x`, a dense or a sparse CSR users×items tensor."""
        h = torch.tanh(
            self._encode_sparse(x) if x.layout == torch.sparse_csr else self.encoder(self.drop(F.normalize(x, dim=1)))
        )
        mu, logvar = self.to_latent(h).chunk(2, dim=1)
        if self.eraser is not None:
            mu = mu @ self.eraser[:-1] + self.eraser[-1]
        return mu, logvar

    def _encode_sparse(self, x: torch.Tensor) -> torch.Tensor:
        return sparse_input_layer(x, self.encoder, self.drop.p, self.drop.training)

    def decode(self, z: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        h = self.from_latent(z)
        if self.group is not None:
            if groups is None:
                groups = torch.full((z.shape[0],), -1, dtype=torch.long, device=z.device)
            mean = self.group_prior @ self.group.weight
            known = groups >= 0
            h = h + torch.where(known[:, None], self.group(groups.clamp(min=0)), mean)
        return self.decoder(torch.tanh(h))

    def forward(
        self, x: torch.Tensor, groups: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        if self.training:
            z = mu + self.noise * torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z, groups), mu, logvar


def sparse_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """−Σ_i x_ui · log softmax(logits_u)_i per row, read at the stored entries of the sparse CSR rows `x`."""
    counts = x.crow_indices().diff()
    rows = torch.repeat_interleave(torch.arange(len(counts), device=x.device), counts)
    picked = F.log_softmax(logits, dim=1)[rows, x.col_indices()] * x.values()
    return -torch.zeros(len(counts), device=logits.device, dtype=logits.dtype).index_add(0, rows, picked)


class MultVAE(TorchRecommender):
    """Mult-VAE^PR: loss = −Σ x·log softmax(f(z)) + β·KL(q(z|x) ‖ N(0, I)), β annealed linearly to `beta_cap`.

    β grows by 1/`anneal_steps` per update until it reaches `beta_cap`. `noise` scales the sampling noise of
    the reparameterisation z = μ + noise·ε·σ (1 = the paper's VAE; RecBole uses 0.01). `sampling`: each epoch
    visits every user once ("uniform") or draws users in proportion to their activity ("activity", the
    weighting of RecBole's interaction batches). Input dropout `dropout` on the
    L2-normalised history; scores are the decoder's logits at z = μ. Scores come from the history alone,
    so users unseen in training are scored from their fold-in items.

    Defaults (600-32, dropout 0.8) were chosen on ml-1m validation NDCG@10 (RecBole's protocol); the
    paper's 600-200 with dropout 0.5 overfits there (test NDCG@10 0.233 vs 0.249, seed 2020). Pass
    `latent=200, dropout=0.5` for the paper's setting.

    A decoder conditioned on a user attribute: set `user_groups_` to (n_users,) int group labels (−1 unknown)
    before `fit`; the decoder then reads each user's group (see `VAE`), so the latent code need not carry it
    (`advrec.privacy.adversarial` uses this to keep a protected attribute out of the code).

    A batch is an array of user indices; `batch_loss` gives one loss per user, so a plug-in (DP-SGD's per-user
    clipping) can reduce them. Batches may be empty (Poisson sampling); the epoch loss is the mean over users seen.
    """

    _parameter_constraints = declare(
        TorchRecommender._parameter_constraints,
        hidden=[Interval(int, 1, None, closed="left")],
        latent=[Interval(int, 1, None, closed="left")],
        dropout=[Interval(float, 0, 1, closed="left")],
        beta_cap=[Interval(float, 0, None, closed="left")],
        anneal_steps=[Interval(int, 0, None, closed="left")],
        weight_decay=[Interval(float, 0, None, closed="left")],
        noise=[Interval(float, 0, None, closed="left")],
        sampling=[Options(("uniform", "activity"))],
    )
    _search_space: ClassVar[dict[str, Dimension]] = {
        "latent": Int(16, 256, log=True),
        "dropout": Float(0.2, 0.8),
        "beta_cap": Float(0.0, 1.0),
        "lr": Float(1e-4, 1e-2, log=True),
    }
    user_groups_: np.ndarray | None = None
    latent_eraser_: np.ndarray | None = None

    def __init__(
        self,
        hidden: int = 600,
        latent: int = 32,
        dropout: float = 0.8,
        beta_cap: float = 0.2,
        anneal_steps: int = 20000,
        weight_decay: float = 0.0,
        noise: float = 1.0,
        sampling: str = "uniform",
        epochs: int = 200,
        batch_size: int = 500,
        lr: float = 1e-3,
        patience: int = 10,
        eval_every: int = 1,
        device: str = "auto",
        random_state: int | None = 2020,
        verbose: bool = False,
        valid_metric: str = "ndcg@10",
    ) -> None:
        super().__init__(epochs, batch_size, lr, patience, eval_every, device, random_state, verbose, valid_metric)
        self.hidden = hidden
        self.latent = latent
        self.dropout = dropout
        self.beta_cap = beta_cap
        self.anneal_steps = anneal_steps
        self.weight_decay = weight_decay
        self.noise = noise
        self.sampling = sampling

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        groups = self.user_groups_
        prior = None
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (n_users,) or groups.dtype.kind not in "iu" or groups.min(initial=0) < -1:
                raise ConfigError(f"user_groups_ must be {n_users} integer labels ≥ −1 (−1 = unknown)")
            counts = np.bincount(groups[groups >= 0], minlength=int(groups.max(initial=0)) + 1)
            if counts.sum() == 0:
                raise ConfigError("user_groups_ gives no user a known group")
            prior = counts / counts.sum()
        return VAE(
            n_items, self.hidden, self.latent, self.dropout, self.noise, group_prior=prior, eraser=self.latent_eraser_
        )

    def _groups(self, users: np.ndarray) -> torch.Tensor | None:
        """The decoder's group labels of `users` (None without a conditioned decoder; −1 beyond the table)."""
        groups = self.user_groups_
        if groups is None:
            return None
        g = np.full(len(users), -1, dtype=np.int64)
        inside = users < len(groups)
        g[inside] = np.asarray(groups)[users[inside]]
        return torch.from_numpy(g).to(self.device_)

    def _prepare(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        self.updates_ = self.training.step

    def _make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        return torch.optim.Adam(phase.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def batches(self, X: sp.csr_matrix, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """This epoch's users (each once, or drawn in proportion to their activity) in batches of indices."""
        if self.sampling == "uniform":
            return self.user_batches(X, rng)
        degree = np.diff(X.indptr)
        users = np.flatnonzero(degree > 0)
        # as many draws as users (this rank's share of them), each ∝ its number of interactions
        n = len(users) if not self.training.distributed else -(-len(users) // distributed.world_size())
        order = rng.choice(users, size=n, p=degree[users] / degree.sum())
        size = self.local_batch_size
        return (order[start : start + size] for start in range(0, len(order), size))

    def batch_loss(self, batch: np.ndarray) -> torch.Tensor:
        """Per user of the batch: −Σ x·log softmax(f(z)) + β·KL, β at its annealed value for this update."""
        X = self.training.X
        # a plug-in that reduces per-user losses (DP-SGD's clipping) reads per-user gradients from hooks on the
        # first layer, which see a dense input only: its batches are densified; otherwise the rows stay sparse
        dense = any(type(p).reduce is not TrainingPlugin.reduce for p in self.training.plugins)
        ub = np.sort(batch)
        x = (csr_to_torch if dense else csr_to_sparse_torch)(X[ub], self.device_)
        logits, mu, logvar = self.network_(x, self._groups(ub))
        nll = -(F.log_softmax(logits, dim=1) * x).sum(1) if dense else sparse_nll(logits, x)
        kl = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1).sum(1)
        beta = min(self.beta_cap, self.training.step / max(1, self.anneal_steps))
        self.updates_ = self.training.step + 1
        return nll + beta * kl

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        h = self._binary_rows(history, users)
        with torch.no_grad():
            logits, _, _ = self.network_(csr_to_sparse_torch(h, self.device_), self._groups(np.asarray(users)))
        return logits.cpu().numpy()
