"""BERT4Rec: masking, bidirectional attention, learning the next item of a cycle."""

import numpy as np
import pytest
import torch

from advrec.data.splits import leave_last_out
from advrec.errors import ConfigError
from advrec.evaluation import evaluate
from advrec.models import BERT4Rec
from advrec.models.bert4rec import BERT4RecNet
from advrec.testing import cyclic_sequences


def test_masking_rate_and_at_least_one_mask_per_sequence() -> None:
    model = BERT4Rec(mask_prob=0.2)
    model.n_items_ = 50
    rng = np.random.default_rng(0)
    seq = rng.integers(1, 51, (4000, 10))
    seq[:, :3] = 0  # padding is never masked
    masked, chosen = model.masked(seq, rng)
    assert not chosen[:, :3].any()
    assert chosen.any(1).all()
    np.testing.assert_array_equal(masked[chosen], 51)
    np.testing.assert_array_equal(masked[~chosen], seq[~chosen])
    # at least one mask per row lifts the rate a little: 0.2 + 0.8^7 / 7 ≈ 0.2300 expected
    assert abs(chosen[:, 3:].mean() - 0.2300) < 0.005
    one = np.zeros((3, 5), dtype=np.int64)
    one[:, -1] = 7  # a single item: it is the one masked
    assert model.masked(one, rng)[1][:, -1].all()


def test_attention_is_bidirectional() -> None:
    """Unlike SASRec, a later item changes the state of an earlier position; padding changes nothing."""
    torch.manual_seed(0)
    net = BERT4RecNet(n_items=30, dim=16, blocks=2, heads=2, dropout=0.0, max_len=6).eval()
    seq = torch.tensor([[0, 0, 3, 7, 1, 31]])
    later = seq.clone()
    later[0, 4] = 20
    with torch.no_grad():
        a = net(seq)
        assert (net(later)[:, 2] - a[:, 2]).abs().max() > 1e-3
        net.item.weight[0].add_(1.0)  # the padding vector is never attended to
        torch.testing.assert_close(net(seq)[:, 2:], a[:, 2:], rtol=0, atol=0)


def test_learns_the_next_item_of_a_cycle() -> None:
    X = cyclic_sequences(200, 12, 8, seed=0)  # training sequences (6 items) fill every position of max_len 4
    split = leave_last_out(X, random_state=0)
    model = BERT4Rec(
        dim=16,
        blocks=1,
        max_len=4,
        dropout=0.0,
        mask_prob=0.3,
        epochs=60,
        batch_size=32,
        lr=0.01,
        patience=60,
        device="cpu",
    )
    model.fit(split.train, valid=split)
    assert evaluate(model, split, ks=(1,)).summary["hit@1"] >= 0.9  # measured 1.00 for random_state 0-7 and 2020


def test_refuses_bad_settings() -> None:
    X = cyclic_sequences(10, 6, 3, seed=0)
    with pytest.raises(ConfigError, match="multiple of heads"):
        BERT4Rec(dim=10, heads=3).fit(X)
    with pytest.raises(ConfigError, match="max_len must be at least 2"):
        BERT4Rec(max_len=1).fit(X)
    with pytest.raises(ConfigError, match="mask_prob"):
        BERT4Rec(mask_prob=0.0).fit(X)
