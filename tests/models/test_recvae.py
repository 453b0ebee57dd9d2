"""RecVAE: the composite prior and the per-user β against hand computations, the alternating phases, the old
encoder, seeding, checkpoints and parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from advrec.data.splits import ratio_split
from advrec.errors import ConfigError
from advrec.models import RecVAE
from advrec.models.recvae import composite_log_prior
from advrec.models.torch_base import Training, csr_to_sparse_torch
from advrec.testing import two_communities

SMALL = {"hidden": 16, "latent": 4, "depth": 3, "batch_size": 8, "lr": 0.01, "device": "cpu"}


def hand_log_prior(z, old_mu, old_logvar, weights, wide_logvar):  # type: ignore[no-untyped-def]
    """log of w₁·N(z; 0, 1) + w₂·N(z; μ, σ²) + w₃·N(z; 0, e^wide) per element, with scipy's normal density."""
    density = (
        weights[0] * stats.norm.pdf(z, 0.0, 1.0)
        + weights[1] * stats.norm.pdf(z, old_mu, np.exp(0.5 * old_logvar))
        + weights[2] * stats.norm.pdf(z, 0.0, np.exp(0.5 * wide_logvar))
    )
    return np.log(density)


def test_composite_log_prior_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    z, mu = rng.normal(0, 2, (5, 3)), rng.normal(0, 1, (5, 3))
    logvar = rng.normal(-1, 1, (5, 3))
    for weights, wide in (((0.15, 0.75, 0.1), 10.0), ((0.5, 0.25, 0.25), 2.0)):
        got = composite_log_prior(torch.tensor(z), torch.tensor(mu), torch.tensor(logvar), weights, wide)
        np.testing.assert_allclose(got.numpy(), hand_log_prior(z, mu, logvar, weights, wide), rtol=1e-10)


def fitting(model: RecVAE, X: sp.csr_matrix, seed: int = 0) -> sp.csr_matrix:
    """`model` set up as `fit` sets it up before its first epoch (network, optimizers, old encoder)."""
    m = model._check_fit_input(X)
    model._set_shape(m)
    model.device_ = torch.device("cpu")
    torch.manual_seed(seed)
    model.network_ = model._build(model.n_users_, model.n_items_)
    model._training = Training([], m, np.random.default_rng(seed))
    model._start(m, model.training.rng)
    model._before_epoch(m, model.training.rng)
    return m


def test_beta_is_scaled_by_the_number_of_interactions() -> None:
    """L_u(γ) − L_u(0) = γ·|x_u|·KL_u, KL_u = Σ_d log q(z_d|x_u) − log p(z_d), computed by hand with scipy."""
    X = two_communities(12, 8)
    model = RecVAE(**SMALL, gamma=0.0, beta=0.0)
    fitting(model, X)
    batch = np.arange(12)
    x = model._rows(batch)
    losses = {}
    for gamma in (0.0, 0.3):
        model.gamma = gamma
        torch.manual_seed(5)
        losses[gamma] = model.encoder_loss(batch).detach().numpy()
    torch.manual_seed(5)  # the same draws: input dropout in the encoder, then ε
    with torch.no_grad():
        mu, logvar = model.network_["encoder"](x, model.dropout)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        old_mu, old_logvar = model.training.cache["old_posterior"]
    z_, mu_, logvar_ = (t.double().numpy() for t in (z, mu, logvar))
    log_q = stats.norm.logpdf(z_, mu_, np.exp(0.5 * logvar_))
    log_p = hand_log_prior(z_, old_mu.double().numpy(), old_logvar.double().numpy(), model.mixture, 10.0)
    kl = (log_q - log_p).sum(1)
    counts = np.diff(model.training.X[batch].indptr)
    assert counts.min() != counts.max()  # users of several history lengths
    np.testing.assert_allclose(losses[0.3] - losses[0.0], 0.3 * counts * kl, rtol=1e-3, atol=1e-3)
    model.gamma, model.beta = 0.01, 0.5
    np.testing.assert_allclose(model.kl_weights(x).numpy(), 0.5 + 0.01 * counts, rtol=1e-6)


def parameters(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().clone().numpy() for k, v in module.state_dict().items()}


def changed(before: dict[str, np.ndarray], module: torch.nn.Module) -> set[str]:
    return {k for k, v in parameters(module).items() if not np.array_equal(v, before[k])}


