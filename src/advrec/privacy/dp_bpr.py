"""User-level DP training of `BPRMF` as a billboard model: DP-SGD on the item side, users folded in.

With one user = one example, BPR-MF's user embedding row is touched by that user alone: DP-SGD would add
fresh noise to every row of the user table at every step while only the sampled users' rows get signal, and the
released table would hold each user's own (noisy) data anyway. The billboard model (McSherry & Mironov 2009;
Jain et al. 2021, private alternating least squares) releases only item-side parameters under DP and lets each
user's vector be computed from that user's own history against them, so a user's recommendations are
(ε, δ)-DP with respect to every other user (joint DP).

The user vector here is FISM-style (Kabbur et al. 2013; NSVD, Paterek 2007): u = Q·x/‖x‖, a normalized sum
of context vectors q_j of the user's items, and s(u, i) = ⟨u, p_i⟩ with the BPR item factors P. Chosen over a
per-user ridge fold-in because:

- the fold-in is part of the model DP-SGD trains, so the pairwise loss optimized is the one served (a ridge
  fold-in fits a squared loss the BPR factors were never trained for, and would be re-solved at every step);
- the per-user loss is a function of the user's dense row through two Linear layers, Q (items → factors) and
  P (factors → item scores), which Opacus's ghost clipping clips exactly from layer inputs and output gradients
  (‖a‖·‖g‖ per user), as for MultVAE: no per-user copy of an items×factors gradient. nn.Embedding has Opacus
  grad and norm samplers too, but a per-user embedding lookup of a variable-length history needs padding to
  the longest history in the batch, and BPRMF's own `batch_loss` indexes the weight tensors directly, which
  Opacus's hooks do not see;
- Q and P are all that is trained and released: every parameter is clipped per user.

One example is a user's row; the example's loss is the mean BPR loss −log σ(s_ui − s_uj) over all the user's
items i, each paired with a uniformly drawn non-item j. Users are Poisson-sampled (q = batch_size / n_users,
`batch_size` counts users here), noise and accounting are `advrec.privacy.dp`'s. `reg` is not used: the L2
term would touch P outside its layer, unseen by the clipping (clipping and noise bound the steps instead).
Per-user gradients of this loss are small (median 0.02 at initialization, 0.2 after training on ml-100k): set
`max_grad_norm` near them (0.01); at the default 1 no user is clipped and the noise σ·1 swamps the signal.

After training the `BPRMF` holds P as its item table, each training user's fold-in Q·x/‖x‖ as its user table,
and Q as `item_context_`, from which `fold_in` computes the vector of any user (new ones included) from their
history. The user table is per-user data, for serving those users; the DP release is P and Q.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from advrec.data.interactions import Interactions, as_csr
from advrec.errors import ConfigError, DataError
from advrec.models import BPRMF
from advrec.models.bpr import MF, sample_negatives
from advrec.models.torch_base import TorchRecommender, TrainingPlugin, csr_to_torch

SCOPE = "item side (item factors, item_context_); user vectors: each user's fold-in of their own row (billboard)"


class BillboardMF(nn.Module):
    """s(x) = P·(Q·x/‖x‖): `context` is Q (items → factors), `item` is P (factors → item scores)."""

    def __init__(self, n_items: int, factors: int) -> None:
        super().__init__()
        self.context = nn.Linear(n_items, factors, bias=False)
        self.item = nn.Linear(factors, n_items, bias=False)
        nn.init.xavier_normal_(self.context.weight)
        nn.init.xavier_normal_(self.item.weight)

    def users(self, x: torch.Tensor) -> torch.Tensor:
        return self.context(F.normalize(x, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.item(self.users(x))


class BillboardBPR(TorchRecommender, register=False):
    """The trainer of `fit_billboard`: BPR on `BillboardMF`, users as examples (DP-SGD plugs in as a plug-in)."""

    def __init__(
        self, factors: int, epochs: int, batch_size: int, lr: float, patience: int, eval_every: int, device: str,
        random_state: int | None, verbose: bool, valid_metric: str = "ndcg@10",
    ) -> None:  # fmt: skip
        super().__init__(epochs, batch_size, lr, patience, eval_every, device, random_state, verbose, valid_metric)
        self.factors = factors

    network_: BillboardMF

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        return BillboardMF(n_items, self.factors)

    def _prepare(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        coo = X.tocoo()
        self.training.cache["keys"] = np.sort(coo.row.astype(np.int64) * self.n_items_ + coo.col)

    def batches(self, X: sp.csr_matrix, rng: np.random.Generator) -> Iterable[np.ndarray]:
        return self.user_batches(X, rng)

    def batch_loss(self, batch: np.ndarray) -> torch.Tensor:
        """Each user's mean BPR loss over their items, each against one sampled non-item."""
        t = self.training
        X, users, rng = t.X, np.sort(batch), t.rng
        rows = X[users]
        local = np.repeat(np.arange(len(users)), np.diff(rows.indptr))
        neg = sample_negatives(users[local], t.cache["keys"], self.n_items_, rng)
        dev = self.device_
        scores = self.network_(csr_to_torch(rows, dev))
        r, pos, j = (torch.from_numpy(a.astype(np.int64)).to(dev) for a in (local, rows.indices, neg))
        pair = -F.logsigmoid(scores[r, pos] - scores[r, j])
        counts = torch.from_numpy(np.maximum(np.diff(rows.indptr), 1).astype(np.float32)).to(dev)
        return scores.new_zeros(len(users)).index_add(0, r, pair) / counts

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.network_(csr_to_torch(self._binary_rows(history, users), self.device_)).cpu().numpy()


