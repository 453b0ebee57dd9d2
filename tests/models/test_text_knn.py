"""TextKNN on ml-100k: content scores beat random, cold items get scores, save/load round trip."""

import numpy as np
import pytest

from advrec.data import load_movielens
from advrec.data.splits import ratio_split
from advrec.errors import ConfigError, DataError
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


def test_centered_max_similarity_by_hand(fitted):
    split, uniform = fitted
    model = TextKNN(device="cpu", center=True, aggregate="max").fit(split.train)  # encoder output from the cache
    raw = uniform.item_vectors_.astype(np.float64)
    centered = raw - raw.mean(axis=0)
    centered /= np.linalg.norm(centered, axis=1, keepdims=True)
    np.testing.assert_allclose(model.item_vectors_, centered, atol=1e-5)
    users = np.arange(6)
    S = model.score(split.train, users)
    m = split.train.matrix
    for u in users:
        seen = m.indices[m.indptr[u] : m.indptr[u + 1]]
        expected = (centered[seen] @ centered.T).max(axis=0)
        np.testing.assert_allclose(S[u][np.setdiff1d(np.arange(m.shape[1]), seen)],
                                   np.delete(expected, seen), atol=1e-5)  # fmt: skip


def test_max_similarity_over_blocks_and_empty_histories(monkeypatch):
    import scipy.sparse as sp

    from advrec.models import text_knn

    rng = np.random.default_rng(0)
    model = TextKNN(aggregate="max")
    model.item_vectors_ = rng.normal(size=(7, 3)).astype(np.float32)
    h = sp.csr_matrix(np.array([[1, 1, 0, 1, 0, 0, 1], [0] * 7, [0, 0, 1, 1, 1, 0, 0]], dtype=np.float32))
    whole = model._max_similarity(h)
    monkeypatch.setattr(text_knn, "MAX_BLOCK_FLOATS", 7 * 2)  # blocks of 2 entries split users' histories
    np.testing.assert_allclose(model._max_similarity(h), whole)
    V = model.item_vectors_
    np.testing.assert_allclose(whole[0], (V[[0, 1, 3, 6]] @ V.T).max(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(whole[1], 0.0)
    model.aggregate = "max+mean"
    profile = V[[0, 1, 3, 6]].sum(axis=0)
    expected = whole[0] + V @ profile / np.linalg.norm(profile)
    np.testing.assert_allclose(model._score(h, np.arange(3))[0], expected, rtol=1e-5)
    with pytest.raises(ConfigError, match="uniform"):
        TextKNN(aggregate="max", weighting="rating").fit(None)
