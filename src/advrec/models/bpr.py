"""`BPRMF` (Rendle et al., UAI 2009): matrix factorization trained with the BPR pairwise loss."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from advrec.data.interactions import as_csr
from advrec.errors import ConfigError
from advrec.models.params import Dimension, Float, Int, Interval, Options, declare
from advrec.models.torch_base import Phase, TorchRecommender

OPTIMIZERS = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sparse_adam": torch.optim.SparseAdam}
BITMAP_MAX_CELLS = 2**27  # users × items up to which membership is a 128 MB byte map (ml-1m: 19 MB)


def make_optimizer(cls: type[torch.optim.Optimizer], params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """`cls(params, lr)`, updating all tensors in one fused (Adam) or multi-tensor (Adagrad) kernel, or only the
    rows that have a gradient (SparseAdam)."""
    if cls is torch.optim.SparseAdam:
        return torch.optim.SparseAdam(params, lr=lr)
    if cls is torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, fused=True)
    return cls(params, lr=lr, foreach=True)  # type: ignore[call-arg]


def grad_buffer(param: torch.Tensor) -> torch.Tensor:
    """`param.grad`, zeroed (allocated on first use): where a hand-computed gradient is summed."""
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    return param.grad.zero_()


def sparse_rows(rows: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A sparse (rows × columns) gradient holding `values[k]` in row `rows[k]` (repeated rows are summed)."""
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, shape, check_invariants=False)


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

    `positives` holds the sorted keys user·n_items + item of the training matrix (int64, or int32 when they fit).
    """
    neg = rng.integers(0, n_items, size=len(users))
    todo = np.arange(len(users))
    for _ in range(tries):
        keys = (users[todo] * n_items + neg[todo]).astype(positives.dtype, copy=False)
        pos = np.searchsorted(positives, keys)
        hit = positives[np.minimum(pos, len(positives) - 1)] == keys
        todo = todo[hit]
        if not len(todo):
            break
        neg[todo] = rng.integers(0, n_items, size=len(todo))
    return neg


class BPRMF(TorchRecommender):
    """BPR-MF: maximise log σ(s(u,i) − s(u,j)) over observed i and sampled unobserved j.

    Negatives by dynamic negative sampling (Zhang et al., SIGIR 2013): of `negative_pool` uniform draws, the item
    the model scores highest for the user, among those the user has not interacted with; `negative_pool=1` is
    the uniform sampling of the BPR paper. `reg` is the L2 weight on the embeddings of each batch (per example).
    `optimizer`: "adam", "adagrad" (the optimizer of the APR paper's MF-BPR) or "sparse_adam" (Adam on the rows
    of the batch only, torch's SparseAdam: moments of other rows are not decayed; a step costs O(B·d) where
    Adam's touches all (users + items)·d weights, which dominates an epoch at a million users). With a validation
    set, training stops early on validation NDCG@10.

    Each batch's gradient is written out (`batch_loss`'s gradient, no autograd graph) unless plug-ins (APR) or DDP
    need autograd; its large blocks are reused from batch to batch; CPU training uses one intra-op thread.

    Defaults (batches of 8,192, lr 5e-3, reg 1e-2, 8 candidates, validation every 2 epochs, patience 2) were
    chosen on ml-1m validation NDCG@10 (RecBole's protocol, seed 2020; benchmarks/results/recbole_ml1m.md); the
    former ones (batches of 2,048, lr 1e-3, reg 1e-4, uniform negatives) are `negative_pool=1` with those values.
    """

    _parameter_constraints = declare(
        TorchRecommender._parameter_constraints,
        factors=[Interval(int, 1, None, closed="left")],
        reg=[Interval(float, 0, None, closed="left")],
        optimizer=[Options(OPTIMIZERS)],
        negative_pool=[Interval(int, 1, None, closed="left")],
    )
    _search_space: ClassVar[dict[str, Dimension]] = {
        "factors": Int(16, 256, log=True),
        "lr": Float(1e-4, 3e-2, log=True),
        "reg": Float(1e-5, 1e-1, log=True),
    }

    uses_history = False
    # batches of a few thousand rows × factors: one thread, whatever the machine's load
    cpu_train_threads: ClassVar[int | None] = 1
    network_: MF

    def __init__(
        self,
        factors: int = 64,
        reg: float = 1e-2,
        epochs: int = 200,
        batch_size: int = 8192,
        lr: float = 5e-3,
        patience: int = 2,
        eval_every: int = 2,
        device: str = "auto",
        random_state: int | None = 2020,
        verbose: bool = False,
        optimizer: str = "adam",
        negative_pool: int = 8,
        valid_metric: str = "ndcg@10",
    ) -> None:
        super().__init__(epochs, batch_size, lr, patience, eval_every, device, random_state, verbose, valid_metric)
        self.factors = factors
        self.reg = reg
        self.optimizer = optimizer
        self.negative_pool = negative_pool

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        return MF(n_users, n_items, self.factors)

    def _make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        return make_optimizer(OPTIMIZERS[self.optimizer], list(phase.module.parameters()), self.lr)

    def _prepare(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        c = self.training.cache
        coo = X.tocoo()
        c["pairs"] = (coo.row.astype(np.int64), coo.col.astype(np.int64))
        keys = np.sort(c["pairs"][0] * self.n_items_ + c["pairs"][1])
        c["keys"] = keys.astype(np.int32) if self.n_users_ * self.n_items_ < 2**31 else keys  # faster look-ups
        c["keys_t"] = torch.from_numpy(c["keys"]).to(self.device_) if self.device_.type != "cpu" else None
        c["bitmap"] = None  # one byte per (user, item) cell where that is small: a look-up without a search
        if self.device_.type == "cpu" and self.n_users_ * self.n_items_ <= BITMAP_MAX_CELLS:
            c["bitmap"] = np.zeros(self.n_users_ * self.n_items_, dtype=bool)
            c["bitmap"][keys] = True
        if self.optimizer == "sparse_adam" and (self.training.plugins or self.training.distributed):
            raise ConfigError(
                "optimizer 'sparse_adam' takes the written-out gradient; plug-ins (APR) and training over several "
                "processes need 'adam' or 'adagrad'"
            )

    def batches(self, X: sp.csr_matrix, rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        """The training pairs in this epoch's order, in batches {"users", "pos", "neg"}; each batch's negatives
        are picked when it is drawn, with the weights of that moment (see `_pick_negatives`)."""
        users_all, items_all = self.training.cache["pairs"]
        order = self.examples(np.arange(len(users_all)), rng)
        users, items = users_all[order], items_all[order]
        size = self.local_batch_size

        def draw() -> Iterator[dict[str, torch.Tensor]]:
            for start in range(0, len(order), size):
                part = slice(start, start + size)
                u, i = (torch.from_numpy(a[part]).to(self.device_) for a in (users, items))
                pool = rng.integers(0, self.n_items_, size=(len(u), self.negative_pool))  # uniform candidates
                j = self._pick_negatives(u, torch.from_numpy(pool).to(self.device_), rng)
                yield {"users": u, "pos": i, "neg": j}

        return draw()

    def phases(self) -> list[Phase]:
        return [Phase("train", self.batches, self._regularized_loss, self.network_)]

    def _regularized_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.batch_loss(batch, regularize=True)

    def _train_step(self, phase: Phase, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The written-out step, unless plug-ins (APR) or DDP need the loss's autograd graph."""
        t = self.training
        if t.plugins or t.distributed:
            return super()._train_step(phase, batch)
        return self._closed_form_step(batch, t.optimizers[phase.name]), {}

    def _pick_negatives(self, u: torch.Tensor, pool: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Per example, the candidate of `pool` (B × negative_pool uniform items) that the model scores highest
        among those the user has not interacted with; a uniform non-item where every candidate is an item of
        the user. With one candidate: a uniform non-item."""
        k = pool.shape[1]
        if k == 1:
            j = pool[:, 0].clone()
        else:
            with torch.no_grad():  # one candidate slot at a time: a (B, factors) block stays in cache
                ue = self._gather(self.network_.user.weight, u, "user")
                item, slots = self.network_.item.weight, pool.t()
                scores = torch.stack([torch.linalg.vecdot(self._gather(item, c, "pool"), ue) for c in slots], dim=1)
                pick = scores.max(1).indices
            j = pool.gather(1, pick.unsqueeze(1)).squeeze(1)
        todo = self._is_item_of(u, j).nonzero().squeeze(1)  # picks that are items of the user
        for _ in range(k - 1):  # strike those out and take the next best, checking only the rows that changed
            if not len(todo):
                break
            scores[todo, pick[todo]] = -torch.inf
            pick[todo] = scores[todo].max(1).indices
            j[todo] = pool[todo, pick[todo]]
            todo = todo[self._is_item_of(u[todo], j[todo])]
        if len(todo):  # every candidate was an item of the user
            fresh = sample_negatives(u[todo].cpu().numpy(), self.training.cache["keys"], self.n_items_, rng)
            j[todo] = torch.from_numpy(fresh).to(j.device)
        return j

    def _is_item_of(self, u: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Whether item j[b] is one of user u[b]'s training items: a byte per cell when users × items is at most
        `BITMAP_MAX_CELLS`, else a search in the sorted user·n_items + item keys (numpy's on the CPU, ~15× faster
        there than torch's)."""
        query = u * self.n_items_ + j
        if query.device.type == "cpu":
            bitmap = self.training.cache.get("bitmap")
            if bitmap is not None:
                return torch.from_numpy(bitmap[query.numpy()])
            keys = self.training.cache["keys"]
            q = query.numpy().astype(keys.dtype, copy=False)
            return torch.from_numpy(keys[np.minimum(np.searchsorted(keys, q), len(keys) - 1)] == q)
        keys_t = self.training.cache["keys_t"]
        return keys_t[torch.searchsorted(keys_t, query).clamp_(max=len(keys_t) - 1)] == query

    def _closed_form_step(self, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One update with the gradient of `batch_loss(batch, regularize=True)` written out (no autograd graph).

        With x = ⟨u, i − j⟩, c = −σ(−x)/B and r = 2·reg/B: ∇u = c·(i − j) + r·u, ∇i = c·u + r·i, ∇j = −c·u + r·j,
        summed into the rows each example touches.
        """
        net = self.network_
        u, i, j = batch["users"], batch["pos"], batch["neg"]
        n, r = len(u), 2 * self.reg / len(u)
        with torch.no_grad():
            ue = self._gather(net.user.weight, u, "user")
            ie, je = self._gather(net.item.weight, i, "pos"), self._gather(net.item.weight, j, "neg")
            diff = torch.sub(ie, je, out=self._scratch("diff", n))
            x = torch.linalg.vecdot(ue, diff)
            squares = sum(torch.dot(e.view(-1), e.view(-1)) for e in (ue, ie, je))
            loss = F.softplus(-x).mean() + self.reg * squares / n
            c = torch.sigmoid(-x).div_(-n).unsqueeze(1)
            user_rows = diff.mul_(c).add_(ue, alpha=r)
            gi = ue.mul_(c)
            pos_rows, neg_rows = ie.mul_(r).add_(gi), je.mul_(r).sub_(gi)
            if self.optimizer == "sparse_adam":  # the rows of the batch only, duplicates summed by the optimizer
                net.user.weight.grad = sparse_rows(u, user_rows, net.user.weight.shape)
                net.item.weight.grad = sparse_rows(
                    torch.cat([i, j]), torch.cat([pos_rows, neg_rows]), net.item.weight.shape
                )
            else:
                grad_buffer(net.user.weight).index_add_(0, u, user_rows)
                item_grad = grad_buffer(net.item.weight)
                item_grad.index_add_(0, i, pos_rows)
                item_grad.index_add_(0, j, neg_rows)
        optimizer.step()
        return loss

    def _scratch(self, name: str, rows: int) -> torch.Tensor:
        """A (rows, factors) block kept from batch to batch: a fresh large tensor per batch costs page faults (and,
        under deterministic algorithms, a NaN fill) that take longer than the arithmetic on it."""
        cache = self.training.cache
        buf = cache.get(name)
        if buf is None or len(buf) < rows:
            buf = cache[name] = torch.empty(rows, self.factors, device=self.device_)
        return buf[:rows]

    def _gather(self, table: torch.Tensor, index: torch.Tensor, name: str) -> torch.Tensor:
        """Rows `index` of `table`, written into the scratch block `name`."""
        return torch.index_select(table, 0, index, out=self._scratch(name, len(index)))

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

    def attack_batches(self, X: Any, rng: np.random.Generator, batch_size: int) -> list[dict[str, torch.Tensor]]:
        """Every (user, item) of `X` with one negative drawn by `rng`, in batches of `batch_size` triples: the
        examples of the BPR loss an attack on the embeddings raises (`advrec.robustness.perturb`)."""
        coo = as_csr(X, "training data").tocoo()
        u, i = coo.row.astype(np.int64), coo.col.astype(np.int64)
        j = sample_negatives(u, np.sort(u * coo.shape[1] + i), coo.shape[1], rng)
        t = [torch.from_numpy(a).to(self.device_) for a in (u, i, j)]
        return [
            {"users": t[0][s : s + batch_size], "pos": t[1][s : s + batch_size], "neg": t[2][s : s + batch_size]}
            for s in range(0, len(u), batch_size)
        ]

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            u = self.network_.user(torch.from_numpy(users).to(self.device_))
            return (u @ self.network_.item.weight.T).cpu().numpy()

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item factor matrices."""
        self._check_fitted()
        return (self.network_.user.weight.detach().cpu().numpy(), self.network_.item.weight.detach().cpu().numpy())
