"""UniSRec (Hou et al., KDD 2022): a causal transformer over items represented by their text, so that items never
seen in training are recommended from their text alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from advrec.data.interactions import Interactions
from advrec.errors import DataError
from advrec.models.base import Learned
from advrec.models.params import Choice, Dimension, Float, Int, Interval, TupleOf, declare
from advrec.models.sasrec import SASRec, SASRecNet
from advrec.models.torch_base import TorchRecommender, Valid
from advrec.text.item_text import encode_items


class MoEAdaptor(nn.Module):
    """Parametric whitening experts mixed by a gate: a(x) = Σ_k softmax(x G)_k · (x − b_k) W_k (UniSRec, eq. 2–4)."""

    def __init__(self, text_dim: int, dim: int, experts: int, dropout: float) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(experts, text_dim))
        self.proj = nn.Parameter(torch.empty(experts, text_dim, dim))
        nn.init.xavier_normal_(self.proj)
        self.gate = nn.Linear(text_dim, experts, bias=False)
        nn.init.zeros_(self.gate.weight)  # the experts start equally weighted
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, text_dim) text vectors → (n, dim) item representations."""
        x = self.drop(x)
        experts = torch.einsum("nt,ktd->nkd", x, self.proj) - torch.einsum("kt,ktd->kd", self.bias, self.proj)[None]
        weights = torch.softmax(self.gate(x), dim=-1)
        return (weights.unsqueeze(-1) * experts).sum(1)


class UniSRecNet(nn.Module):
    """The items' text vectors (a buffer, frozen), the adaptor, optional item-ID embeddings added to the adapted
    text (`ids`), and SASRec's causal transformer over the resulting item table."""

    def __init__(self, n_items: int, text_dim: int, dim: int, experts: int, adaptor_dropout: float, ids: bool,
                 blocks: int, heads: int, dropout: float, max_len: int) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("text", torch.zeros(n_items, text_dim))
        self.adaptor = MoEAdaptor(text_dim, dim, experts, adaptor_dropout)
        # the backbone's own embedding holds the item IDs (row 0 padding), or only the padding row without them
        self.backbone = SASRecNet(n_items if ids else 0, dim, blocks, heads, dropout, max_len)
        self.ids = ids

    def table(self) -> torch.Tensor:
        """(n_items + 1, dim): row 0 the padding (zeros), row i + 1 item i's adapted text (+ its ID vector)."""
        text = cast(torch.Tensor, self.text)
        reps = self.adaptor(text)
        table = torch.cat([torch.zeros(1, reps.shape[1], dtype=reps.dtype, device=reps.device), reps])
        return table + self.backbone.item.weight if self.ids else table