def check_bpr(model: BPRMF) -> None:
    """Raises `ConfigError` for a BPRMF whose network is not the plain MF the billboard form replaces."""
    from advrec.privacy.dp import check_privatizable

    cls = type(model)
    if cls._build is BPRMF._build and cls._score is BPRMF._score:
        return
    check_privatizable(model._build(1, 1), cls.__name__)  # names a layer Opacus cannot handle, if any
    raise ConfigError(
        f"DP training of {cls.__name__} is not supported: the billboard DP-BPR replaces BPRMF's MF network "
        "(user and item embeddings, dot-product scores) and cannot train another network or scorer"
    )


def fit_billboard(
    model: BPRMF, X: Interactions | sp.spmatrix, valid: Any = None, plugins: Sequence[TrainingPlugin] = ()
) -> BPRMF:
    """Trains `model` as a billboard BPR (DP-SGD when the `DPSGD` plug-in is given, plain Adam otherwise) and
    fills its MF network: P as the item table, each user's fold-in as the user table; Q is kept as
    `item_context_`."""
    check_bpr(model)
    p = model.get_params()
    trainer = BillboardBPR(
        p["factors"], p["epochs"], p["batch_size"], p["lr"], p["patience"], p["eval_every"], p["device"],
        p["random_state"], p["verbose"], p["valid_metric"],
    )  # fmt: skip
    trainer.fit(X, valid=valid, plugins=plugins)
    m = trainer._check_fit_input(X)
    model._set_shape(m)
    model.device_ = trainer.device_
    setattr(model, "item_context_", trainer.network_.context.weight.detach().T.cpu().numpy().copy())  # noqa: B010
    with torch.random.fork_rng(devices=[]):
        network = MF(model.n_users_, model.n_items_, model.factors)
    with torch.no_grad():
        network.item.weight.copy_(trainer.network_.item.weight)
    model.network_ = network.to(model.device_).eval()
    with torch.no_grad():
        model.network_.user.weight.copy_(torch.from_numpy(fold_in(model, m)))
    for name in ("training_log_", "epochs_run_", "epoch_seconds_", "best_epoch_", "best_valid_"):
        if hasattr(trainer, name):
            setattr(model, name, getattr(trainer, name))
    if trainer.privacy_ is not None:
        model.privacy_ = dataclasses.replace(trainer.privacy_, scope=SCOPE)
    return model


def fold_in(model: BPRMF, history: Interactions | sp.spmatrix, batch_size: int = 4096) -> np.ndarray:
    """The billboard user vectors Q·x/‖x‖ of every row of `history` (zero for an empty row): (n_rows, factors)."""
    context = getattr(model, "item_context_", None)
    if context is None:
        raise ConfigError(f"{type(model).__name__} was not trained as a billboard model (no item_context_)")
    h = as_csr(history, "history")
    if h.shape[1] != context.shape[0]:
        raise DataError(f"history has {h.shape[1]} items but the model was fitted on {context.shape[0]} items")
    q = torch.from_numpy(np.asarray(context, dtype=np.float32))
    out = np.zeros((h.shape[0], q.shape[1]), dtype=np.float32)
    for s in range(0, h.shape[0], batch_size):
        rows = BPRMF._binary_rows(h, np.arange(s, min(s + batch_size, h.shape[0])))
        out[s : s + rows.shape[0]] = (F.normalize(csr_to_torch(rows, torch.device("cpu")), dim=1) @ q).numpy()
    return out
