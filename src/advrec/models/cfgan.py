"""`CFGAN` (Chae et al., CIKM 2018): a GAN whose generator produces a whole interaction vector.

The generator G maps a condition vector c (a user's row, or in item-based mode an item's column) to a
real-valued vector over the other side; the discriminator D judges [x, c] pairs, x being the real vector
or G(c) masked to the entries D may see. Negative sampling, redrawn every epoch among the entries that
are 0 in c:
- ZR (zero reconstruction): a share `zr_ratio` whose generated values are pushed to 0 by `zr_coef`·Σ G(c)²;
- PM (partial masking): a share `pm_ratio` left visible to D, so G cannot score them freely.
`scheme` is "ZR", "PM" or "ZP" (both). Scores are G's outputs: linear (`g_output="linear"`) or squashed
into (0, 1) like the real entries (`"sigmoid"`, the authors' code). Defaults are the authors' ML-100K setting
(item-based ZP; G 400, D 125 sigmoid hidden units; Adam 1e-4; G/D batches 32/64; 4 G and 2 D passes per
epoch; S_ZR = S_PM = 70% of the non-interacted entries; α = 0.03; L2 1e-3 on G).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from advrec.errors import DataError
from advrec.models.adversarial import AdversarialRecommender
from advrec.models.params import Interval, Options, TupleOf, declare

SCHEMES = ("ZR", "PM", "ZP")
MODES = ("user", "item")
G_OUTPUTS = ("linear", "sigmoid")


def mlp(sizes: Sequence[int], last_activation: bool = False) -> nn.Sequential:
    """Linear layers with sigmoid activations between them, Xavier-uniform weights, small uniform biases."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        lin = nn.Linear(a, b)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.uniform_(lin.bias, -0.01, 0.01)
        layers.append(lin)
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


class Generator(nn.Module):
    def __init__(self, n: int, hidden: Sequence[int], noise_dim: int, sigmoid_output: bool = False) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.net = mlp([n + noise_dim, *hidden, n], last_activation=sigmoid_output)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if self.noise_dim:  # noise while training; its mean (0) when scoring, so scores are deterministic
            z = (
                torch.randn(c.shape[0], self.noise_dim, device=c.device)
                if self.training
                else c.new_zeros(c.shape[0], self.noise_dim)
            )
            c = torch.cat([c, z], dim=1)
        return self.net(c)


class Discriminator(nn.Module):
    def __init__(self, n: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp([2 * n, *hidden, 1])

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, c], dim=1)).squeeze(1)


def l2(module: nn.Module) -> torch.Tensor:
    """Σ w² / 2 over the module's weights and biases."""
    return torch.stack([p.pow(2).sum() for p in module.parameters()]).sum() / 2


