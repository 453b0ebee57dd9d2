"""Adversarial perturbations of embedding models: APR training (He et al., SIGIR 2018) and FGSM / PGD attacks.

Works with any model that exposes its embedding tables and a batch loss computed from given tables:

- `embedding_tables() -> {name: tensor}`: the learned tables (rows = user or item vectors);
- `batch_loss(batch, tables=None) -> loss`: the training loss of a batch, computed with `tables` in place of the
  learned ones when given;
- `attack_batches(X, rng, batch_size) -> [batch, ...]`: the examples of the training loss on `X`, in batches (what an
  attack raises the loss of).

BPRMF and LightGCN (user and item tables, BPR triples), SASRec (the item table shared by its input and output,
next-item cross-entropy over each user's sequence) and UniSRec (its item representations, the text adaptor's output)
implement them. A model whose tables are computed rather than learned (UniSRec) also has `add_perturbation(delta)`,
which keeps an attack's Δ and adds it to every table it computes. A perturbation Δ gives each table row an L2
norm of at most `eps`; the fast-gradient (FGSM) direction is the row-normalised gradient of the loss, as in the
APR paper.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from advrec.data.interactions import Interactions
from advrec.data.splits import Split, as_generator
from advrec.devices import deterministic
from advrec.errors import ConfigError
from advrec.evaluation import evaluate
from advrec.models.torch_base import TorchRecommender, TrainingPlugin, batch_size_of

ATTACKS = ("fgsm", "pgd")


@runtime_checkable
class EmbeddingModel(Protocol):
    def embedding_tables(self) -> dict[str, torch.Tensor]: ...

    def batch_loss(self, batch: Any, tables: dict[str, torch.Tensor] | None = None) -> torch.Tensor: ...

    def attack_batches(self, X: Any, rng: np.random.Generator, batch_size: int) -> list[Any]: ...


def _check_model(model: Any) -> None:
    if not isinstance(model, EmbeddingModel) or not isinstance(model, TorchRecommender):
        raise ConfigError(
            f"{type(model).__name__} has no embedding tables to perturb; adversarial perturbations need a torch "
            "model with embedding_tables(), batch_loss() and attack_batches() (BPRMF, LightGCN, SASRec, UniSRec)"
        )


def _check_eps(eps: float, name: str = "eps") -> None:
    if not np.isfinite(eps) or eps < 0:
        raise ConfigError(f"{name} must be a finite number ≥ 0, got {eps}")


def fast_gradient(grads: dict[str, torch.Tensor], eps: float) -> dict[str, torch.Tensor]:
    """Δ = eps · g / ‖g‖ per row (rows with a zero gradient stay unperturbed)."""
    return {name: eps * F.normalize(g, dim=1) for name, g in grads.items()}


def project(delta: dict[str, torch.Tensor], eps: float) -> dict[str, torch.Tensor]:
    """Rows of Δ scaled down to L2 norm ≤ eps."""
    out = {}
    for name, d in delta.items():
        norm = d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out[name] = d * torch.clamp(eps / norm, max=1.0)
    return out


# ---------------------------------------------------------------------------------------------- APR training
class APR(TrainingPlugin):
    """APR's training term as a plug-in of the training loop: adds adv_reg · L(Θ + Δ_adv) to each batch loss,
    Δ_adv the fast-gradient perturbation (row norms `eps`) of the batch's own loss."""

    def __init__(self, eps: float, adv_reg: float) -> None:
        _check_eps(eps)
        _check_eps(adv_reg, "adv_reg")
        self.eps = eps
        self.adv_reg = adv_reg

    def loss(self, model: TorchRecommender, batch: Any, loss: torch.Tensor) -> torch.Tensor:
        m = cast(EmbeddingModel, model)
        tables = m.embedding_tables()
        names = list(tables)
        grads = torch.autograd.grad(loss, [tables[n] for n in names], retain_graph=True)
        delta = fast_gradient(dict(zip(names, grads, strict=True)), self.eps)
        adv = m.batch_loss(batch, {n: tables[n] + delta[n] for n in names})
        return loss + self.adv_reg * adv


