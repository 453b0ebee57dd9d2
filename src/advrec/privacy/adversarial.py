"""Adversarial removal of protected attributes from MultVAE's latent code (Ganhör et al., SIGIR 2022).

Several adversary heads (MLPs of different widths) predict each protected attribute (gender, age group) from the
latent mean μ(x). Their loss reaches the encoder through a gradient-reversal layer of weight λ: the heads learn to
predict the attribute, the encoder learns to make μ useless for that prediction, while the decoder keeps the
recommendation loss. The reversed loss of each user is capped at chance level (log of the number of classes):
plain reversal rewards codes that make the heads confidently wrong, which keeps the attribute readable (a
fresh attacker just flips the sign); capped, the encoder is pushed only towards codes no head can read.
An `AttributeAdversary` is a plug-in of the training loop (its `loss` hook adds the reversed adversary loss), so
the trained model is a plain MultVAE; its record `adversary_` (λ, heads, attributes) says how it was trained.
Protection is judged afterwards by a fresh attacker trained
on μ (`advrec.privacy.attribute`), not by the heads used in training.

Two further tools, usable with or without the adversaries:
- `condition`: the decoder reads the attribute itself (MultVAE's `user_groups_`), so the code need not carry
  it for the recommendations to use it;
- `erase_attribute`: LEACE (Belrose et al., NeurIPS 2023, the `concept-erasure` package) fitted on the
  training users' codes, an affine map after which no linear classifier reads the attribute from μ better than
  a constant; it becomes part of the encoder, and the decoder is then fine-tuned on the erased codes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from advrec.data.interactions import Interactions
from advrec.errors import ConfigError
from advrec.models import MultVAE
from advrec.models.mult_vae import VAE
from advrec.models.torch_base import (
    Phase,
    TorchRecommender,
    TrainingPlugin,
    csr_to_sparse_torch,
    csr_to_torch,
    seed_of,
)


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by −weight on the way back."""
    return _GradientReversal.apply(x, weight)


class AttributeAdversary(TrainingPlugin):
    """A MultVAE training plug-in adding λ-weighted, gradient-reversed adversary losses on μ.

    `labels`: attribute name → (n_users,) int labels over the training rows (−1 = unknown, ignored).
    `n_heads` adversaries per attribute with hidden widths `widths[:n_heads]`, with their own Adam optimizer:
    each batch they take `head_steps` steps on the detached code, then their reversed loss trains the encoder.
    """

    def __init__(
        self,
        labels: dict[str, np.ndarray],
        lam: float = 1.0,
        n_heads: int = 3,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        lr: float = 1e-2,
        head_steps: int = 10,
        random_state: Any = 0,
    ) -> None:
        if not labels:
            raise ConfigError("give at least one protected attribute's labels")
        if lam < 0 or not 1 <= n_heads <= len(widths):
            raise ConfigError(f"need λ ≥ 0 and 1 ≤ n_heads ≤ {len(widths)}, got {lam}, {n_heads}")
        self.labels = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in labels.items()}
        self.lam = lam
        self.n_heads = n_heads
        self.widths = widths
        self.lr = lr
        self.head_steps = head_steps
        self.random_state = random_state
        self.heads: nn.ModuleDict | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.last_loss = float("nan")

    def _build(self, latent: int, device: torch.device) -> None:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed_of(self.random_state))
        heads = nn.ModuleDict()
        for name, y in self.labels.items():
            n_classes = int(y.max()) + 1
            for j in range(self.n_heads):
                w = self.widths[j]
                heads[f"{name}_{j}"] = nn.Sequential(nn.Linear(latent, w), nn.ReLU(), nn.Linear(w, n_classes))
        torch.random.set_rng_state(gen_state)
        self.heads = heads.to(device)
        self.optimizer = torch.optim.Adam(self.heads.parameters(), lr=self.lr)

    def _losses(self, mu: torch.Tensor, users: torch.Tensor, ceiling: bool = False) -> torch.Tensor:
        """Mean cross-entropy of every head; with `ceiling`, each user's loss is capped at chance level
        log(n_classes), so the encoder gains nothing from codes that make the heads confidently wrong."""
        assert self.heads is not None
        total = torch.zeros((), device=mu.device)
        for name, y_all in self.labels.items():
            y = y_all[users].to(mu.device)
            known = y >= 0
            if not bool(known.any()):
                continue
            for j in range(self.n_heads):
                logits = self.heads[f"{name}_{j}"](mu[known])
                ce = F.cross_entropy(logits, y[known], reduction="none")
                if ceiling:
                    ce = torch.clamp(ce, max=math.log(logits.shape[1]))
                total = total + ce.mean() / self.n_heads
        return total

    def loss(self, model: Any, batch: np.ndarray, loss: torch.Tensor) -> torch.Tensor:
        if self.heads is None:
            self._build(model.latent, model.device_)
        assert self.heads is not None and self.optimizer is not None
        net = model.network_
        ub = np.sort(batch)
        users = torch.from_numpy(ub)
        net.drop.eval()  # the adversaries see the code of the whole history, as an attacker would
        try:
            mu, _ = net.encode(csr_to_sparse_torch(model.training.X[ub], model.device_))
        finally:
            net.drop.train()
        # the heads first catch up with the current encoder (on a detached code), so that the encoder is
        # pushed towards codes no head can read rather than towards codes that fool one stale head
        for _ in range(self.head_steps):
            self.optimizer.zero_grad(set_to_none=True)
            self._losses(mu.detach(), users).backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        total = self._losses(reverse_gradient(mu, self.lam), users, ceiling=True)
        self.last_loss = float(total.detach())
        return loss + total

    def record(self, model: Any) -> None:
        model.adversary_ = {"lambda": float(self.lam), "heads": int(self.n_heads), "attributes": sorted(self.labels)}