class CFGAN(AdversarialRecommender):
    """CFGAN, user- or item-based, with ZR / PM / ZP negative sampling; see the module docstring.

    User-based CFGAN scores any history (new users fold in); item-based CFGAN conditions on item columns
    over the training users, so it scores only the users it was trained on.
    """

    _parameter_constraints = declare(
        AdversarialRecommender._parameter_constraints,
        mode=[Options(MODES)],
        scheme=[Options(SCHEMES)],
        zr_ratio=[Interval(float, 0, 1, closed="both")],
        pm_ratio=[Interval(float, 0, 1, closed="both")],
        zr_coef=[Interval(float, 0, None, closed="left")],
        g_hidden=[TupleOf(int, low=1)],
        d_hidden=[TupleOf(int, low=1)],
        g_reg=[Interval(float, 0, None, closed="left")],
        d_reg=[Interval(float, 0, None, closed="left")],
        noise_dim=[Interval(int, 0, None, closed="left")],
        g_output=[Options(G_OUTPUTS)],
        d_batch_size=[Interval(int, 1, None, closed="left")],
    )

    def __init__(
        self,
        mode: str = "item",
        scheme: str = "ZP",
        zr_ratio: float = 0.7,
        pm_ratio: float = 0.7,
        zr_coef: float = 0.03,
        g_hidden: Sequence[int] = (400,),
        d_hidden: Sequence[int] = (125,),
        g_reg: float = 1e-3,
        d_reg: float = 0.0,
        noise_dim: int = 0,
        g_output: str = "linear",
        d_batch_size: int = 64,
        d_warmup: int = 0,
        d_steps: int = 2,
        g_steps: int = 4,
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
        epochs: int = 250,
        batch_size: int = 32,
        lr: float = 1e-4,
        patience: int = 10,
        eval_every: int = 5,
        device: str = "auto",
        random_state: int | None = 2020,
        verbose: bool = False,
        valid_metric: str = "ndcg@10",
    ) -> None:
        super().__init__(**self._loop_args(locals()))  # type: ignore[arg-type]
        self.mode = mode
        self.scheme = scheme
        self.zr_ratio = zr_ratio
        self.pm_ratio = pm_ratio
        self.zr_coef = zr_coef
        self.g_hidden = g_hidden
        self.d_hidden = d_hidden
        self.g_reg = g_reg
        self.d_reg = d_reg
        self.noise_dim = noise_dim
        self.g_output = g_output
        self.d_batch_size = d_batch_size

    @property
    def uses_history(self) -> bool:  # type: ignore[override]
        return self.mode == "user"

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        n = n_items if self.mode == "user" else n_users
        return nn.ModuleDict(
            {
                "generator": Generator(n, list(self.g_hidden), self.noise_dim, self.g_output == "sigmoid"),
                "discriminator": Discriminator(n, list(self.d_hidden)),
            }
        )

    # ------------------------------------------------------------------ training
    def _rows_matrix(self, X: sp.csr_matrix) -> sp.csr_matrix:
        return X if self.mode == "user" else X.T.tocsr()

    def _prepare(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        super()._prepare(X, rng)
        R = self._rows_matrix(X)
        self.training.cache["R"] = torch.from_numpy(R.toarray()).to(self.device_)
        self.training.cache["active_rows"] = np.flatnonzero(np.diff(R.indptr) > 0)

    def _epoch_rows(
        self, X: sp.csr_matrix, rng: np.random.Generator, batch_size: int | None = None
    ) -> Iterator[np.ndarray]:
        rows = rng.permutation(self.training.cache["active_rows"])
        size = batch_size or self.batch_size
        for start in range(0, len(rows), size):
            yield np.sort(rows[start : start + size])

    def _before_epoch(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        R = self.training.cache["R"]
        gen = torch.Generator(device=R.device).manual_seed(int(rng.integers(2**62)))
        zero = R == 0
        use_zr, use_pm = self.scheme in ("ZR", "ZP"), self.scheme in ("PM", "ZP")
        self.training.cache["zr"] = (
            (torch.rand(R.shape, generator=gen, device=R.device) < self.zr_ratio) & zero if use_zr else None
        )
        self.training.cache["pm"] = (
            (torch.rand(R.shape, generator=gen, device=R.device) < self.pm_ratio) & zero if use_pm else None
        )

    def _d_rows(self, X: sp.csr_matrix, rng: np.random.Generator) -> Iterator[np.ndarray]:
        return self._epoch_rows(X, rng, self.d_batch_size)

    def _masked_fake(self, rows: torch.Tensor, c: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        pm = self.training.cache["pm"]
        visible = c if pm is None else c + pm[rows].float()
        return out * visible

    def _d_batch(
        self, X: sp.csr_matrix, rows: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        net, idx = self.network_, torch.from_numpy(rows).to(self.device_)
        c = self.training.cache["R"][idx]
        with torch.no_grad():
            fake = self._masked_fake(idx, c, net["generator"](c))
        D = net["discriminator"]
        loss, stats = self.d_loss(D(c, c), D(fake, c))
        loss = loss + self.gradient_penalty(D, c, fake, c)
        if self.d_reg:
            loss = loss + self.d_reg * l2(D)
        return loss, stats

    def _g_batch(
        self, X: sp.csr_matrix, rows: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        net, idx = self.network_, torch.from_numpy(rows).to(self.device_)
        c = self.training.cache["R"][idx]
        out = net["generator"](c)
        loss = self.g_loss(net["discriminator"](self._masked_fake(idx, c, out), c))
        zr = self.training.cache["zr"]
        if zr is not None:
            loss = loss + self.zr_coef * (out.pow(2) * zr[idx]).sum(1).mean()
        if self.g_reg:
            loss = loss + self.g_reg * l2(net["generator"])
        return loss, {}

    # ------------------------------------------------------------------ scoring
    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        G = self.network_["generator"]
        was_training = G.training
        G.eval()
        with torch.no_grad():
            if self.mode == "user":
                h = self._binary_rows(history, users)
                out = G(torch.from_numpy(h.toarray()).to(self.device_))
            else:
                if history.shape[0] != self.n_users_:
                    raise DataError(
                        f"item-based CFGAN conditions on the {self.n_users_} training users' columns; "
                        f"the history has {history.shape[0]} users"
                    )
                cols = sp.csc_matrix(history, copy=True)
                cols.data[:] = 1.0
                items = torch.from_numpy(cols.T.toarray()).to(self.device_)  # (n_items, n_users)
                out = torch.cat([G(items[s : s + 1024]) for s in range(0, items.shape[0], 1024)])
                out = out[:, torch.from_numpy(users).to(self.device_)].T
        G.train(was_training)
        return out.cpu().numpy()
