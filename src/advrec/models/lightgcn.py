"""`LightGCN` (He et al., SIGIR 2020): embeddings smoothed over the user-item graph, trained with BPR."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from advrec.models.base import Learned
from advrec.models.bpr import BPRMF, MF, sample_negatives
from advrec.models.params import Dimension, Float, Int, Interval, Options, declare
from advrec.models.torch_base import Phase, TorchRecommender


def normalized_adjacency(X: sp.csr_matrix) -> sp.csr_matrix:
    """Â = D^{-1/2} A D^{-1/2} of the bipartite graph A = [[0, R], [Rᵀ, 0]] (users first, then items); nodes
    without edges keep a zero row."""
    R = sp.csr_matrix((np.ones(X.nnz, dtype=np.float32), X.indices, X.indptr), shape=X.shape)
    A = sp.bmat([[None, R], [R.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(A.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    D = sp.diags(inv_sqrt.astype(np.float32))
    return (D @ A @ D).tocsr().astype(np.float32)


def to_torch_csr(m: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """`m` as a torch CSR tensor (products with it have gradients for the dense operand)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return _csr(m, device)


def _csr(m: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    return torch.sparse_csr_tensor(
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.data),
        size=m.shape,
        device=device,
        check_invariants=False,  # built by scipy: sorted, in range
    )


