"""User-level DP-BPR (billboard model): Opacus's accountant, determinism, persistence, utility, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from advrec.data import load_movielens
from advrec.data.splits import ratio_split
from advrec.errors import ConfigError
from advrec.evaluation import evaluate
from advrec.evaluation.evaluate import evaluate_scores
from advrec.models import BPRMF
from advrec.models.bpr import MF
from advrec.privacy.dp import fit_private, privacy_manifest, rdp_epsilon
from advrec.privacy.dp_bpr import fit_billboard, fold_in


def small_bpr(epochs: int = 2, random_state: int = 0) -> BPRMF:
    return BPRMF(factors=8, epochs=epochs, batch_size=50, lr=1e-2, random_state=random_state)


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_epsilon_equals_opacus_accountant_and_is_recorded(tmp_path, random_matrix):
    X = random_matrix(300, 80)
    model = fit_private(small_bpr(), X, noise_multiplier=1.0, delta=1e-4, max_grad_norm=0.05)
    assert (
        model.privacy_.noise_multiplier == 1.0 and model.privacy_.delta == 1e-4 and model.privacy_.max_grad_norm == 0.05
    )
    assert model.privacy_.sample_rate == pytest.approx(50 / 300) and model.privacy_.steps == 2 * 6
    assert model.privacy_.epsilon == pytest.approx(
        rdp_epsilon(1.0, model.privacy_.sample_rate, model.privacy_.steps, 1e-4), rel=1e-9
    )
    targeted = fit_private(small_bpr(), X, epsilon=3.0, clipping="hooks", physical_batch_size=16)
    assert 2.5 < targeted.privacy_.epsilon <= 3.0 + 0.02
    record = privacy_manifest(model)
    assert record["private"] and record["unit"] == "user" and "billboard" in record["mechanism"]
    assert record["epsilon"] == model.privacy_.epsilon and "item" in record["scope"]
    # the user table is each user's fold-in against the private item side; loading never unpickles
    assert np.allclose(model.network_.user.weight.detach().numpy(), fold_in(model, X), atol=1e-6)
    model.save(tmp_path / "m")
    back = BPRMF.load(tmp_path / "m")
    assert back.privacy_.epsilon == model.privacy_.epsilon and back.privacy_.scope == model.privacy_.scope
    assert np.array_equal(back.item_context_, model.item_context_)
    assert np.array_equal(back.score(X, np.arange(10)), model.score(X, np.arange(10)))


def test_same_seed_same_model_and_ghost_equals_hooks(random_matrix):
    X = random_matrix(200, 60)
    a, b = (fit_private(small_bpr(), X, noise_multiplier=1.0, max_grad_norm=0.05) for _ in range(2))
    assert np.array_equal(a.item_context_, b.item_context_) and a.privacy_.epsilon == b.privacy_.epsilon
    assert torch.equal(a.network_.item.weight, b.network_.item.weight)
    # ghost clipping computes the same clipped per-user gradients as materialized per-user gradients
    c = fit_private(small_bpr(), X, noise_multiplier=1.0, max_grad_norm=0.05, clipping="hooks",
                    physical_batch_size=1000)  # fmt: skip
    assert np.allclose(a.item_context_, c.item_context_, atol=1e-5)
    other = fit_private(small_bpr(random_state=1), X, noise_multiplier=1.0, max_grad_norm=0.05)
    assert not np.array_equal(a.item_context_, other.item_context_)


@pytest.mark.integration
@pytest.mark.statistical
def test_private_bpr_beats_random_ranking_on_ml100k(data_dir, seed, claim):
    X = load_movielens("ml-100k", data_dir=data_dir)
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=1 + seed)
    model = fit_private(BPRMF(factors=16, epochs=5, batch_size=300, lr=3e-2, random_state=seed), split.train,
                        epsilon=8.0, max_grad_norm=0.01)  # fmt: skip
    assert model.privacy_.epsilon <= 8.0 + 0.02
    ndcg = claim("DP NDCG@10", evaluate(model, split, ks=(10,), metrics=("ndcg",)).summary["ndcg@10"])
    rng = np.random.default_rng(seed)
    random = evaluate_scores(lambda h, u: rng.random((len(u), X.n_items)), split.eval_set("test"), ks=(10,),
                             metrics=("ndcg",))  # fmt: skip
    over_random = claim("DP NDCG@10 over random", ndcg / random.summary["ndcg@10"])
    plain = fit_billboard(BPRMF(factors=16, epochs=5, batch_size=100, lr=1e-2, random_state=seed), split.train)
    assert plain.privacy_ is None and privacy_manifest(plain)["private"] is False
    plain_ndcg = evaluate(plain, split, ks=(10,), metrics=("ndcg",)).summary["ndcg@10"]
    over_dp = claim("non-private NDCG@10 over DP", plain_ndcg / ndcg)
    # seeds 0-9: over random 14.2-32.7, DP NDCG@10 0.128-0.160, non-private over DP 1.31-1.57
    assert over_random > 8 and ndcg > 0.08 and over_dp > 1.1


class NormedMF(MF):
    def __init__(self, n_users: int, n_items: int, factors: int) -> None:
        super().__init__(n_users, n_items, factors)
        self.norm = nn.BatchNorm1d(factors)


class NormedBPR(BPRMF, register=False):
    def _build(self, n_users: int, n_items: int) -> nn.Module:
        return NormedMF(n_users, n_items, self.factors)


class OtherScoreBPR(BPRMF, register=False):
    def _score(self, history, users):  # type: ignore[no-untyped-def]
        return -super()._score(history, users)


def test_unsupported_configurations_raise_config_error(random_matrix):
    X = random_matrix(100, 30)
    with pytest.raises(ConfigError, match="BatchNorm"):
        fit_private(NormedBPR(epochs=1), X, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="billboard"):
        fit_private(OtherScoreBPR(epochs=1), X, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="popularity_epsilon"):
        fit_private(small_bpr(), X, noise_multiplier=1.0, popularity_epsilon=1.0)
    with pytest.raises(ConfigError, match="finite"):
        fit_private(small_bpr(), X, epsilon=math.inf)
    with pytest.raises(ConfigError, match="item_context_"):
        fold_in(small_bpr(epochs=1).fit(X), X)
