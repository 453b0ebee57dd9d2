"""TextKNN on ml-100k: content scores beat random, cold items get scores, save/load round trip."""

import numpy as np
import pytest

from advrec.data import load_movielens
from advrec.data.splits import ratio_split
from advrec.errors import DataError
from advrec.evaluation import evaluate
from advrec.models import Recommender, TextKNN
from advrec.testing import RandomScores
from advrec.text.item_text import user_texts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fitted(data_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ADVREC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    X = load_movielens("ml-100k", data_dir=data_dir, min_rating=4)
    split = ratio_split(X, random_state=0)
    yield split, TextKNN(device="cpu").fit(split.train)
    mp.undo()


def test_beats_random(fitted):
    split, model = fitted
    ndcg = evaluate(model, split, ks=(10,)).summary["ndcg@10"]
    rnd = evaluate(RandomScores(split.n_items), split, ks=(10,)).summary["ndcg@10"]
    assert ndcg > 1.5 * rnd, (ndcg, rnd)


def test_scores_items_nobody_interacted_with(fitted):
    split, model = fitted
    cold = np.flatnonzero(split.train.item_counts() == 0)
    assert len(cold) > 0
    S = model.score(split.train, np.arange(5))
    assert np.isfinite(S[:, cold]).all() and np.ptp(S[:, cold]) > 0


def test_save_load_and_bad_input(fitted, tmp_path):
    split, model = fitted
    model.save(tmp_path / "m")
    back = Recommender.load(tmp_path / "m")
    np.testing.assert_array_equal(back.score(split.train, np.arange(3)), model.score(split.train, np.arange(3)))
    with pytest.raises(DataError, match="item features"):
        TextKNN().fit(split.train.matrix)
    with pytest.raises(DataError, match="explicitly"):
        user_texts(split.train, [])
