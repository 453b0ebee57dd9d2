"""User-level DP-SGD: accounting sanity, Opacus's own accountant, unsupported layers, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from advrec.errors import ConfigError
from advrec.models import EASE, ItemKNN, MultVAE
from advrec.models.mult_vae import VAE
from advrec.privacy.dp import (
    DPConfig,
    check_privatizable,
    fit_private,
    privacy_manifest,
    private_generator,
    private_size_sample,
    rdp_epsilon,
)


def small_vae(epochs: int = 2, **kw) -> MultVAE:
    return MultVAE(**{"hidden": 16, "latent": 4, "epochs": epochs, "batch_size": 40, "random_state": 0, **kw})


def test_epsilon_finite_decreasing_with_noise_and_equal_to_opacus_accountant(random_matrix):
    X = random_matrix(200, 50)
    eps = []
    for sigma in (0.8, 1.6):
        model = fit_private(small_vae(), X, noise_multiplier=sigma, delta=1e-4)
        assert math.isfinite(model.privacy_.epsilon) and model.privacy_.epsilon > 0
        assert model.privacy_.noise_multiplier == sigma and model.privacy_.delta == 1e-4
        assert model.privacy_.sample_rate == pytest.approx(40 / 200)
        assert model.privacy_.steps == 2 * 5  # two epochs of 1/q steps
        check = rdp_epsilon(sigma, model.privacy_.sample_rate, model.privacy_.steps, 1e-4)
        assert model.privacy_.epsilon == pytest.approx(check, rel=1e-9)
        eps.append(model.privacy_.epsilon)
    assert eps[1] < eps[0]
    assert np.isfinite(model.score(X, np.arange(5))).all()


def test_target_epsilon_is_met_and_recorded(tmp_path, random_matrix):
    X = random_matrix(200, 50)
    model = fit_private(small_vae(), X, epsilon=2.0, clipping="hooks", physical_batch_size=7)
    assert 1.5 < model.privacy_.epsilon <= 2.0 + 0.02
    record = privacy_manifest(model)
    assert record["private"] and record["epsilon"] == model.privacy_.epsilon and record["unit"] == "user"
    assert privacy_manifest(EASE().fit(X)) == {"epsilon": math.inf, "private": False}
    model.save(tmp_path / "m")
    back = MultVAE.load(tmp_path / "m")
    assert back.privacy_.epsilon == model.privacy_.epsilon and back.privacy_.accountant == "rdp"
    assert not hasattr(back, "optimizer_factory") or back.optimizer_factory is None


class BatchNormVAE(MultVAE, register=False):
    def _build(self, n_users: int, n_items: int) -> nn.Module:
        net = VAE(n_items, self.hidden, self.latent, self.dropout)
        net.encoder = nn.Sequential(nn.Linear(n_items, self.hidden), nn.BatchNorm1d(self.hidden))
        return net


def test_unsupported_layers_and_models_raise_config_error(random_matrix):
    X = random_matrix(100, 30)
    with pytest.raises(ConfigError, match="BatchNorm"):
        fit_private(BatchNormVAE(hidden=8, latent=2, epochs=1, batch_size=20), X, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="cannot be trained with DP-SGD"):
        check_privatizable(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    check_privatizable(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)))
    with pytest.raises(ConfigError, match="MultVAE"):
        fit_private(ItemKNN(), X, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="exactly one"):
        fit_private(small_vae(), X)
    with pytest.raises(ConfigError, match="finite"):
        DPConfig(epsilon=math.inf).check()


def test_private_generator_spends_its_budget_and_samples_new_users(random_matrix):
    X = random_matrix(200, 50)
    gen, budget = private_generator(X, epsilon=4.0, model=small_vae(), random_state=0)
    assert budget.epsilon <= 4.0 + 0.05 and budget.epsilon_sizes == pytest.approx(0.2)
    rows = gen.sample(30, random_state=1)
    assert rows.shape == (30, 50) and (np.diff(rows.indptr) >= 1).all()
    assert gen._history is None  # the standard prior never touches real rows
    sizes = private_size_sample(np.full(500, 5), 50, epsilon=10.0, random_state=0)
    assert np.mean((sizes >= 4) & (sizes <= 6)) > 0.8


def test_hooks_leave_plain_multvae_unchanged(random_matrix):
    X = random_matrix(120, 40)
    a = MultVAE(hidden=16, latent=4, epochs=2, batch_size=30, random_state=3).fit(X)
    b = MultVAE(hidden=16, latent=4, epochs=2, batch_size=30, random_state=3)
    b.batch_iterator = lambda model, order, rng: (order[s : s + 30] for s in range(0, len(order), 30))
    b.optimizer_factory = lambda model, default: default()
    b.fit(X)
    for (k, v), w in zip(a.network_.state_dict().items(), b.network_.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


@pytest.mark.statistical
def test_popularity_prior_is_charged_and_sets_the_decoder_bias(random_matrix, seed, claim):
    X = random_matrix(300, 40).tolil()
    X[:, :5] = 1.0  # five items everyone has
    X = X.tocsr()
    model = fit_private(small_vae(epochs=1, random_state=seed), X, noise_multiplier=2.0, popularity_epsilon=5.0)
    assert model.privacy_.epsilon == pytest.approx(model.privacy_.epsilon_sgd + 5.0)
    assert model.privacy_.epsilon_sgd == pytest.approx(
        rdp_epsilon(2.0, model.privacy_.sample_rate, model.privacy_.steps, model.privacy_.delta)
    )
    bias = model.network_.decoder.bias.detach().numpy()
    assert claim("bias gap of the 5 common items", bias[:5].min() - bias[5:].max()) > 1  # 2.34-2.56, seeds 0-9


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_private_ease_generator_spends_its_budget_on_the_gram_matrix_and_sizes(random_matrix):
    X = random_matrix(300, 40)
    gen, budget = private_generator(X, epsilon=8.0, model=EASE(l2=5.0), gram_rank=10, random_state=0)
    assert budget.epsilon_sizes == pytest.approx(0.4) and budget.epsilon_model == pytest.approx(7.6, abs=0.01)
    assert gen.model.privacy_.gram_rank == 10 and gen._history is None
    # the item prior is the released Gram diagonal's, not the real counts'
    counts = np.bincount(X.indices, minlength=40) + 1.0
    assert not np.allclose(gen.item_log_prior_, np.log(counts / counts.sum()))
    rows = gen.sample(50, random_state=1)
    assert rows.shape == (50, 40) and (np.diff(rows.indptr) >= 1).all()
    again, _ = private_generator(X, epsilon=8.0, model=EASE(l2=5.0), gram_rank=10, random_state=0)
    assert (again.sample(50, random_state=1) != rows).nnz == 0
    with pytest.raises(ConfigError, match="popularity_share"):
        private_generator(X, epsilon=8.0, model=EASE(), popularity_share=0.05)
    with pytest.raises(ConfigError, match="MultVAE or an EASE"):
        private_generator(X, epsilon=8.0, model=ItemKNN())  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_multvae_trained_on_a_dp_release_records_the_release_budget(random_matrix, tmp_path):
    X = random_matrix(300, 40)
    model = fit_private(small_vae(), X, epsilon=8.0, method="synthetic", gram_rank=10)
    assert 7.9 <= model.privacy_.epsilon <= 8.0 + 1e-3 and model.privacy_.epsilon_sizes == pytest.approx(0.4)
    assert model.privacy_.method == "synthetic" and model.privacy_.release_users == int((np.diff(X.indptr) > 0).sum())
    gram_eps = rdp_epsilon(model.privacy_.noise_multiplier, 1.0, 1, model.privacy_.delta)  # the Gram release, by Opacus
    assert gram_eps + model.privacy_.epsilon_sizes == pytest.approx(model.privacy_.epsilon, rel=1e-9)
    record = privacy_manifest(model)
    assert record["private"] and "synthetic release" in record["mechanism"]
    loaded = MultVAE.load(model.save(tmp_path / "m"))
    assert loaded.privacy_.method == "synthetic" and loaded.privacy_.epsilon == model.privacy_.epsilon
    with pytest.raises(ConfigError, match="target epsilon"):
        fit_private(small_vae(), X, noise_multiplier=1.0, method="synthetic")
    with pytest.raises(ConfigError, match="method must be"):
        fit_private(small_vae(), X, epsilon=8.0, method="pate")
