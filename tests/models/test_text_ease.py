"""TextEASE on ml-100k item cold start: cold items ranked far better than at random."""

import numpy as np
import pytest

from advrec.data import load_movielens
from advrec.data.splits import cold_items
from advrec.evaluation import evaluate
from advrec.models import EASE, TextEASE
from advrec.testing import RandomScores

pytestmark = pytest.mark.integration


@pytest.mark.statistical
def test_cold_items_ranked_from_text(data_dir, tmp_path, monkeypatch, seed, claim):
    monkeypatch.setenv("ADVREC_CACHE_DIR", str(tmp_path))
    X = load_movielens("ml-100k", data_dir=data_dir, min_rating=4)
    split = cold_items(X, 0.2, random_state=seed)
    model = TextEASE(blend=0.0, device="cpu").fit(split.train)
    assert set(model.cold_items_) >= set(split.protocol["cold_items"]["test"])
    cold = evaluate(model, split, ks=(10,), cold_only=True).summary["ndcg@10"]
    rnd = evaluate(RandomScores(X.n_items, seed), split, ks=(10,), cold_only=True).summary["ndcg@10"]
    assert claim("cold NDCG@10 over random", cold / rnd) > 2, (cold, rnd)  # 4.14-5.95 over seeds 0-9
    # warm items keep EASE's weights (blend = 0)
    warm = np.setdiff1d(np.arange(X.n_items), model.cold_items_)
    np.testing.assert_allclose(model.weights_[:, warm], EASE().fit(split.train).weights_[:, warm], atol=1e-5)
