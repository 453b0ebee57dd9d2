"""A conformance kit every model passes, and tiny datasets whose right answers are known.

A model's test is a few lines::

    from advrec.testing import check_recommender
    def test_my_model(tmp_path):
        check_recommender(lambda: MyModel(epochs=3), tmp_path)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions
from advrec.errors import AdvrecError, DataError, NotFittedError, UnknownIdError
from advrec.models.base import Recommender


def two_communities(n_users: int = 40, n_items: int = 20, density: float = 0.5, random_state: int = 0) -> Interactions:
    """Users 0..n/2-1 interact only with items 0..m/2-1, the rest only with the other items.

    A working collaborative model ranks every unseen item of a user's own community above every item of
    the other community (the known answer).
    """
    rng = np.random.default_rng(random_state)
    half_u, half_i = n_users // 2, n_items // 2
    dense = np.zeros((n_users, n_items), dtype=np.float32)
    dense[:half_u, :half_i] = rng.random((half_u, half_i)) < density
    dense[half_u:, half_i:] = rng.random((n_users - half_u, n_items - half_i)) < density
    dense[np.arange(n_users), np.where(np.arange(n_users) < half_u, 0, half_i)] = 1.0  # nobody is empty
    m = sp.csr_matrix(dense)
    ts = np.arange(m.nnz, dtype=np.int64)
    return Interactions(
        m, IdMap(np.arange(100, 100 + n_users), "user"), IdMap(np.arange(500, 500 + n_items), "item"), timestamps=ts
    )


def ordered_interactions(seqs: list[list[int]], n_items: int) -> Interactions:
    """One user per sequence; the j-th item of a sequence gets timestamp j (its order is the list's)."""
    rows = np.concatenate([[u] * len(s) for u, s in enumerate(seqs)]).astype(np.int64)
    cols = np.concatenate(seqs).astype(np.int64)
    ts = np.concatenate([np.arange(len(s)) for s in seqs])
    m = sp.coo_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(seqs), n_items)).tocsr()
    order = np.lexsort((cols, rows))  # CSR order: by user, then item
    users, items = IdMap(np.arange(len(seqs)), "user"), IdMap(np.arange(n_items), "item")
    return Interactions(m, users, items, timestamps=ts[order])


def cyclic_sequences(n_users: int, n_items: int, length: int, seed: int) -> Interactions:
    """Each user walks the cycle 0 → 1 → … → n_items−1 → 0 from a random start (no item twice): the next item
    is always the latest + 1 (mod n_items), the known answer a sequential model must learn."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    return ordered_interactions([list((s + np.arange(length)) % n_items) for s in starts], n_items)


def community_accuracy(model: Recommender, X: Interactions, k: int = 3) -> float:
    """Share of top-k recommendations that fall in the user's own community of `two_communities`."""
    items, _ = model.recommend(X, np.arange(X.n_users), k=k)
    own = np.where(np.arange(X.n_users)[:, None] < X.n_users // 2, items < X.n_items // 2, items >= X.n_items // 2)
    return float(own[items >= 0].mean())


def _expect(exc: type[BaseException], fn: Callable[[], object], what: str) -> None:
    try:
        fn()
    except exc as err:
        if not str(err):
            raise AssertionError(f"{what}: {exc.__name__} raised with an empty message") from err
        return
    raise AssertionError(f"{what}: expected {exc.__name__}")


def check_recommender(make: Callable[[], Recommender], tmp_path: str | Path, min_accuracy: float | None = 0.9) -> None:
    """Runs the conformance checks on models built by `make()`; raises AssertionError on the first failure.

    Checks: unfitted use fails clearly; `fit` returns self; scores have the right shape and dtype; the same
    seed gives the same scores; recommend excludes seen items and is sorted; save/load gives identical
    scores; bad input fails with a clear advrec error; the model learns the two-community structure.
    """
    X = two_communities()
    users = np.arange(X.n_users)
    model = make()
    _expect(NotFittedError, lambda: model.score(X, users), "score before fit")
    _expect(NotFittedError, lambda: model.recommend(X, users), "recommend before fit")
    assert model.fit(X) is model, "fit must return self"

    S = model.score(X, users)
    assert S.shape == (X.n_users, X.n_items), f"score shape {S.shape}"
    assert S.dtype == np.float32, f"score dtype {S.dtype}"
    assert np.isfinite(S).all(), "scores must be finite"
    again = make().fit(X).score(X, users)
    np.testing.assert_allclose(S, again, rtol=1e-5, atol=1e-6, err_msg="same seed must give same scores")

    items, scores = model.recommend(X, users, k=5)
    assert items.shape == (X.n_users, 5) and scores.shape == (X.n_users, 5)
    seen = X.matrix.toarray() > 0
    picked = np.take_along_axis(seen, np.maximum(items, 0), axis=1) & (items >= 0)
    assert not picked.any(), "recommend must exclude seen items"
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "recommendations must be sorted by descending score"
    all_items, _ = model.recommend(X, users[:2], k=3, exclude_seen=False)
    assert all_items.shape == (2, 3)

    path = Path(tmp_path) / type(model).__name__
    model.save(path)
    loaded = type(model).load(path)
    np.testing.assert_array_equal(loaded.score(X, users), S, err_msg="save/load must give identical scores")
    assert plain_params(loaded) == plain_params(model), "save/load must keep the parameters"
    assert type(Recommender.load(path)) is type(model), "Recommender.load must restore the saved class"

    _expect(DataError, lambda: make().fit(sp.csr_matrix((3, 4), dtype=np.float32)), "fit on an empty matrix")
    nan = X.matrix.copy()
    nan.data[0] = np.nan
    _expect(DataError, lambda: make().fit(nan), "fit on NaN")
    _expect(DataError, lambda: make().fit("not a matrix"), "fit on a string")  # type: ignore[arg-type]
    _expect(DataError, lambda: model.score(X.matrix[:, :3], users[:2]), "score with a wrong item count")
    _expect(UnknownIdError, lambda: model.score(X, np.array([X.n_users + 5])), "score for an unknown user index")
    _expect(AdvrecError, lambda: model.recommend(X, users, k=0), "recommend with k=0")

    if min_accuracy is None:
        return
    acc = community_accuracy(model, X)
    assert acc >= min_accuracy, f"{type(model).__name__} puts only {acc:.2f} of its top-3 in the user's community"


def plain_params(model: Recommender) -> dict[str, Any]:
    """`model.get_params()` with every model among the values (an ensemble's members) replaced by its class name
    and its own plain parameters, so that two models compare by value."""

    def plain(value: Any) -> Any:
        if isinstance(value, Recommender):
            return {"class": type(value).__name__, "params": plain_params(value)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return {key: plain(value) for key, value in model.get_params().items()}


class RandomScores:
    """Seeded uniform random scores: the floor any model must clear (implements `score` only)."""

    def __init__(self, n_items: int, random_state: int = 0) -> None:
        self.rng, self.n_items = np.random.default_rng(random_state), n_items

    def score(self, history: object, users: np.ndarray) -> np.ndarray:
        return self.rng.random((len(users), self.n_items)).astype(np.float32)
