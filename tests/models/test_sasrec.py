"""SASRec and the sequential plumbing: order of histories, the causal mask, next-item learning, leave-last-out."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from advrec.data.interactions import Interactions
from advrec.data.sequences import order_positions, sequences
from advrec.data.splits import leave_last_out, leave_one_out
from advrec.errors import ConfigError, DataError
from advrec.evaluation import evaluate
from advrec.models import SASRec
from advrec.models.sasrec import SASRecNet
from advrec.testing import cyclic_sequences as cyclic
from advrec.testing import ordered_interactions as interactions


def test_order_positions_and_sequences_follow_time_then_item() -> None:
    X = interactions([[4, 1, 3], [2], [0, 1, 2, 3, 4]], 5)
    ordered = order_positions(X.matrix, X.timestamps)
    assert ordered[0].toarray().tolist() == [[0, 2, 0, 3, 1]]  # item 4 first, then 1, then 3
    np.testing.assert_array_equal(
        sequences(ordered, np.array([0, 1, 2]), 4), [[0, 5, 2, 4], [0, 0, 0, 3], [2, 3, 4, 5]]
    )
    tied = order_positions(sp.csr_matrix(np.ones((1, 3), np.float32)), np.array([7, 7, 7]))
    assert tied.data.tolist() == [1, 2, 3]  # equal times: by item index


def test_no_later_item_reaches_an_earlier_position() -> None:
    """The causal mask, as a known answer: changing items after position t leaves positions ≤ t unchanged,
    and changing one at or before t changes position t."""
    torch.manual_seed(0)
    net = SASRecNet(n_items=30, dim=16, blocks=2, heads=2, dropout=0.0, max_len=8).eval()
    seq = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2]])
    later = seq.clone()
    later[0, 5:] = torch.tensor([20, 21, 22])
    with torch.no_grad():
        a, b = net(seq), net(later)
        torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
        assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3
        earlier = seq.clone()
        earlier[0, 2] = 25
        assert (net(earlier)[:, 4] - a[:, 4]).abs().max() > 1e-3


def test_padding_does_not_reach_a_prediction() -> None:
    """With positions set aside, more padding in front, or another padding vector, leaves the states of the
    items unchanged; an all-padding sequence gives finite states."""
    torch.manual_seed(0)
    net = SASRecNet(n_items=10, dim=8, blocks=2, heads=2, dropout=0.0, max_len=6).eval()
    with torch.no_grad():
        net.position.weight.zero_()  # positions shift with the padding; without them the states must agree
        a = net(torch.tensor([[0, 0, 0, 1, 2, 3]]))[:, 3:]
        b = net(torch.tensor([[1, 2, 3]]))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        net.item.weight[0].add_(1.0)
        torch.testing.assert_close(net(torch.tensor([[0, 0, 0, 1, 2, 3]]))[:, 3:], a, rtol=0, atol=0)
        assert torch.isfinite(net(torch.zeros(1, 6, dtype=torch.long))).all()


def test_learns_the_next_item_of_a_cycle() -> None:
    X = cyclic(60, 12, 6, seed=0)
    model = SASRec(dim=16, blocks=1, max_len=5, epochs=60, batch_size=16, lr=0.01, device="cpu").fit(X)
    items, _ = model.recommend(X, np.arange(X.n_users), k=1)
    expected = np.array([s[-1] for s in sequences(order_positions(X.matrix, X.timestamps), np.arange(60), 6)]) % 12
    assert (items[:, 0] == expected).mean() >= 0.95  # measured 1.00; popularity would give at most 2/12


@pytest.mark.parametrize("loss", ["sampled", "bce"])
def test_other_losses_learn_the_cycle(loss: str) -> None:
    X = cyclic(60, 12, 6, seed=1)
    model = SASRec(dim=16, blocks=1, max_len=5, epochs=60, batch_size=16, lr=0.01, loss=loss, negatives=4, device="cpu")
    items, _ = model.fit(X).recommend(X, np.arange(X.n_users), k=1)
    last = sequences(order_positions(X.matrix, X.timestamps), np.arange(60), 1)[:, 0] - 1
    assert (items[:, 0] == (last + 1) % 12).mean() >= 0.9  # measured 1.00


def test_order_changes_the_scores() -> None:
    """The same items in another order: other scores (a set-based model could not tell them apart)."""
    X = cyclic(60, 12, 6, seed=0)
    model = SASRec(dim=16, blocks=1, max_len=5, epochs=20, batch_size=16, lr=0.01, device="cpu").fit(X)
    a = interactions([[1, 2, 3]], 12)
    b = interactions([[3, 2, 1]], 12)
    assert np.abs(model.score(a, [0]) - model.score(b, [0])).max() > 1e-3


def test_refuses_histories_without_order() -> None:
    X = cyclic(10, 6, 3, seed=0)
    model = SASRec(dim=8, blocks=1, max_len=3, epochs=1, device="cpu")
    with pytest.raises(DataError, match="order of each history"):
        model.fit(X.matrix)
    model.fit(X)
    with pytest.raises(DataError, match="no timestamps"):
        model.score(Interactions(X.matrix, X.users, X.items), [0])
    with pytest.raises(ConfigError, match="multiple of heads"):
        SASRec(dim=10, heads=3).fit(X)
    with pytest.raises(ConfigError, match="loss"):
        SASRec(loss="softmax").fit(X)


def test_leave_last_out_puts_the_validation_item_in_the_test_history() -> None:
    X = cyclic(30, 10, 6, seed=2)
    loo, llo = leave_one_out(X, random_state=0), leave_last_out(X, random_state=0)
    assert (loo.test.matrix != llo.test.matrix).nnz == 0 and (loo.valid.matrix != llo.valid.matrix).nnz == 0
    es_loo, es_llo = loo.eval_set("test"), llo.eval_set("test")
    assert es_llo.history.nnz == es_loo.history.nnz + llo.valid.nnz
    assert (es_llo.exclude != es_loo.exclude).nnz == 0  # the same items are left out of the ranking
    # the times follow the history's pattern: the validation item is the latest of each test history
    latest = sequences(order_positions(es_llo.history, es_llo.times.data), np.arange(30), 1)[:, 0] - 1
    np.testing.assert_array_equal(latest, llo.valid.matrix.indices)
    assert llo.eval_set("valid").history.nnz == llo.train.nnz


def test_sequential_evaluation_ranks_the_next_item() -> None:
    """Under leave-last-out a model that learnt the cycle finds every test item at rank 1."""
    X = cyclic(80, 12, 7, seed=3)
    split = leave_last_out(X, random_state=0)
    model = SASRec(dim=16, blocks=1, max_len=6, epochs=80, batch_size=16, lr=0.01, device="cpu", patience=80)
    model.fit(split.train, valid=split)
    report = evaluate(model, split, ks=(1,))
    assert report.summary["hit@1"] >= 0.95  # measured 1.00
    assert model.best_valid_ >= 0.95


def test_leading_padding_columns_may_be_left_out() -> None:
    """Positions count from the end: the states of a batch without its all-padding columns are the same."""
    from advrec.models.sasrec import trim

    torch.manual_seed(1)
    net = SASRecNet(n_items=10, dim=8, blocks=2, heads=2, dropout=0.0, max_len=7).eval()
    seq = torch.tensor([[0, 0, 0, 4, 1, 2, 3], [0, 0, 0, 0, 0, 5, 6]])
    short = trim(seq)
    assert short.shape == (2, 4)
    with torch.no_grad():
        torch.testing.assert_close(net(short), net(seq)[:, 3:], rtol=1e-5, atol=1e-6)
    assert trim(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 1)
