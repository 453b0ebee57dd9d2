"""`Recommender.recommend` for many users at once: chunked by a memory budget, the same arrays as one block."""

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ConfigError
from advrec.evaluation.ranking import BYTES_PER_CELL
from advrec.models import Pop
from advrec.models.base import Recommender


class Table(Recommender, register=False):
    """Scores read from a fixed users×items table (ties and all), recording the users asked for per call."""

    def __init__(self, S: np.ndarray | None = None) -> None:
        self.S = S

    def fit(self, X):  # type: ignore[no-untyped-def]
        self._set_shape(sp.csr_matrix(self.S))
        self.calls: list[int] = []
        return self

    def _score(self, history, users):  # type: ignore[no-untyped-def]
        self.calls.append(len(users))
        return self.S[users]


def _data(n_users=17, n_items=6, seed=0):
    rng = np.random.default_rng(seed)
    S = rng.integers(0, 3, size=(n_users, n_items)).astype(np.float32)
    H = (rng.random((n_users, n_items)) < 0.4).astype(np.float32)
    H[3] = 1.0  # a user who has seen everything: only -1 / -inf
    return S, sp.csr_matrix(H)


@pytest.mark.parametrize("size", [1, 2, 5, 16, 17, 50])
def test_chunked_recommend_equals_one_block(size):
    S, H = _data()
    users = np.array([3, 0, 16, 5, 5, 9, 1, 2, 4, 6, 7, 8, 10, 11, 12, 13, 14, 15])
    whole_items, whole_scores = Table(S).fit(None).recommend(H, users, k=4, batch_size=1000)
    model = Table(S).fit(None)
    items, scores = model.recommend(H, users, k=4, batch_size=size)
    assert isinstance(items, np.ndarray) and items.shape == (len(users), 4) and items.dtype == np.int64
    assert max(model.calls) <= size and sum(model.calls) == len(users)
    np.testing.assert_array_equal(items, whole_items)
    np.testing.assert_array_equal(scores, whole_scores)
    assert (items[0] == -1).all() and np.isneginf(scores[0]).all()  # user 3 has seen every item
    for r, u in enumerate(users):  # by descending score, ties to the lower item index, then -1 padding
        row = np.where(H[u].toarray()[0] > 0, -np.inf, S[u])
        want = [i for i in np.argsort(-row, kind="stable") if np.isfinite(row[i])][:4]
        assert items[r].tolist() == want + [-1] * (4 - len(want))


def test_memory_budget_sets_the_chunk_size():
    S, H = _data()
    model = Table(S).fit(None)
    model.recommend(H, np.arange(17), k=2, memory_budget=3 * S.shape[1] * BYTES_PER_CELL)
    assert model.calls == [3] * 5 + [2]
    with pytest.raises(ConfigError, match="memory_budget"):
        model.recommend(H, np.arange(17), memory_budget=0)
    with pytest.raises(ConfigError, match="batch_size"):
        model.recommend(H, np.arange(17), batch_size=0)


def test_recommend_pop_known_answer():
    X = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=np.float32))
    items, scores = Pop().fit(X).recommend(X, np.arange(4), k=2, batch_size=1)
    np.testing.assert_array_equal(items, [[2, 3], [3, -1], [0, 3], [1, 0]])
    np.testing.assert_array_equal(scores, [[2, 1], [1, -np.inf], [2, 1], [3, 2]])
