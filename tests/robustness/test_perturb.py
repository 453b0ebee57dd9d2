"""APR training and embedding attacks on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advrec.data.splits import ratio_split
from advrec.errors import ConfigError
from advrec.models import BPRMF, EASE
from advrec.robustness import APR, adversarial_fit, attack_embeddings, robustness_curve
from advrec.robustness.perturb import _loss_gradient, fast_gradient, project
from advrec.testing import community_accuracy, two_communities

# Thresholds of the statistical tests, set from their spread over seeds 0-9 (benchmarks/test_spread.py).
APR_COMMUNITY_ACCURACY_MIN = 0.8  # 0.867-0.961 over seeds 0-9 (0.922-0.978 with uniform negatives)


@pytest.fixture(scope="module")
def data(seed):  # type: ignore[no-untyped-def]
    return two_communities(n_users=60, n_items=30, random_state=seed)


@pytest.fixture(scope="module")
def bpr(data, seed):  # type: ignore[no-untyped-def]
    return BPRMF(factors=8, epochs=30, batch_size=64, lr=0.05, random_state=seed).fit(data)


def test_fast_gradient_and_projection_bound_rows() -> None:
    g = {"user": torch.tensor([[3.0, 4.0], [0.0, 0.0]])}
    d = fast_gradient(g, 0.5)["user"]
    assert torch.allclose(d[0], torch.tensor([0.3, 0.4]))
    assert torch.equal(d[1], torch.zeros(2))  # no gradient, no perturbation
    p = project({"user": torch.tensor([[6.0, 8.0], [0.1, 0.0]])}, 1.0)["user"]
    assert torch.allclose(p, torch.tensor([[0.6, 0.8], [0.1, 0.0]]))


@pytest.mark.statistical
def test_apr_trains_from_the_pretrained_start(data, bpr, seed, claim) -> None:  # type: ignore[no-untyped-def]
    apr = adversarial_fit(BPRMF(factors=8, epochs=10, batch_size=64, lr=0.05, random_state=seed), data,
                          eps=0.5, adv_reg=1.0, pretrained=bpr)  # fmt: skip
    assert apr.adversarial_ == {"method": "APR", "eps": 0.5, "adv_reg": 1.0, "pretrain_epochs": 30}
    assert not hasattr(apr, "batch_hooks")
    assert not np.allclose(apr.embeddings()[0], bpr.embeddings()[0])
    assert claim("community accuracy", community_accuracy(apr, data)) >= APR_COMMUNITY_ACCURACY_MIN
    again = adversarial_fit(
        BPRMF(factors=8, epochs=10, batch_size=64, lr=0.05, random_state=seed), data, pretrained=bpr
    )
    np.testing.assert_array_equal(apr.embeddings()[1], again.embeddings()[1])


def test_apr_plugin_adds_the_adversarial_loss(data, bpr) -> None:  # type: ignore[no-untyped-def]
    batch = {"users": torch.tensor([0, 1]), "pos": torch.tensor([0, 1]), "neg": torch.tensor([29, 28])}
    loss = bpr.batch_loss(batch)
    base = float(loss.detach())
    assert float(APR(0.0, 1.0).loss(bpr, batch, loss).detach()) == pytest.approx(2 * base, rel=1e-6)
    assert float(APR(1.0, 1.0).loss(bpr, batch, loss).detach()) > 2 * base  # the worst case is worse
    with pytest.raises(ConfigError, match="eps"):
        APR(-1.0, 1.0)


def test_perturbation_needs_an_embedding_model(data) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="embedding"):
        adversarial_fit(EASE(), data)


def _train_loss(model, data) -> float:  # type: ignore[no-untyped-def]
    (batch,) = model.attack_batches(data, np.random.default_rng(0), 10**6)
    with torch.no_grad():
        return float(model.batch_loss(batch))


@pytest.mark.statistical
@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attacks_respect_eps_and_raise_the_loss(data, bpr, method, seed, claim) -> None:  # type: ignore[no-untyped-def]
    attacked = attack_embeddings(bpr, data, eps=0.5, method=method, steps=5, random_state=seed)
    for clean, adv in zip(bpr.embeddings(), attacked.embeddings(), strict=True):
        norms = np.linalg.norm(adv - clean, axis=1)
        assert norms.max() <= 0.5 + 1e-5
    # seeds 0-9: FGSM 2.41-4.93, PGD 2.39-5.48
    assert claim("attacked / clean loss", _train_loss(attacked, data) / _train_loss(bpr, data)) > 1.3
    assert np.allclose(bpr.embeddings()[0], attack_embeddings(bpr, data, eps=0.0).embeddings()[0])
    with pytest.raises(ConfigError, match="method"):
        attack_embeddings(bpr, data, eps=0.5, method="bim")


def test_loss_gradient_matches_autograd_on_one_batch(data, bpr) -> None:  # type: ignore[no-untyped-def]
    tables = {n: t.detach() for n, t in bpr.embedding_tables().items()}
    small = _loss_gradient(bpr, tables, bpr.attack_batches(data, np.random.default_rng(0), 7))
    full = _loss_gradient(bpr, tables, bpr.attack_batches(data, np.random.default_rng(0), 10**6))
    for name in tables:
        assert torch.allclose(small[name], full[name], atol=1e-5)


@pytest.mark.statistical
def test_robustness_curve_rows(data, bpr, seed, claim) -> None:  # type: ignore[no-untyped-def]
    split = ratio_split(data, (0.8, 0.0, 0.2), random_state=seed)
    model = BPRMF(factors=8, epochs=20, batch_size=64, lr=0.05, random_state=seed).fit(split.train)
    df = robustness_curve(model, split, eps=(0.5, 2.0), methods=("fgsm",))
    assert list(df["method"]) == ["clean", "fgsm", "fgsm"]
    assert df["share"].iloc[0] == 1.0
    assert claim("NDCG@10 share kept at eps 2", df["ndcg@10"].iloc[2] / df["ndcg@10"].iloc[0]) < 0.9  # 0.25-0.48
