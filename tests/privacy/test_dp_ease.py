"""User-level DP-EASE (Gaussian mechanism on the normalised Gram matrix): known answers, accountant, utility."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.data import load_movielens
from advrec.data.splits import ratio_split
from advrec.errors import ConfigError
from advrec.evaluation import evaluate
from advrec.models import EASE, Pop
from advrec.privacy.dp import fit_private, privacy_manifest, rdp_epsilon
from advrec.privacy.dp_ease import fit_gram_private, gram_noise_multiplier, normalized_gram
from advrec.privacy.forget import forget_user
from advrec.runs import load_run, save_run


def test_normalized_gram_known_answer_and_unit_sensitivity(random_matrix):
    X = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [2, 1, 1]], dtype=np.float32))
    w2, w3 = np.sqrt(4 / 3) / 2, np.sqrt(6 / 4) / 3  # √(2n/(n+1)) / n for users of 2 and 3 items
    expected = np.array([[w2 + w3, w2 + w3, w3], [w2 + w3, w2 + 1 + w3, w3], [w3, w3, w3]])
    np.testing.assert_allclose(normalized_gram(X), expected)
    # one user's whole contribution: the upper triangle of their matrix has L2 norm 1, whatever the history
    for row in random_matrix(50, 40, density=0.3):
        if row.nnz:
            g = normalized_gram(row)
            assert np.linalg.norm(g[np.triu_indices_from(g)]) == pytest.approx(1.0, rel=1e-12)


def test_noise_free_full_rank_fit_is_ease_on_normalised_rows(random_matrix):
    X = random_matrix(120, 30, density=0.2)
    model = fit_gram_private(EASE(l2=5.0), X, noise_multiplier=0.0, gram_rank=0)
    n = np.diff(X.indptr)
    Xn = sp.diags(np.sqrt(2 * n / (n + 1)) ** 0.5 / np.sqrt(np.maximum(n, 1))) @ X
    gram = (Xn.T @ Xn).toarray() + 5.0 * np.eye(30)
    P = np.linalg.inv(gram)
    B = P / -np.diag(P)
    np.fill_diagonal(B, 0.0)
    np.testing.assert_allclose(model.weights_, B, rtol=1e-4, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_epsilon_is_opacus_accountants_and_is_recorded(random_matrix, tmp_path):
    X = random_matrix(200, 40)
    model = fit_private(EASE(l2=5.0), X, epsilon=8.0, delta=1e-5, gram_rank=10)
    sigma = model.privacy_.noise_multiplier
    assert sigma == pytest.approx(gram_noise_multiplier(8.0, 1e-5), rel=1e-9)
    assert model.privacy_.epsilon == pytest.approx(rdp_epsilon(sigma, 1.0, 1, 1e-5), rel=1e-9)
    assert 7.9 <= model.privacy_.epsilon <= 8.0 + 1e-3 and model.privacy_.steps == 1 and model.privacy_.gram_rank == 10
    record = privacy_manifest(model)
    assert record["private"] and "Gram" in record["mechanism"] and record["gram_rank"] == 10
    # the same seed gives the same release; the noise is real (unlike the noise-free fit)
    again = fit_private(EASE(l2=5.0), X, epsilon=8.0, delta=1e-5, gram_rank=10)
    np.testing.assert_array_equal(again.weights_, model.weights_)
    plain = fit_gram_private(EASE(l2=5.0), X, noise_multiplier=0.0, gram_rank=10)
    assert not np.allclose(plain.weights_, model.weights_)
    loaded = EASE.load(model.save(tmp_path / "m"))
    assert loaded.privacy_.epsilon == model.privacy_.epsilon and np.array_equal(loaded.weights_, model.weights_)


def test_bad_configurations_raise_config_error(random_matrix):
    X = random_matrix(50, 20)
    with pytest.raises(ConfigError, match="gram_rank"):
        fit_private(EASE(), X, epsilon=8.0, gram_rank=21)
    with pytest.raises(ConfigError, match="popularity_epsilon"):
        fit_private(EASE(), X, epsilon=8.0, popularity_epsilon=1.0)
    with pytest.raises(ConfigError, match="noise_multiplier"):
        fit_gram_private(EASE(), X, noise_multiplier=-1.0)


def test_forget_recomputes_a_dp_ease_with_its_noise_scale(tiny_gendered, tmp_path):
    split = ratio_split(tiny_gendered, random_state=0)
    model = fit_private(EASE(l2=5.0), split.train, noise_multiplier=0.5, gram_rank=10)
    path = save_run(tmp_path / "dp", model, tiny_gendered, split, dataset={"name": "tiny"},
                    extra={"privacy": privacy_manifest(model)})  # fmt: skip
    result = forget_user(path, "user-3")
    assert result.method.startswith("recomputation")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["privacy"]["noise_multiplier"] == 0.5 and manifest["privacy"]["gram_rank"] == 10
    assert load_run(path).model.privacy_.noise_multiplier == 0.5


@pytest.mark.integration
@pytest.mark.statistical
def test_dp_ease_at_epsilon_8_beats_popularity_on_ml100k(data_dir, seed, claim):
    X = load_movielens("ml-100k", data_dir=data_dir)
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=1 + seed)
    model = fit_private(EASE(l2=5.0), split.train, epsilon=8.0, gram_rank=100, seed=seed)
    ndcg = evaluate(model, split, ks=(10,), metrics=("ndcg",)).summary["ndcg@10"]
    pop = evaluate(Pop().fit(split.train), split, ks=(10,), metrics=("ndcg",)).summary["ndcg@10"]
    assert (
        model.privacy_.epsilon <= 8.0 + 1e-3 and claim("NDCG@10 over Pop's", ndcg / pop) > 1.4
    )  # 1.71-1.84, seeds 0-9
