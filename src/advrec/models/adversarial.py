"""The one adversarial training loop of the GAN recommenders (CFGAN, IRGAN), with stability diagnostics.

`AdversarialRecommender` alternates `d_steps` passes of discriminator updates with `g_steps` passes of
generator updates per epoch: two `Phase`s of `TorchRecommender`'s one training loop (early stopping on the
validation metric, best weights kept). Losses: "bce", the seeds' formulas L_D = −log D(x) − log(1 − D(G(z))) and the
non-saturating L_G = −log D(G(z)); or "wgan-gp", L_D = D(G(z)) − D(x) + λ·(‖∇D(x̂)‖ − 1)², L_G = −D(G(z)).
`d_warmup` extra discriminator passes precede the first generator update (IRGAN's D pretraining).
Gradient clipping by norm, exponential learning-rate decay, checkpoints every n epochs. Each epoch logs
D and G losses, D's accuracy on real and on generated data, and the diversity of generated profiles
(share of the catalogue in their top-k lists of items the user does not have, mean pairwise Jaccard of
those lists); a mean Jaccard of
`collapse_jaccard` or more raises the mode-collapse alarm (a warning, and `collapse_epochs_`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from advrec.evaluation.ranking import entry_positions, top_k
from advrec.models.params import Interval, Options, declare
from advrec.models.torch_base import Phase, TorchRecommender

log = logging.getLogger(__name__)

LOSSES = ("bce", "wgan-gp")


def profile_diversity(top: np.ndarray, n_items: int) -> tuple[float, float]:
    """(share of the catalogue that appears in any list, mean pairwise Jaccard) of top-k lists, one per row."""
    n, k = top.shape
    if n < 2 or k == 0:  # overlap needs two lists
        return (len(np.unique(top)) / n_items if n else 0.0), float("nan")
    B = sp.csr_matrix((np.ones(n * k, np.float32), top.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n_items))
    B.sum_duplicates()
    B.data[:] = 1.0
    inter = (B @ B.T).toarray()
    size = np.diag(inter)
    iu = np.triu_indices(n, 1)
    union = size[iu[0]] + size[iu[1]] - inter[iu]
    jaccard = float(np.mean(inter[iu] / np.maximum(union, 1)))
    return len(np.unique(top)) / n_items, jaccard


class AdversarialRecommender(TorchRecommender):
    """Base of the GAN recommenders: `network_` is a ModuleDict with a "generator" and a "discriminator".

    Subclasses implement `_d_batch(X, rows, rng)` and `_g_batch(X, rows, rng)`, each returning the batch
    loss (a tensor) and a dict of batch statistics (the loop's phases "d" and "g"; plug-ins apply to "g"),
    and may use `d_loss`, `g_loss` and `gradient_penalty`
    so that the choice of `loss` lives here. `_generated(X, rows)` gives the generator's scores for the
    diversity diagnostics (default: `_score`). `_epoch_rows(X, rng)` yields the row batches of an epoch.
    """

    _parameter_constraints = declare(
        TorchRecommender._parameter_constraints,
        d_steps=[Interval(int, 0, None, closed="left")],
        g_steps=[Interval(int, 1, None, closed="left")],
        d_warmup=[Interval(int, 0, None, closed="left")],
        loss=[Options(LOSSES)],
        gp_weight=[Interval(float, 0, None, closed="left")],
        lr_d=[Interval(float, 0, None, closed="neither"), None],
        clip_grad=[Interval(float, 0, None, closed="left")],
        lr_decay=[Interval(float, 0, 1, closed="right")],
        checkpoint_dir=[str, None],
        checkpoint_every=[Interval(int, 0, None, closed="left")],
        diversity_users=[Interval(int, 1, None, closed="left")],
        diversity_k=[Interval(int, 1, None, closed="left")],
        collapse_jaccard=[Interval(float, 0, 1, closed="both")],
    )

    network_: torch.nn.ModuleDict
    resumable = False  # the learning-rate schedules and the collapse record are per-fit state

    def __init__(
        self,
        d_steps: int = 1,
        g_steps: int = 1,
        d_warmup: int = 0,
        loss: str = "bce",
        gp_weight: float = 10.0,
        lr_d: float | None = None,
        clip_grad: float = 0.0,
        lr_decay: float = 1.0,
        checkpoint_dir: str | None = None,
        checkpoint_every: int = 0,
        diversity_users: int = 256,
        diversity_k: int = 20,
        collapse_jaccard: float = 0.8,
        epochs: int = 100,
        batch_size: int = 64,
        lr: float = 1e-4,
        patience: int = 10,
        eval_every: int = 1,
        device: str = "auto",
        random_state: int | None = 2020,
        verbose: bool = False,
        valid_metric: str = "ndcg@10",
    ) -> None:
        super().__init__(epochs, batch_size, lr, patience, eval_every, device, random_state, verbose, valid_metric)
        self.d_steps = d_steps
        self.g_steps = g_steps
        self.d_warmup = d_warmup
        self.loss = loss
        self.gp_weight = gp_weight
        self.lr_d = lr_d
        self.clip_grad = clip_grad
        self.lr_decay = lr_decay
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.diversity_users = diversity_users
        self.diversity_k = diversity_k
        self.collapse_jaccard = collapse_jaccard

    @staticmethod
    def _loop_args(values: dict[str, object]) -> dict[str, object]:
        """The arguments of the adversarial loop among a subclass's constructor `locals()`, so a subclass
        passes them on by name instead of repeating a long positional list."""
        names = AdversarialRecommender._param_names()
        return {k: values[k] for k in names if k in values}

    # ------------------------------------------------------------------ to implement
    def _d_batch(
        self, X: sp.csr_matrix, rows: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def _g_batch(
        self, X: sp.csr_matrix, rows: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def _generated(self, X: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        return self._score(X, rows)

    def _epoch_rows(self, X: sp.csr_matrix, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Row batches of one generator pass (default: the users with interactions, shuffled)."""
        users = rng.permutation(np.flatnonzero(np.diff(X.indptr) > 0))
        for start in range(0, len(users), self.batch_size):
            yield np.sort(users[start : start + self.batch_size])

    def _d_rows(self, X: sp.csr_matrix, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Row batches of one discriminator pass (default: as for the generator)."""
        return self._epoch_rows(X, rng)

    # ------------------------------------------------------------------ losses shared by the models
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Discriminator loss from its outputs (logits or critic values) on real and generated data."""
        if self.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
                fake, torch.zeros_like(fake)
            )
            threshold = 0.0
        else:
            loss = fake.mean() - real.mean()
            threshold = float((real.detach().mean() + fake.detach().mean()) / 2)
        stats = {
            "d_real_acc": float((real.detach() > threshold).float().mean()),
            "d_fake_acc": float((fake.detach() < threshold).float().mean()),
        }
        return loss, stats

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Generator loss from the discriminator's outputs on generated data (non-saturating for BCE)."""
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        return -fake.mean()

    def gradient_penalty(
        self, critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, *cond: torch.Tensor
    ) -> torch.Tensor:
        """WGAN-GP's λ·(‖∇D(x̂)‖₂ − 1)² on random interpolates x̂ of real and generated rows; 0 for BCE."""
        if self.loss != "wgan-gp":
            return real.new_zeros(())
        eps = torch.rand(real.shape[0], 1, device=real.device)
        mix = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(mix, *cond).sum(), mix, create_graph=True)
        return self.gp_weight * ((grad.norm(2, dim=1) - 1) ** 2).mean()

    # ------------------------------------------------------------------ the schedule
    def phases(self) -> list[Phase]:
        """D passes (`d_steps`, plus `d_warmup` in the first epoch), then G passes (`g_steps`) with D frozen."""
        t, net = self.training, self.network_
        first = t.epoch <= 1
        return [
            Phase("d", self._d_rows, self._d_phase_loss, net["discriminator"],
                  repeats=self.d_steps + (self.d_warmup if first else 0), weighted=False, plugins=False,
                  clip=self.clip_grad, lr=self.lr_d or self.lr),
            Phase("g", self._epoch_rows, self._g_phase_loss, net["generator"], repeats=self.g_steps,
                  frozen=net["discriminator"], weighted=False, clip=self.clip_grad),
        ]  # fmt: skip

    def _d_phase_loss(self, rows: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        return self._d_batch(self.training.X, rows, self.training.rng)

    def _g_phase_loss(self, rows: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        return self._g_batch(self.training.X, rows, self.training.rng)

    def _make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        return torch.optim.Adam(phase.module.parameters(), lr=phase.lr or self.lr, foreach=True)

    def _prepare(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        t = self.training
        t.cache["schedulers"] = [
            torch.optim.lr_scheduler.ExponentialLR(t.optimizers[k], self.lr_decay) for k in ("g", "d")
        ]
        active = np.flatnonzero(np.diff(X.indptr) > 0)
        n = min(self.diversity_users, len(active))
        t.cache["diversity_rows"] = np.sort(rng.choice(active, size=n, replace=False))
        self.collapse_epochs_: list[int] = []

    def _after_epoch(self, epoch: int, row: dict[str, float]) -> None:
        t = self.training
        for scheduler in t.cache["schedulers"]:
            scheduler.step()
        self.network_.eval()
        rows = t.cache["diversity_rows"]
        with torch.no_grad():
            scores = np.array(self._generated(t.X, rows), dtype=np.float32)
        self.network_.train()
        scores[entry_positions(t.X[rows])] = -np.inf  # what it adds, not the user's own items
        k = min(self.diversity_k, max(1, self.n_items_ // 4))  # lists covering much of a tiny catalogue must overlap
        top, _ = top_k(scores, k)
        coverage, jaccard = profile_diversity(top, scores.shape[1])
        row["gen_coverage"], row["gen_jaccard"] = coverage, jaccard
        if np.isfinite(jaccard) and jaccard >= self.collapse_jaccard:
            row["collapse"] = 1.0
            self.collapse_epochs_.append(epoch)
            log.warning(
                "%s epoch %d: mode-collapse alarm, generated top-%d lists overlap %.0f%% on average "
                "(%.1f%% of the catalogue used)",
                type(self).__name__, epoch, k, 100 * jaccard, 100 * coverage,
            )  # fmt: skip
        if self.checkpoint_dir and self.checkpoint_every > 0 and epoch % self.checkpoint_every == 0:
            self.save(Path(self.checkpoint_dir) / f"epoch-{epoch:04d}")
