"""`Interactions` and `IdMap` on tiny hand-made frames whose right answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from advrec.data import IdMap, Interactions
from advrec.errors import DataError, UnknownIdError


def frame(rows: list[tuple]) -> pd.DataFrame:
    cols = ["user", "item", "rating", "time"][: len(rows[0])]
    return pd.DataFrame(rows, columns=cols)


def as_dict(X: Interactions) -> dict[tuple, float]:
    df = X.to_frame()
    return {(u, i): r for u, i, r in zip(df["user"], df["item"], df["rating"], strict=True)}


def test_from_frame_builds_matrix_and_id_maps() -> None:
    X = Interactions.from_frame(
        frame([("u2", "b", 4.0, 20), ("u1", "a", 5.0, 10), ("u2", "a", 1.0, 30)]), rating="rating", time="time"
    )
    assert X.shape == (2, 2) and X.nnz == 3
    assert list(X.users.ids) == ["u2", "u1"]  # first-appearance order
    assert list(X.items.ids) == ["b", "a"]
    assert X.matrix.dtype == np.float32
    dense = X.matrix.toarray()
    assert dense[X.users.index("u2"), X.items.index("b")] == 4.0
    assert dense[X.users.index("u1"), X.items.index("a")] == 5.0
    assert dense[X.users.index("u1"), X.items.index("b")] == 0.0
    df = X.to_frame()
    assert dict(zip(zip(df["user"], df["item"], strict=True), df["time"], strict=True)) == {
        ("u2", "b"): 20,
        ("u1", "a"): 10,
        ("u2", "a"): 30,
    }


def test_from_frame_without_rating_is_implicit() -> None:
    X = Interactions.from_frame(frame([(1, 10), (1, 11), (2, 10)]))
    assert X.matrix.data.tolist() == [1.0, 1.0, 1.0]
    assert X.timestamps is None
    assert X.users.ids.dtype.kind == "i"


def test_from_frame_missing_column() -> None:
    with pytest.raises(DataError, match="missing column 'rating'"):
        Interactions.from_frame(frame([(1, 10)]), rating="rating")


def test_duplicates_last_keeps_latest_by_time() -> None:
    df = frame([(1, 10, 5.0, 300), (1, 10, 2.0, 100), (1, 11, 3.0, 50)])
    X = Interactions.from_frame(df, rating="rating", time="time", duplicates="last")
    assert as_dict(X) == {(1, 10): 5.0, (1, 11): 3.0}
    assert X.nnz == 2
    assert sorted(X.timestamps.tolist()) == [50, 300]


def test_duplicates_last_keeps_last_row_without_time() -> None:
    X = Interactions.from_frame(frame([(1, 10, 5.0), (1, 10, 2.0)]), rating="rating")
    assert as_dict(X) == {(1, 10): 2.0}


def test_duplicates_sum() -> None:
    df = frame([(1, 10, 5.0, 1), (1, 10, 2.0, 2), (2, 10, 1.0, 3)])
    X = Interactions.from_frame(df, rating="rating", time="time", duplicates="sum")
    assert as_dict(X) == {(1, 10): 7.0, (2, 10): 1.0}


def test_duplicates_error_names_the_pair() -> None:
    with pytest.raises(DataError, match=r"duplicate interaction for user .*1.*item .*10"):
        Interactions.from_frame(frame([(1, 10, 5.0), (1, 10, 2.0)]), rating="rating", duplicates="error")


def test_binarize_keeps_values_at_or_above_threshold() -> None:
    df = frame([(1, 10, 5.0, 1), (1, 11, 2.0, 2), (2, 10, 4.0, 3), (2, 12, 3.5, 4)])
    X = Interactions.from_frame(df, rating="rating", time="time")
    B = X.binarize(4)
    assert set(as_dict(B)) == {(1, 10), (2, 10)}
    assert B.matrix.data.tolist() == [1.0, 1.0]
    assert sorted(B.timestamps.tolist()) == [1, 3]
    assert X.nnz == 4  # the original is unchanged
    assert B.shape == X.shape  # binarize never drops users or items
    assert X.binarize().matrix.data.tolist() == [1.0] * 4


def test_core_filter_is_iterative() -> None:
    # 2-core: u4 (1 item) and items c, d (1 user each) go in round 1; then u3 is left with one item.
    df = frame([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c"), ("u4", "d")])
    X = Interactions.from_frame(df)
    C = X.core_filter(2)
    assert sorted(C.users.ids.tolist()) == ["u1", "u2"]
    assert sorted(C.items.ids.tolist()) == ["a", "b"]
    assert C.nnz == 4
    assert (C.user_counts() >= 2).all() and (C.item_counts() >= 2).all()
    assert X.core_filter(1) is X
    assert X.core_filter(3).nnz == 0


def test_core_filter_keeps_side_tables_aligned() -> None:
    df = frame([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "c")])
    X = Interactions.from_frame(df)
    X.item_features = pd.DataFrame({"title": [f"title {i}" for i in X.items.ids]})
    X.user_features = pd.DataFrame({"age": [int(u[1:]) * 10 for u in X.users.ids]})
    C = X.core_filter(2)
    assert C.item_features["title"].tolist() == [f"title {i}" for i in C.items.ids]
    assert C.user_features["age"].tolist() == [int(u[1:]) * 10 for u in C.users.ids]


def test_subset_keeps_timestamps_aligned() -> None:
    rng = np.random.default_rng(0)
    pairs = {(int(u), int(i)) for u, i in rng.integers(0, 30, size=(300, 2))}
    rows = [(u, i, float(1 + (u + i) % 5), 1000 * u + i) for u, i in pairs]
    rng.shuffle(rows)
    X = Interactions.from_frame(frame(rows), rating="rating", time="time")
    users = rng.permutation(X.n_users)[:12]  # unsorted index arrays
    items = rng.permutation(X.n_items)[:20]
    S = X.subset(users=users, items=items)
    assert S.shape == (12, 20)
    df = S.to_frame()
    assert len(df) == S.nnz > 0
    assert (df["time"] == 1000 * df["user"] + df["item"]).all()
    assert (df["rating"] == 1 + (df["user"] + df["item"]) % 5).all()
    expected = {(u, i) for u, i in pairs if u in set(X.users.ids[users]) and i in set(X.items.ids[items])}
    assert set(zip(df["user"], df["item"], strict=True)) == expected
    mask = np.zeros(X.n_users, dtype=bool)
    mask[users] = True
    assert S.subset().nnz == S.nnz and X.subset(users=mask).nnz == X.matrix[users].nnz


def test_idmap_lookup_and_unknown_id() -> None:
    ids = IdMap([10, 20, 30], name="item")
    assert len(ids) == 3 and 20 in ids and "20" in ids
    assert ids.index(30) == 2 and ids.index("30") == 2
    assert ids.indices([30, 10]).tolist() == [2, 0]
    assert ids.raw(np.array([1, 2])).tolist() == [20, 30]
    with pytest.raises(UnknownIdError, match="unknown item id 99"):
        ids.index(99)
    with pytest.raises(UnknownIdError, match="99"):
        ids.indices([10, 99])
    with pytest.raises(DataError, match="appears more than once"):
        IdMap([1, 2, 1], name="user")
    assert IdMap.from_frame(ids.to_frame(), "item") == ids