def fit_adversarial(
    model: MultVAE,
    X: Interactions | sp.spmatrix,
    labels: Mapping[str, Any],
    lam: float = 1.0,
    n_heads: int = 3,
    valid: Any = None,
    condition: np.ndarray | None = None,
    **adversary_kw: Any,
) -> MultVAE:
    """Trains `model` with attribute adversaries (see the module docstring) and returns it. `labels`: attribute →
    one label per training user (ints with −1 unknown, or strings: `encode_labels`).

    `condition`: (n_users,) group labels of every user (−1 unknown), typically the protected attribute
    itself, given to the decoder (MultVAE's `user_groups_`). The code then need not carry the attribute for the
    recommendations to use it, so the adversaries can remove it at little cost; the attribute is still
    needed at serving time and still shapes the recommendation lists (audit them with
    `recommendation_features`), only the stored code is protected.
    """
    if not isinstance(model, MultVAE):
        raise ConfigError(f"adversarial attribute removal supports MultVAE, not {type(model).__name__}")
    n = X.n_users if isinstance(X, Interactions) else X.shape[0]
    labels = encode_labels(labels)
    for name, y in labels.items():
        if len(y) != n:
            raise ConfigError(f"labels of {name!r} have {len(y)} entries for {n} training users")
    if condition is not None:
        condition = np.asarray(condition)
        if condition.shape != (n,):
            raise ConfigError(f"condition has shape {condition.shape}; it needs one group label per user ({n})")
        model.user_groups_ = condition.astype(np.int64)
    adversary = AttributeAdversary(labels, lam=lam, n_heads=n_heads, random_state=model.random_state, **adversary_kw)
    model.fit(X, valid=valid, plugins=[adversary])
    return model


