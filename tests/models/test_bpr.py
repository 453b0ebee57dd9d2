"""BPRMF's training step: the hand-written gradient is autograd's, hooks take the autograd path, epochs are fast."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from advrec.errors import ConfigError
from advrec.models import BPRMF
from advrec.models.torch_base import Training, TrainingPlugin
from advrec.testing import two_communities


class Recorder(torch.optim.Optimizer):
    """An optimizer that only records the gradients it is asked to apply."""

    def __init__(self, params):  # type: ignore[no-untyped-def]
        super().__init__(params, {})
        self.seen: list[torch.Tensor] = []

    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        self.seen = [p.grad.clone() for g in self.param_groups for p in g["params"]]


def _fitted(reg: float = 0.05) -> BPRMF:
    return BPRMF(factors=6, reg=reg, epochs=2, batch_size=16, lr=0.05, device="cpu", random_state=3).fit(
        two_communities()
    )


@pytest.mark.parametrize("reg", [0.0, 0.05])
def test_closed_form_gradient_equals_autograd(reg: float) -> None:
    model = _fitted(reg)
    rng = np.random.default_rng(0)
    batch = {  # repeated users and items, an item both positive and negative
        "users": torch.tensor([0, 0, 5, 7, 7, 7, 30]),
        "pos": torch.tensor([1, 2, 1, 3, 3, 12, 15]),
        "neg": torch.from_numpy(rng.integers(0, 20, 7)).index_fill_(0, torch.tensor([6]), 1),
    }
    params = list(model.network_.parameters())
    loss = model.batch_loss(batch, regularize=True)
    want = torch.autograd.grad(loss, params)
    recorder = Recorder(params)
    model._training = Training([], sp.csr_matrix((40, 20)), np.random.default_rng(0))  # as during fit
    got_loss = model._closed_form_step(batch, recorder)
    assert float(got_loss) == pytest.approx(float(loss.detach()), rel=1e-6)
    for g, w in zip(recorder.seen, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


def test_plugins_take_the_autograd_path() -> None:
    calls = []

    class Count(TrainingPlugin):
        def loss(self, model, batch, loss):  # type: ignore[no-untyped-def]
            calls.append(len(batch["users"]))
            return loss * 1.0

    model = BPRMF(factors=4, epochs=1, batch_size=50, device="cpu")
    X = two_communities()
    model.fit(X, plugins=[Count()])
    assert sum(calls) == X.nnz and max(calls) == 50
    with pytest.raises(ConfigError, match="sparse_adam"):
        BPRMF(factors=4, epochs=1, optimizer="sparse_adam", device="cpu").fit(X, plugins=[Count()])


def test_epoch_loss_is_the_mean_batch_loss() -> None:
    X = sp.csr_matrix(np.eye(6, dtype=np.float32) + np.eye(6, k=1, dtype=np.float32))
    one = BPRMF(factors=3, epochs=1, batch_size=1000, lr=1e-9, reg=0.1, device="cpu", random_state=0).fit(X)
    many = BPRMF(factors=3, epochs=1, batch_size=3, lr=1e-9, reg=0.1, device="cpu", random_state=0).fit(X)
    # with a learning rate of ~0 the weights hardly move: both epochs average the same 11 example losses
    assert one.training_log_[0]["loss"] == pytest.approx(many.training_log_[0]["loss"], rel=1e-5)


def _known_model() -> BPRMF:
    """Users 0 and 1 over 5 items; item scores for user 0 are 0, 1, 2, 3, 4 (item 4 best), for user 1 reversed."""
    X = sp.csr_matrix(np.array([[0, 0, 0, 1, 1], [1, 0, 0, 0, 0]], dtype=np.float32))
    model = BPRMF(factors=1, epochs=1, negative_pool=3, device="cpu").fit(X)
    with torch.no_grad():
        model.network_.user.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model.network_.item.weight.copy_(torch.arange(5, dtype=torch.float32).unsqueeze(1))
    coo = X.tocoo()
    keys = np.sort(coo.row.astype(np.int64) * 5 + coo.col)
    model._training = Training([], X, np.random.default_rng(0), cache={"keys": keys, "keys_t": None})
    return model


def test_dynamic_negatives_are_the_best_scored_non_items() -> None:
    model = _known_model()
    u = torch.tensor([0, 0, 1, 1])
    pool = torch.tensor(
        [
            [0, 2, 1],  # user 0: item 2 scores highest, not an item of the user
            [4, 3, 1],  # user 0: items 4 and 3 are the user's own, struck out: item 1
            [0, 2, 3],  # user 1 (scores reversed): item 0 is the user's own, struck out: item 2
            [1, 4, 2],  # user 1: item 1
        ]
    )
    got = model._pick_negatives(u, pool, np.random.default_rng(0))
    assert got.tolist() == [2, 1, 2, 1]


def test_a_pool_of_the_users_own_items_falls_back_to_a_uniform_non_item() -> None:
    model = _known_model()
    u = torch.zeros(200, dtype=torch.long)
    got = model._pick_negatives(u, torch.tensor([[3, 4, 4]]).repeat(200, 1), np.random.default_rng(0))
    assert set(got.tolist()) == {0, 1, 2}  # uniform over user 0's non-items
    model.negative_pool = 1  # one candidate: plain uniform sampling, the user's items redrawn
    one = model._pick_negatives(
        u, torch.from_numpy(np.random.default_rng(1).integers(0, 5, (200, 1))), np.random.default_rng(2)
    )
    assert set(one.tolist()) == {0, 1, 2}


def test_negative_pool_is_checked() -> None:
    with pytest.raises(ConfigError, match="negative_pool"):
        BPRMF(negative_pool=0, epochs=1, device="cpu").fit(two_communities())


def test_byte_map_and_sorted_keys_give_the_same_training(monkeypatch) -> None:
    """Membership by byte map (small users × items) or by search in the sorted keys: the same negatives."""
    X = two_communities(40, 20, density=0.3)
    fit = lambda: BPRMF(factors=4, epochs=3, batch_size=16, device="cpu", random_state=1).fit(X)  # noqa: E731
    by_map = fit()  # 40 × 20 cells: under BITMAP_MAX_CELLS
    monkeypatch.setattr("advrec.models.bpr.BITMAP_MAX_CELLS", 0)
    by_search = fit()
    for a, b in zip(by_map.embeddings(), by_search.embeddings(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sparse_adam_takes_the_first_step_of_adam_and_updates_only_the_batch_rows() -> None:
    """One batch from the same start: Adam's first step is g/|g| per weight, SparseAdam's the same on the rows the
    batch touched (other rows have no gradient under both); later steps differ (lazy moments) but still learn."""
    X = two_communities(40, 20, density=0.3)
    one = {"factors": 4, "epochs": 1, "batch_size": 10_000, "device": "cpu", "random_state": 5, "lr": 0.05}
    dense, lazy = BPRMF(**one).fit(X), BPRMF(**one, optimizer="sparse_adam").fit(X)
    # equal up to where eps enters (SparseAdam adds it before the bias correction): within 2e-3 of steps of 0.05
    for a, b in zip(dense.embeddings(), lazy.embeddings(), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-3)
    with pytest.raises(ConfigError, match="sparse_adam"):
        BPRMF(factors=4, epochs=1, device="cpu", optimizer="sparse_adam").fit(X, plugins=[TrainingPlugin()])
