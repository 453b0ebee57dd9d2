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
def fitted(data_dir, tmp_path_factory, seed):
    mp = pytest.MonkeyPatch()
    mp.setenv("ADVREC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    X = load_movielens("ml-100k", data_dir=data_dir, min_rating=4)
    split = ratio_split(X, random_state=seed)
    yield split, TextKNN(device="cpu").fit(split.train)
    mp.undo()


@pytest.mark.statistical
def test_beats_random(fitted, seed, claim):
    split, model = fitted
    ndcg = evaluate(model, split, ks=(10,)).summary["ndcg@10"]
    rnd = evaluate(RandomScores(split.n_items, seed), split, ks=(10,)).summary["ndcg@10"]
    assert claim("NDCG@10 over random", ndcg / rnd) > 1.5, (ndcg, rnd)  # 2.72-5.05 over seeds 0-9


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


def test_recency_weights_by_hand():
    import pandas as pd

    from advrec.data import Interactions
    from advrec.models.text_knn import recency_weights

    df = pd.DataFrame({"user": [1, 1, 1, 1, 2], "item": ["a", "b", "c", "d", "a"], "time": [10, 30, 20, 30, 5]})
    X = Interactions.from_frame(df, time="time")
    W = recency_weights(X, half_life=1.0).toarray()
    # user 1: b and d at t=30 share rank 0, c at 20 has rank 2, a at 10 rank 3; user 2: a alone
    np.testing.assert_allclose(W, [[0.125, 1.0, 0.25, 1.0], [1.0, 0.0, 0.0, 0.0]])
    with pytest.raises(DataError, match="timestamps"):
        recency_weights(X.with_matrix(X.matrix), 1.0)


def test_recency_weighting_follows_the_latest_items(fitted):
    split, uniform = fitted
    recent = TextKNN(device="cpu", weighting="recency", half_life=1.0).fit(split.train)
    S_u, S_r = uniform.score(split.train, np.arange(20)), recent.score(split.train, np.arange(20))
    assert not np.allclose(S_u, S_r)
    # with a short half-life, the latest item's own score beats the oldest item's for most users
    m, ts = split.train.matrix, split.train.timestamps
    wins = 0
    for u in range(20):
        lo, hi = m.indptr[u], m.indptr[u + 1]
        newest, oldest = m.indices[lo + np.argmax(ts[lo:hi])], m.indices[lo + np.argmin(ts[lo:hi])]
        wins += S_r[u, newest] > S_r[u, oldest]
    assert wins >= 15, wins
    with pytest.raises(DataError, match="timestamps"):
        recent.score(split.train.matrix, np.arange(2))
    # it reads the order of histories, so evaluation hands them over with their timestamps
    assert recent.sequential and not uniform.sequential
    assert evaluate(recent, split, ks=(10,)).summary["n_users"] > 0