def encode_labels(labels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each attribute's labels as int codes (−1 unknown): integer labels as they are; strings or categories
    (e.g. ml-1m's gender "F"/"M") coded in sorted order, a missing value (None, NaN) as −1."""
    out = {}
    for name, values in labels.items():
        y = np.asarray(values)
        if y.ndim != 1:
            raise ConfigError(f"labels of {name!r} must be one value per user, got shape {y.shape}")
        if y.dtype.kind in "iub":
            if y.size and y.min() < -1:
                raise ConfigError(f"integer labels of {name!r} must be ≥ −1 (−1 = unknown), got {y.min()}")
            out[name] = y.astype(np.int64)
        elif y.dtype.kind == "f" and np.all(np.isnan(y) | (y == np.round(y))) and np.nanmin(y, initial=0) >= -1:
            out[name] = np.where(np.isnan(y), -1, y).astype(np.int64)
        else:
            codes, _ = pd.factorize(pd.Series(values, dtype="object"), sort=True)  # missing values: −1
            out[name] = codes.astype(np.int64)
    return out


def _one_hot(labels: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Concatenated one-hot columns of every attribute (a single 0/1 column for a binary one)."""
    cols = []
    for y in labels.values():
        y = np.asarray(y)[rows]
        n_classes = int(y.max()) + 1
        onehot = np.eye(max(n_classes, 2), dtype=np.float64)[y]
        cols.append(onehot[:, 1:] if n_classes <= 2 else onehot)
    return np.hstack(cols)


def erase_attribute(
    model: MultVAE,
    X: Interactions | sp.spmatrix,
    labels: Mapping[str, Any],
    finetune_epochs: int = 10,
    valid: Any = None,
    lr: float | None = None,
) -> MultVAE:
    """Makes the fitted `model`'s latent mean linearly blind to the attributes, then fine-tunes its decoder.

    `labels`: attribute → (n_users,) labels over the rows of `X` (ints with −1 unknown, or strings such as
    ml-1m's "F"/"M": `encode_labels`); the LEACE eraser is fitted on
    the codes of the users whose every attribute is known and installed in the encoder (`latent_eraser_`, saved
    with the model). The encoder stays frozen (the eraser is exact only for the codes it was fitted on) and the
    decoder trains `finetune_epochs` more epochs on erased codes; with `valid`, the best epoch's decoder is kept.
    """
    from concept_erasure import LeaceEraser

    if not isinstance(model, MultVAE):
        raise ConfigError(f"attribute erasure supports MultVAE, not {type(model).__name__}")
    model._check_fitted()
    if model.latent_eraser_ is not None:
        raise ConfigError("this model's code is already erased; erase from the model trained without an eraser")
    R = X.matrix if isinstance(X, Interactions) else sp.csr_matrix(X)
    n = R.shape[0]
    labels = encode_labels(labels)
    for name, y in labels.items():
        if len(y) != n:
            raise ConfigError(f"labels of {name!r} have {len(y)} entries for {n} training users")
    known = np.diff(R.indptr) > 0
    for y in labels.values():
        known &= np.asarray(y) >= 0
    rows = np.flatnonzero(known)
    if len(rows) < 2 or any(len(np.unique(np.asarray(y)[rows])) < 2 for y in labels.values()):
        raise ConfigError("erasure needs training users with known labels of at least two classes per attribute")
    net, device = cast(VAE, model.network_), model.device_
    X_bin = model._binary_rows(R, np.arange(n))
    net.eval()
    with torch.no_grad():
        chunks = [csr_to_torch(X_bin[rows[s : s + 2048]], device) for s in range(0, len(rows), 2048)]
        codes = torch.cat([net.encode(x)[0] for x in chunks])
    eraser = LeaceEraser.fit(codes.double().cpu(), torch.from_numpy(_one_hot(labels, rows)))
    projection = eraser.proj_left @ eraser.proj_right  # x ↦ x − (x − b)·(LR)ᵀ
    bias = eraser.bias if eraser.bias is not None else torch.zeros(codes.shape[1], dtype=torch.float64)
    weight = torch.eye(codes.shape[1], dtype=torch.float64) - projection.T
    eraser_map = torch.vstack([weight, bias @ projection.T]).float().numpy()
    model.latent_eraser_ = eraser_map
    net.set_eraser(eraser_map)
    model.erased_attributes_ = sorted(labels)  # type: ignore[attr-defined]
    if finetune_epochs > 0:
        _finetune_decoder(model, X_bin, finetune_epochs, valid, lr or model.lr)
    net.eval()
    return model


class DecoderTrainer(TorchRecommender, register=False):
    """Trains the decoder of a fitted MultVAE's network (encoder frozen) through the one training loop: the
    multinomial likelihood of the noised codes of the (erased) encoder, with `model`'s batches, seed and device;
    no early stop, the best validation epoch kept."""

    def __init__(self, model: MultVAE, epochs: int, lr: float) -> None:
        super().__init__(epochs, model.batch_size, lr, epochs, 1, model.device, model.random_state, model.verbose)
        self.model = model

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        return self.model.network_  # the fitted network itself: nothing new is drawn

    def _make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        net = cast(VAE, self.network_)
        decoder = [p for name, p in net.named_parameters() if not name.startswith(("encoder.", "to_latent."))]
        return torch.optim.Adam(decoder, lr=self.lr, weight_decay=self.model.weight_decay)

    def batches(self, X: sp.csr_matrix, rng: np.random.Generator) -> Iterator[np.ndarray]:
        return self.user_batches(X, rng)

    def batch_loss(self, batch: np.ndarray) -> torch.Tensor:
        net, rows = cast(VAE, self.network_), np.sort(batch)
        x = csr_to_torch(self.training.X[rows], self.device_)
        with torch.no_grad():  # input dropout as in training; the frozen encoder's code, erased
            mu, logvar = net.encode(x)
            z = mu + net.noise * torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return -(F.log_softmax(net.decode(z, self.model._groups(rows)), dim=1) * x).sum(1).mean()

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return self.model._score(history, users)


def _finetune_decoder(model: MultVAE, X_bin: sp.csr_matrix, epochs: int, valid: Any, lr: float) -> None:
    """Trains the decoder (encoder frozen) on the multinomial likelihood of the erased, noised codes."""
    DecoderTrainer(model, epochs, lr).fit(X_bin, valid=valid)
