"""Models against answers computed by hand on tiny matrices."""

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ConfigError
from advrec.models import EASE, ItemKNN, MultVAE, Pop, model_class

X = sp.csr_matrix(
    np.array(
        [
            [1, 1, 0, 0],
            [1, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 0, 0, 1],
        ],
        dtype=np.float32,
    )
)


def test_pop_counts():
    S = Pop().fit(X).score(X, np.array([0, 3]))
    np.testing.assert_array_equal(S, [[2, 3, 2, 1], [2, 3, 2, 1]])


def test_itemknn_cosine_by_hand():
    model = ItemKNN(k=3).fit(X)
    W = model.similarity_.toarray()
    # item 0 users {0,1}, item 1 {0,1,2}, item 2 {1,2}: cos(0,1) = 2/sqrt(2*3), cos(0,2) = 1/2, cos(1,2) = 2/sqrt(6)
    assert W[0, 1] == pytest.approx(2 / np.sqrt(6))
    assert W[0, 2] == pytest.approx(0.5)
    assert W[1, 2] == pytest.approx(2 / np.sqrt(6))
    assert W[3, :3].sum() == 0 and np.diag(W).sum() == 0
    # user 0 (items 0, 1) scores item 2 as cos(0,2) + cos(1,2)
    assert model.score(X, np.array([0]))[0, 2] == pytest.approx(0.5 + 2 / np.sqrt(6))


def test_itemknn_shrink_and_topk():
    model = ItemKNN(k=1, shrink=1.0).fit(X)
    W = model.similarity_.toarray()
    assert (W > 0).sum(axis=0).max() <= 1  # one neighbour kept per item
    assert W[1, 0] == pytest.approx(2 / (np.sqrt(6) + 1))


def test_ease_matches_closed_form():
    l2 = 0.5
    G = (X.T @ X).toarray().astype(np.float64) + l2 * np.eye(4)
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0)
    model = EASE(l2=l2).fit(X)
    np.testing.assert_allclose(model.weights_, B, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.score(X, np.arange(4)), X.toarray() @ B, rtol=1e-4, atol=1e-5)


def test_bad_hyperparameters():
    with pytest.raises(ConfigError, match="l2"):
        EASE(l2=0).fit(X)
    with pytest.raises(ConfigError, match="k must"):
        ItemKNN(k=0).fit(X)
    with pytest.raises(ConfigError, match="unknown model"):
        model_class("nope")
    with pytest.raises(ConfigError, match="no parameter"):
        EASE().set_params(alpha=1)
    with pytest.raises(ConfigError, match="sampling"):
        MultVAE(sampling="random", epochs=1, device="cpu").fit(X)


def test_model_files_hold_no_pickle(tmp_path):
    EASE(l2=1.0).fit(X).save(tmp_path / "m")
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["arrays.safetensors", "params.json"]
    assert b"\x80\x04" not in (tmp_path / "m" / "params.json").read_bytes()


def test_genre_affinity_by_hand():
    import pandas as pd

    from advrec.data.interactions import IdMap, Interactions
    from advrec.models import GenreAffinity

    features = pd.DataFrame({"genres": ["Comedy", "Comedy|Drama", "Drama", "Horror"]})
    data = Interactions(X, IdMap(range(4), "user"), IdMap(range(4), "item"), item_features=features)
    S = GenreAffinity().fit(data).score(data, np.array([0]))
    # user 0 saw items 0 (Comedy) and 1 (Comedy|Drama): affinity Comedy 2/2, Drama 1/2, Horror 0
    np.testing.assert_allclose(S[0], [1.0, (1.0 + 0.5) / 2, 0.5, 0.0])


def test_explain_item_item_models():
    ease = EASE(l2=0.5).fit(X)
    why = ease.explain(X, user=0, item=2, n=3)
    # user 0 saw items 0 and 1; contributions are B[0, 2] and B[1, 2], largest first
    expected = sorted([(0, float(ease.weights_[0, 2])), (1, float(ease.weights_[1, 2]))], key=lambda t: -t[1])
    assert [j for j, _ in why] == [j for j, _ in expected]
    assert why[0][1] == pytest.approx(expected[0][1])
    knn = ItemKNN(k=3).fit(X)
    assert knn.explain(X, 0, 2, n=1) == [(1, pytest.approx(2 / np.sqrt(6)))]
    with pytest.raises(ConfigError, match="cannot explain"):
        Pop().fit(X).explain(X, 0, 2)