class _SymmetricProduct(torch.autograd.Function):
    """Â @ x for a symmetric sparse Â: the gradient is Â @ g (torch's CSR backward transposes Â each call)."""

    @staticmethod
    def forward(ctx: Any, graph: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.graph = graph
        return graph @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
        return None, ctx.graph @ grad


class LightGCN(BPRMF):
    """LightGCN: the layer-0 user and item embeddings E⁽⁰⁾ are the only weights; layer k is E⁽ᵏ⁾ = Â E⁽ᵏ⁻¹⁾ with
    Â = D^{-1/2} A D^{-1/2} the symmetrically normalised user-item adjacency, and the final embedding is the mean
    E = Σ_{k=0..K} E⁽ᵏ⁾ / (K + 1); score(u, i) = ⟨e_u, e_i⟩. The loss is BPR on the final embeddings plus
    `reg` · ‖E⁽⁰⁾ of the batch‖² / (2·B) (the paper's L2 on the layer-0 embeddings of the batch).

    Every batch propagates the whole graph (as the paper does): an epoch costs (batches × `layers`) sparse
    products with Â ((users + items) × `factors`). Negatives: uniform (`negative_pool=1`, the paper's), or the
    best-scored of `negative_pool` uniform candidates, scored with the final embeddings of the last batch.
    Defaults are the paper's (64 factors, 3 layers, Adam lr 1e-3, batches of 2,048, reg 1e-4, normal init with
    std 0.1) except the validation schedule. The final embeddings are kept after fitting (`user_factors_`,
    `item_factors_`), so scoring needs no graph.
    """

    _parameter_constraints = declare(
        BPRMF._parameter_constraints,
        layers=[Interval(int, 0, None, closed="left")],
        optimizer=[Options(("adam", "adagrad"))],  # every embedding changes each step: no row-sparse updates
    )
    _search_space: ClassVar[dict[str, Dimension]] = {
        "layers": Int(1, 4),
        "lr": Float(5e-4, 1e-2, log=True),
        "reg": Float(1e-5, 1e-2, log=True),
    }
    _required_state: ClassVar[dict[str, Learned]] = {
        "user_factors_": Learned("float", ("users", None)),
        "item_factors_": Learned("float", ("items", None)),
    }
    cpu_train_threads: ClassVar[int | None] = None  # the sparse products over the whole graph use every thread

    def __init__(
        self,
        factors: int = 64,
        layers: int = 3,
        reg: float = 1e-4,
        epochs: int = 400,
        batch_size: int = 2048,
        lr: float = 1e-3,
        patience: int = 5,
        eval_every: int = 5,
        device: str = "auto",
        random_state: int | None = 2020,
        verbose: bool = False,
        optimizer: str = "adam",
        negative_pool: int = 1,
        valid_metric: str = "ndcg@10",
    ) -> None:
        super().__init__(
            factors, reg, epochs, batch_size, lr, patience, eval_every, device, random_state, verbose, optimizer,
            negative_pool, valid_metric,
        )  # fmt: skip
        self.layers = layers

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        net = MF(n_users, n_items, self.factors)
        nn.init.normal_(net.user.weight, std=0.1)
        nn.init.normal_(net.item.weight, std=0.1)
        return net

    def _prepare(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        super()._prepare(X, rng)
        self.training.cache["graph"] = to_torch_csr(normalized_adjacency(X), self.device_)

    def propagate(self, tables: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The final user and item embeddings from the layer-0 `tables` (default: the learned ones)."""
        t = tables or self.embedding_tables()
        graph = self.training.cache["graph"]
        layer = torch.cat([t["user"], t["item"]])
        total = layer
        for _ in range(self.layers):
            layer = _SymmetricProduct.apply(graph, layer)
            total = total + layer
        final = total / (self.layers + 1)
        return final[: self.n_users_], final[self.n_users_ :]

    def phases(self) -> list[Phase]:
        return [Phase("train", self.batches, self._regularized_loss, self.network_)]

    def _train_step(self, phase: Phase, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        out = TorchRecommender._train_step(self, phase, batch)
        self.training.cache.pop("final", None)  # the weights changed: recomputed when next needed
        return out

    def batch_loss(
        self, batch: dict[str, torch.Tensor], tables: dict[str, torch.Tensor] | None = None, regularize: bool = False
    ) -> torch.Tensor:
        """Mean BPR loss of a batch {"users", "pos", "neg"} on the final embeddings propagated from `tables` (the
        layer-0 tables, e.g. perturbed ones; default the learned ones); `regularize` adds the layer-0 L2 term."""
        t = tables or self.embedding_tables()
        users, items = self.propagate(t)
        u, i, j = batch["users"], batch["pos"], batch["neg"]
        ue = users[u]
        x = (ue * (items[i] - items[j])).sum(-1)
        loss = -torch.nn.functional.logsigmoid(x).mean()
        self.training.cache["last_final"] = (users.detach(), items.detach())  # for the next batch's negatives
        if regularize:
            squares = t["user"][u].pow(2).sum() + t["item"][i].pow(2).sum() + t["item"][j].pow(2).sum()
            loss = loss + self.reg * squares / (2 * len(u))
        return loss

    def _final(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The final embeddings of the current weights (cached until the next step)."""
        cache = self.training.cache
        if "final" not in cache:
            with torch.no_grad():
                cache["final"] = self.propagate()
        return cache["final"]

    def _pick_negatives(self, u: torch.Tensor, pool: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if pool.shape[1] == 1:
            return super()._pick_negatives(u, pool, rng)
        cache = self.training.cache
        users, items = cache["last_final"] if "last_final" in cache else self._final()
        with torch.no_grad():
            scores = torch.einsum("bd,bkd->bk", users[u], items[pool])
            scores[self._is_item_of(u.repeat_interleave(pool.shape[1]), pool.reshape(-1)).view_as(scores)] = -torch.inf
            pick = scores.max(1).indices
        j = pool.gather(1, pick.unsqueeze(1)).squeeze(1)
        todo = torch.isinf(scores.max(1).values).nonzero().squeeze(1)  # every candidate was an item of the user
        if len(todo):
            fresh = sample_negatives(u[todo].cpu().numpy(), self.training.cache["keys"], self.n_items_, rng)
            j[todo] = torch.from_numpy(fresh).to(j.device)
        return j

    def _fit_loop(self, *args: Any, **kwargs: Any) -> None:
        super()._fit_loop(*args, **kwargs)
        self.training.cache.pop("final", None)  # the kept (best) weights' final embeddings
        users, items = self._final()
        self.user_factors_ = users.cpu().numpy()
        self.item_factors_ = items.cpu().numpy()

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        if getattr(self, "_training", None) is not None:  # validation during the fit
            final_users, final_items = self._final()
        else:
            final_users = torch.from_numpy(self.user_factors_).to(self.device_)
            final_items = torch.from_numpy(self.item_factors_).to(self.device_)
        with torch.no_grad():
            return (final_users[torch.from_numpy(users).to(self.device_)] @ final_items.T).cpu().numpy()

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """The final (propagated) user and item embeddings."""
        self._check_fitted()
        return self.user_factors_, self.item_factors_
