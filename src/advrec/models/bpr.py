"""`BPRMF` (Rendle et al., UAI 2009): matrix factorization trained with the BPR pairwise loss."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from advrec.errors import ConfigError
from advrec.models.torch_base import TorchRecommender

OPTIMIZERS = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}


class MF(nn.Module):
    """User and item embeddings; score(u, i) = ⟨user_u, item_i⟩ (computed by `BPRMF`)."""

    def __init__(self, n_users: int, n_items: int, factors: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, factors)
        self.item = nn.Embedding(n_items, factors)
        nn.init.xavier_normal_(self.user.weight)
        nn.init.xavier_normal_(self.item.weight)


def sample_negatives(
    users: np.ndarray, positives: np.ndarray, n_items: int, rng: np.random.Generator, tries: int = 20
) -> np.ndarray:
    """One uniform negative item per user, redrawn while it is a positive of that user.

    `positives` holds the sorted keys user·n_items + item of the training matrix.
    """
    neg = rng.integers(0, n_items, size=len(users))
    todo = np.arange(len(users))
    for _ in range(tries):
        keys = users[todo] * n_items + neg[todo]
        pos = np.searchsorted(positives, keys)
        hit = positives[np.minimum(pos, len(positives) - 1)] == keys
        todo = todo[hit]
        if not len(todo):
            break
        neg[todo] = rng.integers(0, n_items, size=len(todo))
    return neg


class BPRMF(TorchRecommender):
    """BPR-MF: maximise log σ(s(u,i) − s(u,j)) over observed i and uniformly sampled unobserved j.

    `reg` is the L2 weight on the embeddings of each batch (per example). `optimizer`: "adam" or "adagrad"
    (the optimizer of the APR paper's MF-BPR). With a validation set, training stops early on validation
    NDCG@10.
    """

    uses_history = False
    network_: MF

    def __init__(
        self,
        factors: int = 64,
        reg: float = 1e-4,
        epochs: int = 200,
        batch_size: int = 2048,
        lr: float = 1e-3,
        patience: int = 10,
        eval_every: int = 1,
        device: str = "auto",
        random_state: int | None = 2020,
        verbose: bool = False,
        optimizer: str = "adam",
    ) -> None:
        super().__init__(epochs, batch_size, lr, patience, eval_every, device, random_state, verbose)
        self.factors = factors
        self.reg = reg
        self.optimizer = optimizer
        self._optimizer_class()  # fail at construction, not at the first epoch

    def _optimizer_class(self) -> type[torch.optim.Adam] | type[torch.optim.Adagrad]:
        if self.optimizer not in OPTIMIZERS:  # also reached after set_params
            raise ConfigError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        return OPTIMIZERS[self.optimizer]

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        return MF(n_users, n_items, self.factors)

    def _train_epoch(self, X: sp.csr_matrix, rng: np.random.Generator) -> float:
        t = self._train
        if not t:
            t["optimizer"] = self._optimizer_class()(self.network_.parameters(), lr=self.lr)
            coo = X.tocoo()
            t["pairs"] = (coo.row.astype(np.int64), coo.col.astype(np.int64))
            t["keys"] = np.sort(t["pairs"][0] * self.n_items_ + t["pairs"][1])
        users_all, items_all = t["pairs"]
        optimizer = t["optimizer"]
        order = rng.permutation(len(users_all))
        total, dev = 0.0, self.device_
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            u, i = users_all[idx], items_all[idx]
            j = sample_negatives(u, t["keys"], self.n_items_, rng)
            batch = {"users": torch.from_numpy(u).to(dev), "pos": torch.from_numpy(i).to(dev),
                     "neg": torch.from_numpy(j).to(dev)}  # fmt: skip
            loss = self._apply_hooks(batch, self.batch_loss(batch, regularize=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        return total / len(order)

    def embedding_tables(self) -> dict[str, torch.Tensor]:
        """The learned embedding tables by name (what adversarial perturbation training perturbs)."""
        return {"user": self.network_.user.weight, "item": self.network_.item.weight}

    def batch_loss(
        self, batch: dict[str, torch.Tensor], tables: dict[str, torch.Tensor] | None = None, regularize: bool = False
    ) -> torch.Tensor:
        """Mean BPR loss of a batch {"users", "pos", "neg"}, computed with `tables` in place of the learned
        embedding tables when given (e.g. perturbed ones); `regularize` adds the L2 term."""
        t = tables or self.embedding_tables()
        ue, ie, je = t["user"][batch["users"]], t["item"][batch["pos"]], t["item"][batch["neg"]]
        loss = -torch.nn.functional.logsigmoid((ue * (ie - je)).sum(-1)).mean()
        if regularize:
            loss = loss + self.reg * (ue.pow(2).sum() + ie.pow(2).sum() + je.pow(2).sum()) / len(ue)
        return loss

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            u = self.network_.user(torch.from_numpy(users).to(self.device_))
            return (u @ self.network_.item.weight.T).cpu().numpy()

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item factor matrices."""
        self._check_fitted()
        return (self.network_.user.weight.detach().cpu().numpy(), self.network_.item.weight.detach().cpu().numpy())
