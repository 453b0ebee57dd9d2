"""SASRec (Kang & McAuley, ICDM 2018): a causal transformer over each user's latest items."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from advrec.data.sequences import sequences
from advrec.errors import ConfigError
from advrec.models.params import Choice, Dimension, Float, Int, Interval, Options, declare
from advrec.models.sequential import SequentialRecommender
from advrec.models.torch_base import Phase

LOSSES = ("ce", "sampled", "bce")
SCORE_BATCH = 256  # users per forward pass when scoring (bounds the attention masks' memory)


class Block(nn.Module):
    """One SASRec block: Q = LN(x), x = Q + Attention(Q, x, x); y = LN(x), x = y + FFN(y) (the authors' order)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim, eps=1e-8)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.norm_attn(x)
        x = q + self.attn(q, x, x, attn_mask=mask, need_weights=False)[0]
        y = self.norm_ffn(x)
        return y + self.ffn(y)


class SASRecNet(nn.Module):
    """Item (row 0: padding) and position embeddings, `blocks` causal blocks, a final LayerNorm.

    Position i attends to positions j ≤ i that hold an item (a padding position attends to itself only), so
    nothing later in a sequence, and no padding, reaches a prediction.
    """

    def __init__(self, n_items: int, dim: int, blocks: int, heads: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.heads = heads
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.position = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim, eps=1e-8)
        # N(0, 0.02) for embeddings and linear layers, zero biases (Klenitskiy & Vasilev's and RecBole's SASRec;
        # on ml-1m it reaches in 5 epochs the validation NDCG@10 that Xavier's initialisation reaches in 9)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def mask(self, seq: torch.Tensor) -> torch.Tensor:
        """(batch · heads, L, L) True where attention is not allowed: later positions, and padding keys."""
        length = seq.shape[1]
        later = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
        pad_key = (seq == 0)[:, None, :] & ~torch.eye(length, dtype=torch.bool, device=seq.device)
        return (later | pad_key).repeat_interleave(self.heads, dim=0)

    def forward(self, seq: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, L ≤ max_len) item index + 1, left-padded with 0 → (batch, L, dim): position i's state sees items
        0..i. Positions count from the end, so leading padding columns may be left out without changing a state.
        `table`: item embeddings to use in place of the learned ones (a perturbed table)."""
        length, max_len = seq.shape[1], self.position.num_embeddings
        pos = torch.arange(max_len - length, max_len, device=seq.device)  # right-aligned: the latest item is last
        items = self.item(seq) if table is None else F.embedding(seq, table, padding_idx=0)
        x = items * self.item.embedding_dim**0.5 + self.position(pos)[None]
        keep = (seq > 0).unsqueeze(-1).to(x.dtype)
        x = self.drop(x) * keep
        mask = self.mask(seq)
        for block in self.blocks:
            x = block(x, mask) * keep
        return self.norm(x)


def trim(seq: torch.Tensor) -> torch.Tensor:
    """`seq` without its leading columns of padding only (left-padded sequences; at least one column kept)."""
    filled = (seq > 0).any(0).nonzero()
    return seq[:, int(filled[0]) :] if len(filled) else seq[:, -1:]


class SASRec(SequentialRecommender):
    """SASRec: for a user's sequence s_1..s_t (the latest `max_len` items), h_t = Transformer(E[s_1..t] + P)_t and

        score(i | s_1..t) = h_t · E_i,

    E the item embeddings (shared by input and output), P learned position embeddings, causal self-attention.
    Training predicts s_{j+1} from h_j at every position j of each training sequence, with

    - `loss="ce"`: the cross-entropy over all items, −log softmax(h_j Eᵀ)_{s_{j+1}} (Klenitskiy & Vasilev, RecSys
      2023: the loss that lets SASRec beat BERT4Rec);
    - `loss="sampled"`: the same over the target and `negatives` items drawn uniformly per batch (shared by its
      positions; a draw equal to the target is masked): for large catalogues, since "ce" holds a (positions in the
      batch) × n_items logit block (128 users × 200 positions × 100k items would be 10 GB);
    - `loss="bce"`: the paper's binary cross-entropy with one uniform negative per position.

    Defaults are Klenitskiy & Vasilev's for MovieLens-1M: 2 blocks, 64 dimensions, 1 head, dropout 0.1, max_len
    200, batches of 128 users, Adam lr 1e-3, early stopping after 10 epochs without a better validation NDCG@10.
    """

    _parameter_constraints = declare(
        SequentialRecommender._parameter_constraints,
        dim=[Interval(int, 1, None, closed="left")],
        blocks=[Interval(int, 1, None, closed="left")],
        heads=[Interval(int, 1, None, closed="left")],
        dropout=[Interval(float, 0, 1, closed="left")],
        loss=[Options(LOSSES)],
        negatives=[Interval(int, 1, None, closed="left")],
        weight_decay=[Interval(float, 0, None, closed="left")],
    )
    _search_space: ClassVar[dict[str, Dimension]] = {
        "dim": Choice((32, 64, 128)),
        "blocks": Int(1, 3),
        "dropout": Float(0.0, 0.5),
        "lr": Float(1e-4, 1e-2, log=True),
    }

    def __init__(
        self,
        dim: int = 64,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.1,
        max_len: int = 200,
        loss: str = "ce",
        negatives: int = 1000,
        weight_decay: float = 0.0,
        epochs: int = 100,
        batch_size: int = 128,
        lr: float = 1e-3,
        patience: int = 10,
        eval_every: int = 1,
        device: str = "auto",
        random_state: int | None = 2020,
        verbose: bool = False,
        valid_metric: str = "ndcg@10",
    ) -> None:
        super().__init__(epochs, batch_size, lr, patience, eval_every, device, random_state, verbose, valid_metric)
        self.dim = dim
        self.blocks = blocks
        self.heads = heads
        self.dropout = dropout
        self.max_len = max_len
        self.loss = loss
        self.negatives = negatives
        self.weight_decay = weight_decay

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")

    @property
    def net(self) -> SASRecNet:
        return cast(SASRecNet, self.network_)

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        return SASRecNet(n_items, self.dim, self.blocks, self.heads, self.dropout, self.max_len)

    def _make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        return torch.optim.Adam(phase.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def batch_loss(
        self, batch: np.ndarray | torch.Tensor, tables: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The loss of a batch of users (their training sequences) or of sequences (batch, max_len + 1); `tables`:
        {"item": table} in place of the learned item embeddings (APR's perturbed ones). Outside training (an attack)
        the loss is the full cross-entropy whatever `loss` is."""
        seq = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(self.batch_sequences(batch))
        seq = trim(seq.to(self.device_))
        table = self.item_table(tables)
        inputs, targets = seq[:, :-1], seq[:, 1:]
        states = self.backbone(inputs, table)
        known = (inputs > 0) & (targets > 0)  # a position with an item before the target
        h, weights = self._output(states[known], table[1:])
        target = targets[known] - 1
        training = getattr(self, "_training", None) is not None
        if self.loss == "ce" or not training:
            return F.cross_entropy(h @ weights.T, target)
        rng = self.training.rng
        if self.loss == "bce":
            neg = torch.from_numpy(rng.integers(0, self.n_items_, len(target))).to(self.device_)
            pos_logit = (h * weights[target]).sum(-1)
            neg_logit = (h * weights[neg]).sum(-1)
            return F.softplus(-pos_logit).mean() + F.softplus(neg_logit).mean()
        neg = torch.from_numpy(rng.integers(0, self.n_items_, self.negatives)).to(self.device_)
        pos_logit = (h * weights[target]).sum(-1, keepdim=True)
        neg_logit = h @ weights[neg].T
        neg_logit = neg_logit.masked_fill(neg[None, :] == target[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(target), dtype=torch.long, device=self.device_))

    @property
    def backbone(self) -> SASRecNet:
        """The causal transformer (`SASRecNet`): sequences and an item table → states."""
        return self.net

    def item_table(self, tables: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The (n_items + 1, dim) item representations read by the input and the output (row 0: padding); from
        `tables` when given (a perturbed table)."""
        return self.net.item.weight if tables is None else tables["item"]

    def _output(self, states: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(states, item vectors) whose inner products are the logits (here as they are)."""
        return states, items

    def embedding_tables(self) -> dict[str, torch.Tensor]:
        """The item embedding table (input and output; row 0 is the padding): what APR and attacks perturb."""
        return {"item": self.net.item.weight}

    def attack_batches(self, X: Any, rng: np.random.Generator, batch_size: int) -> list[torch.Tensor]:
        """The training sequences of `X` (Interactions with timestamps: each user's latest max_len + 1 items), in
        batches of the model's `batch_size` sequences: what an attack on the embeddings raises the loss of."""
        order = self._history_matrix(X)
        users = np.flatnonzero(np.diff(order.indptr) >= 2)
        seqs = torch.from_numpy(sequences(order, users, self.max_len + 1))
        return [seqs[s : s + self.batch_size] for s in range(0, len(users), self.batch_size)]

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        with torch.no_grad():
            table = self.item_table()
            for start in range(0, len(users), SCORE_BATCH):
                seq = trim(torch.from_numpy(sequences(history, users[start : start + SCORE_BATCH], self.max_len)))
                h, weights = self._output(self.backbone(seq.to(self.device_), table)[:, -1], table[1:])
                out[start : start + len(seq)] = (h @ weights.T).cpu().numpy()
        return out