@pytest.mark.parametrize("which", [0, 1])
def test_each_phase_updates_only_its_own_part(which: int, monkeypatch: pytest.MonkeyPatch) -> None:
    X = two_communities(12, 8)
    model = RecVAE(**SMALL)
    m = fitting(model, X)
    phase = model.phases()[which]
    net = model.network_
    before = {part: parameters(net[part]) for part in ("encoder", "decoder")}
    monkeypatch.setattr(model, "phases", lambda: [phase])
    model._train_epoch(m, model.training.rng)
    own, other = ("encoder", "decoder") if which == 0 else ("decoder", "encoder")
    assert changed(before[own], net[own]) == set(before[own])  # every weight of its own part moved
    assert changed(before[other], net[other]) == set()
    assert all(p.requires_grad for p in net.parameters())  # the other part is trainable again after the phase
    assert {g["params"][0].data_ptr() for g in model.training.optimizers[phase.name].param_groups} <= {
        p.data_ptr() for p in net[own].parameters()
    }


def posterior(model: RecVAE) -> tuple[np.ndarray, np.ndarray]:
    """(μ, log σ²) of every training user from the current encoder, without dropout."""
    enc = model.network_["encoder"].eval()
    with torch.no_grad():
        mu, logvar = enc(csr_to_sparse_torch(model.training.X, torch.device("cpu")), 0.0)
    enc.train()
    return mu.numpy(), logvar.numpy()


def test_the_prior_holds_the_posterior_of_the_encoder_of_the_epoch_before() -> None:
    X = two_communities(12, 8)
    model = RecVAE(**SMALL)
    m = fitting(model, X)
    start = posterior(model)
    model._train_epoch(m, model.training.rng)  # the encoder moves, the prior's posterior stays at the epoch's start
    old = [t.numpy() for t in model.training.cache["old_posterior"]]
    for a, b in zip(old, start, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(posterior(model)[0] - start[0]).max() > 1e-3
    model._before_epoch(m, model.training.rng)
    for a, b in zip(model.training.cache["old_posterior"], posterior(model), strict=True):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-6)


def test_same_seed_same_numbers() -> None:
    X = two_communities(20, 10)
    users = np.arange(20)

    def scores(seed: int) -> np.ndarray:
        return RecVAE(**SMALL, epochs=3, random_state=seed).fit(X).score(X, users)

    np.testing.assert_array_equal(scores(1), scores(1))
    assert np.abs(scores(1) - scores(2)).max() > 1e-4


class Interrupted(Exception):
    pass


class Stoppable(RecVAE, register=False):
    stop_after: int | None = None

    def _after_epoch(self, epoch: int, row: dict[str, float]) -> None:
        if epoch == self.stop_after:
            raise Interrupted


Stoppable.__name__ = "RecVAE"  # the checkpoint is of a RecVAE fit


def test_a_resumed_fit_ends_where_the_whole_fit_ends(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The old encoder is rebuilt from the checkpointed encoder: a resumed fit gives the same model."""
    split = ratio_split(two_communities(30, 12), (0.8, 0.1, 0.1), random_state=0)

    def make() -> Stoppable:
        return Stoppable(**SMALL, epochs=4, patience=10, random_state=3)

    whole = RecVAE(**make().get_params()).fit(split.train, valid=split)
    stopped = make()
    stopped.stop_after = 3
    with pytest.raises(Interrupted):
        stopped.fit(split.train, valid=split, checkpoint=tmp_path / "ck")  # the checkpoint holds epoch 2
    resumed = make().fit(split.train, valid=split, checkpoint=tmp_path / "ck")
    assert [r["epoch"] for r in resumed.training_log_] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed.training_log_] == [r["loss"] for r in whole.training_log_]
    users = np.arange(split.train.n_users)
    np.testing.assert_array_equal(resumed.score(split.train, users), whole.score(split.train, users))


def test_the_log_has_both_phases_losses() -> None:
    row = RecVAE(**SMALL, epochs=1).fit(two_communities(12, 8)).training_log_[0]
    assert np.isfinite(row["encoder_loss"]) and np.isfinite(row["decoder_loss"])
    assert row["loss"] == row["decoder_loss"]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"mixture": (0.5, 0.5)}, "mixture must be a 3-item tuple of floats"),
        ({"mixture": (0.5, 0.5, 0.5)}, "mixture must be 3 positive weights summing to 1"),
        ({"mixture": (0.0, 0.9, 0.1)}, "mixture must be 3 positive weights summing to 1"),
        ({"gamma": -1.0}, "gamma must be"),
        ({"enc_passes": 0}, "enc_passes must be"),
    ],
)
def test_bad_parameters_are_refused(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RecVAE(**{**SMALL, **params}, epochs=1).fit(two_communities(12, 8))


def test_scores_users_from_their_history_alone() -> None:
    X = two_communities(20, 10)
    model = RecVAE(**SMALL, epochs=20).fit(X)
    new = sp.csr_matrix(np.eye(1, 10, 0, dtype=np.float32))  # a new user with item 0 (first community)
    s = model.score(new, np.array([0]))[0]
    assert s[1:5].min() > s[5:].max()