def adversarial_fit(
    model: TorchRecommender,
    X: Interactions | sp.spmatrix,
    valid: Any = None,
    eps: float = 0.5,
    adv_reg: float = 1.0,
    pretrained: TorchRecommender | None = None,
) -> TorchRecommender:
    """APR: `model`'s training continued with adversarial perturbations from a normally trained start.

    The start is `pretrained` when given, else `model` trained as usual on `X`. Then training resumes from
    its weights with the loss L(Θ) + adv_reg · L(Θ + Δ_adv), for `model.epochs` epochs (early stopping on
    `valid` when given). Returns a new fitted model of `model`'s class; its `adversarial_` records the setting.
    """
    _check_model(model)
    start = pretrained if pretrained is not None else model.clone().fit(X, valid=valid)
    plugin = APR(eps, adv_reg)
    adv = model.clone().fit(X, valid=valid, init=start, plugins=[plugin])
    adv.adversarial_ = {  # type: ignore[attr-defined]
        "method": "APR", "eps": float(eps), "adv_reg": float(adv_reg),
        "pretrain_epochs": int(getattr(start, "epochs_run_", 0)),
    }  # fmt: skip
    return adv


# ---------------------------------------------------------------------------------------------- attacks
def _loss_gradient(
    model: EmbeddingModel, tables: dict[str, torch.Tensor], batches: list[Any]
) -> dict[str, torch.Tensor]:
    """Gradient of the loss summed over the examples of all `batches` w.r.t. the (perturbed) tables."""
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in tables.items()}
    with deterministic():  # gradients of embedding look-ups accumulate in a thread-count-dependent order otherwise
        for batch in batches:
            loss = model.batch_loss(batch, leaves) * batch_size_of(batch)
            loss.backward()
    return {n: cast(torch.Tensor, leaf.grad) for n, leaf in leaves.items()}


def attack_embeddings(
    model: TorchRecommender,
    X: Interactions | sp.spmatrix,
    eps: float,
    method: str = "fgsm",
    steps: int = 10,
    step_size: float | None = None,
    batch_size: int = 65536,
    random_state: int | np.random.Generator | None = 0,
) -> TorchRecommender:
    """A copy of `model` whose embedding tables carry the perturbation (row norms ≤ `eps`) that most raises its
    training loss on `X`: one fast-gradient step ("fgsm") or `steps` projected steps of `step_size` ("pgd",
    default step eps/4). Negatives (of a BPR model) are sampled once, with `random_state`; `batch_size` examples
    per gradient batch (BPR triples; a sequential model takes its own batch size of sequences).
    """
    _check_model(model)
    model._check_fitted()
    _check_eps(eps)
    if method not in ATTACKS:
        raise ConfigError(f"method must be one of {', '.join(ATTACKS)}, not {method!r}")
    if method == "pgd" and steps < 1:
        raise ConfigError(f"pgd needs steps ≥ 1, got {steps}")
    m = cast(EmbeddingModel, model)
    attacked = copy.deepcopy(model)
    if eps == 0:
        return attacked
    a = cast(EmbeddingModel, attacked)
    batches = m.attack_batches(X, as_generator(random_state), batch_size)
    base = {n: t.detach() for n, t in m.embedding_tables().items()}
    model.network_.eval()
    if method == "fgsm":
        delta = fast_gradient(_loss_gradient(m, base, batches), eps)
    else:
        size = eps / 4 if step_size is None else step_size
        delta = {n: torch.zeros_like(t) for n, t in base.items()}
        for _ in range(steps):
            grads = _loss_gradient(m, {n: base[n] + delta[n] for n in base}, batches)
            step = fast_gradient(grads, size)
            delta = project({n: delta[n] + step[n] for n in base}, eps)
    with torch.no_grad():
        if hasattr(a, "add_perturbation"):
            a.add_perturbation(delta)
        else:
            for name, table in a.embedding_tables().items():
                table.add_(delta[name])
    return attacked


def robustness_curve(
    model: TorchRecommender,
    split: Split,
    eps: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    methods: Sequence[str] = ATTACKS,
    ks: Sequence[int] = (10,),
    steps: int = 10,
    random_state: int | np.random.Generator | None = 0,
    on: str = "test",
) -> pd.DataFrame:
    """NDCG@K (and Recall@K) on `split`'s test part (`on="valid"`: validation, to choose a defence's setting) with
    the embeddings under attack, for each method and eps.

    One row per (method, eps), with eps = 0 the clean model; `share` is NDCG@K over the clean NDCG@K.
    """
    k = max(ks)
    clean = evaluate(model, split, ks=ks, on=on, metrics=("ndcg", "recall")).summary
    rows = [{"method": "clean", "eps": 0.0, **clean}]
    for method in methods:
        for e in eps:
            attacked = attack_embeddings(model, split.train, e, method, steps=steps, random_state=random_state)
            rows.append({"method": method, "eps": float(e),
                         **evaluate(attacked, split, ks=ks, on=on, metrics=("ndcg", "recall")).summary})  # fmt: skip
    df = pd.DataFrame(rows)
    df["share"] = df[f"ndcg@{k}"] / clean[f"ndcg@{k}"] if clean[f"ndcg@{k}"] > 0 else np.nan
    return df
