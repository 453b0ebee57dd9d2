"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained to fill in masked items."""

from __future__ import annotations

from typing import ClassVar, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from advrec.data.sequences import sequences
from advrec.errors import ConfigError
from advrec.models.params import Choice, Dimension, Float, Int, Interval, declare
from advrec.models.sequential import SequentialRecommender
from advrec.models.torch_base import Phase

SCORE_BATCH = 256  # users per forward pass when scoring


class BERT4RecNet(nn.Module):
    """Item embeddings (row 0: padding, row n_items + 1: [MASK]) + positions, LayerNorm and dropout, `blocks`
    bidirectional post-LN transformer layers (GELU, feed-forward 4·dim), then the masked-LM head
    GELU(LN(W h)) · E_iᵀ + b_i over the items."""

    def __init__(self, n_items: int, dim: int, blocks: int, heads: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.item = nn.Embedding(n_items + 2, dim, padding_idx=0)
        self.position = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.bias = nn.Parameter(torch.zeros(n_items))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        with torch.no_grad():
            self.item.weight[0].zero_()

    @property
    def mask_token(self) -> int:
        return self.n_items + 1

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(batch, L) item index + 1 (0: padding, n_items + 1: [MASK]) → (batch, L, dim) states."""
        pos = torch.arange(seq.shape[1], device=seq.device)
        x = self.drop(self.norm(self.item(seq) + self.position(pos)[None]))
        pad = seq == 0
        pad[:, -1] = False  # an all-padding row would attend to nothing; its states are never read
        return self.encoder(x, src_key_padding_mask=pad)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.head(states) @ self.item.weight[1 : self.n_items + 1].T + self.bias


class BERT4Rec(SequentialRecommender):
    """BERT4Rec: each training sequence (the latest `max_len` items) has every item replaced by [MASK] with
    probability `mask_prob` (at least one per sequence), and the loss is the cross-entropy of the masked items,

        L = −Σ_{j masked} log softmax(f(s̃)_j)_{s_j},

    f the bidirectional transformer and head (`BERT4RecNet`). To rank, [MASK] is appended to the latest
    `max_len − 1` items and its scores over the items are read. Defaults: 2 layers, 64 dimensions, 2 heads,
    dropout 0.1, mask_prob 0.2, max_len 200 (the paper's ml-1m setting), batches of 128 users, Adam lr 1e-3.
    """

    _parameter_constraints = declare(
        SequentialRecommender._parameter_constraints,
        dim=[Interval(int, 1, None, closed="left")],
        blocks=[Interval(int, 1, None, closed="left")],
        heads=[Interval(int, 1, None, closed="left")],
        dropout=[Interval(float, 0, 1, closed="left")],
        mask_prob=[Interval(float, 0, 1, closed="right")],
        weight_decay=[Interval(float, 0, None, closed="left")],
    )
    _search_space: ClassVar[dict[str, Dimension]] = {
        "dim": Choice((32, 64, 128)),
        "blocks": Int(1, 3),
        "mask_prob": Float(0.1, 0.5),
        "lr": Float(1e-4, 1e-2, log=True),
    }

    def __init__(
        self,
        dim: int = 64,
        blocks: int = 2,
        heads: int = 2,
        dropout: float = 0.1,
        max_len: int = 200,
        mask_prob: float = 0.2,
        weight_decay: float = 0.0,
        epochs: int = 200,
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
        self.mask_prob = mask_prob
        self.weight_decay = weight_decay

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if self.max_len < 2:
            raise ConfigError(f"max_len must be at least 2 (the latest items and [MASK]), got {self.max_len}")

    @property
    def net(self) -> BERT4RecNet:
        return cast(BERT4RecNet, self.network_)

    def _build(self, n_users: int, n_items: int) -> nn.Module:
        return BERT4RecNet(n_items, self.dim, self.blocks, self.heads, self.dropout, self.max_len)

    def _make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        return torch.optim.Adam(phase.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def masked(self, seq: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The sequences with items masked (each with probability `mask_prob`, at least one per non-empty row)
        and a boolean array of the masked positions."""
        real = seq > 0
        chosen = real & (rng.random(seq.shape) < self.mask_prob)
        none = real.any(1) & ~chosen.any(1)
        if none.any():  # one uniformly drawn item of each row left without a mask
            rows = np.flatnonzero(none)
            counts = real[rows].sum(1)
            pick = (rng.random(len(rows)) * counts).astype(np.int64)
            cols = seq.shape[1] - counts + pick  # left-padded: the items are the last `count` columns
            chosen[rows, cols] = True
        return np.where(chosen, self.n_items_ + 1, seq), chosen

    def batch_loss(self, batch: np.ndarray) -> torch.Tensor:
        seq = self.batch_sequences(batch)[:, 1:]  # the latest max_len items
        inputs, chosen = self.masked(seq, self.training.rng)
        states = self.network_(torch.from_numpy(inputs).to(self.device_))
        where = torch.from_numpy(chosen).to(self.device_)
        target = torch.from_numpy(seq).to(self.device_)[where] - 1
        return F.cross_entropy(self.net.logits(states[where]), target)

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        for start in range(0, len(users), SCORE_BATCH):
            seq = sequences(history, users[start : start + SCORE_BATCH], self.max_len - 1)
            seq = np.concatenate([seq, np.full((len(seq), 1), self.n_items_ + 1)], axis=1)
            with torch.no_grad():
                states = self.network_(torch.from_numpy(seq).to(self.device_))[:, -1]
                out[start : start + len(seq)] = self.net.logits(states).cpu().numpy()
        return out