class UniSRec(SASRec):
    """UniSRec: item i is represented by its text, v_i = a(t_i) (+ e_i with `ids=True`, the paper's
    transductive "t + ID" setting), t_i the frozen sentence-encoder vector of its text and a the MoE whitening
    adaptor (`MoEAdaptor`); a user's sequence is read by SASRec's causal transformer into h, and

        score(i | s) = cos(h, v_i) / τ,

    trained with the cross-entropy of the next item over all items (each position of each training sequence).
    Without `ids` nothing is learned per item (the inductive setting): an item without any interaction is scored
    from its text like every other. This implementation trains on the target data only (the paper also pretrains
    the transformer and adaptor on other domains first).

    `encoder`: a local sentence-transformers model folder (None: the offline all-MiniLM-L6-v2); `columns`: the item
    columns whose text is encoded (None: `item_texts`'s default). Text vectors are cached by the encoder.
    """

    _parameter_constraints = declare(
        SASRec._parameter_constraints,
        drop=("loss", "negatives", "weight_decay"),
        encoder=[str, None],
        columns=[TupleOf(str, min_len=1), None],
        experts=[Interval(int, 1, None, closed="left")],
        adaptor_dropout=[Interval(float, 0, 1, closed="left")],
        ids=[bool],
        temperature=[Interval(float, 0, None, closed="neither")],
    )
    _search_space: ClassVar[dict[str, Dimension]] = {
        "dim": Choice((32, 64, 128)),
        "dropout": Float(0.0, 0.5),
        "temperature": Float(0.02, 0.5, log=True),
        "experts": Int(1, 8),
        "lr": Float(1e-4, 1e-2, log=True),
    }
    _required_state: ClassVar[dict[str, Learned]] = {
        "text_dim_": Learned("value"),
        "encoder_identity_": Learned("value"),
    }

    _batch_table: torch.Tensor | None = None  # the item table of the current training batch's loss
    _perturbation: torch.Tensor | None = None  # an attack's Δ on the item table (an attacked copy)

    def __init__(
        self,
        encoder: str | None = None,
        columns: Sequence[str] | None = None,
        experts: int = 8,
        adaptor_dropout: float = 0.2,
        ids: bool = False,
        temperature: float = 0.07,
        dim: int = 64,
        blocks: int = 2,
        heads: int = 2,
        dropout: float = 0.5,
        max_len: int = 50,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-3,
        patience: int = 10,
        eval_every: int = 1,
        device: str = "auto",
        random_state: int | None = 2020,
        verbose: bool = False,
        valid_metric: str = "ndcg@10",
    ) -> None:
        super().__init__(
            dim, blocks, heads, dropout, max_len, "ce", 1000, 0.0, epochs, batch_size, lr, patience, eval_every,
            device, random_state, verbose, valid_metric,
        )  # fmt: skip
        self.encoder = encoder
        self.columns = columns
        self.experts = experts
        self.adaptor_dropout = adaptor_dropout
        self.ids = ids
        self.temperature = temperature

    def fit(
        self,
        X: Interactions | sp.spmatrix,
        valid: Valid = None,
        init: TorchRecommender | Mapping[str, torch.Tensor] | None = None,
        plugins: Any = (),
        checkpoint: Any = None,
    ) -> UniSRec:
        """Encodes every item's text (`X` must be Interactions with item features and timestamps), then trains."""
        self._check_fit_input(X)
        if not isinstance(X, Interactions):
            raise DataError("UniSRec needs Interactions with item text and timestamps, not a bare matrix")
        vectors, self.encoder_identity_ = encode_items(X, self.columns, self.encoder, self.device)
        self._text_vectors = np.asarray(vectors, dtype=np.float32)
        self.text_dim_ = int(self._text_vectors.shape[1])
        try:
            super().fit(X, valid, init=init, plugins=plugins, checkpoint=checkpoint)
        finally:
            del self._text_vectors
            self._batch_table = None
        return self

    @property
    def unisrec(self) -> UniSRecNet:
        return cast(UniSRecNet, self.network_)

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        net = UniSRecNet(n_items, self.text_dim_, self.dim, self.experts, self.adaptor_dropout, self.ids,
                         self.blocks, self.heads, self.dropout, self.max_len)  # fmt: skip
        vectors = getattr(self, "_text_vectors", None)
        if vectors is not None:
            if vectors.shape[0] != n_items:
                raise DataError(f"{vectors.shape[0]} item texts for {n_items} items")
            cast(torch.Tensor, net.text).copy_(torch.from_numpy(vectors))
        return net

    @property
    def backbone(self) -> SASRecNet:
        return self.unisrec.backbone

    def item_table(self, tables: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The adaptor's output (+ ID vectors) as the item table, plus an attack's perturbation if one was added;
        from `tables` when given. In training the table of the current batch is kept for `embedding_tables`."""
        if tables is not None:
            return tables["item"]
        table = self.unisrec.table()
        if self._perturbation is not None:
            table = table + self._perturbation
        if getattr(self, "_training", None) is not None:
            self._batch_table = table
        return table

    def _output(self, states: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarity over the temperature: unit states scaled by 1/τ, unit item vectors."""
        return F.normalize(states, dim=-1) / self.temperature, F.normalize(items, dim=-1)

    def embedding_tables(self) -> dict[str, torch.Tensor]:
        """The item representations (the adaptor's output): in training the table of the current batch's loss
        (what APR differentiates), otherwise computed afresh. Nothing here is a parameter: an attack's
        perturbation is kept beside the model (`add_perturbation`) and added to every table it computes."""
        if self._batch_table is not None and getattr(self, "_training", None) is not None:
            return {"item": self._batch_table}
        return {"item": self.item_table()}

    def add_perturbation(self, delta: dict[str, torch.Tensor]) -> None:
        """Adds `delta["item"]` to the item representations from now on (an attacked copy; not saved)."""
        shift = delta["item"].detach().clone()
        self._perturbation = shift if self._perturbation is None else self._perturbation + shift

    def text_vectors(self) -> np.ndarray:
        """The items' frozen text vectors (n_items, text_dim)."""
        self._check_fitted()
        return cast(torch.Tensor, self.unisrec.text).cpu().numpy()
