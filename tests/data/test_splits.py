import numpy as np
import pandas as pd
import pytest

from advrec.data.interactions import Interactions
from advrec.data.splits import Split, holdout_users, leave_one_out, ratio_split, temporal_split
from advrec.errors import DataError
from advrec.testing import two_communities


def _frame(n_users=30, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = rng.integers(1, 25)
        for i in rng.choice(n_items, n, replace=False):
            rows.append((f"u{u}", int(i), float(rng.integers(1, 6)), int(rng.integers(0, 10_000))))
    return pd.DataFrame(rows, columns=["user", "item", "rating", "time"])


@pytest.fixture
def X():
    return Interactions.from_frame(_frame(), rating="rating", time="time")


def _parts_cover(split, X, parts=("train", "valid", "test")):
    total = sum(getattr(split, p).matrix for p in parts if getattr(split, p) is not None)
    assert total.nnz == X.nnz
    np.testing.assert_array_equal(total.toarray(), X.matrix.toarray())


def test_ratio_split_recbole_counts(X):
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=1)
    _parts_cover(split, X)
    deg = X.user_counts()
    nv, nt = split.valid.user_counts(), split.test.user_counts()
    for n, v, t in zip(deg, nv, nt, strict=True):
        # RecBole: floor(0.1 n) each; a part with 0 < 0.1 n < 1 still gets one while train keeps > 1
        exp_t = int(0.1 * n) + (1 if 0 < 0.1 * n < 1 and n - int(0.1 * n) * 2 > 1 else 0)
        exp_v = int(0.1 * n) + (1 if 0 < 0.1 * n < 1 and n - 2 * int(0.1 * n) - (exp_t - int(0.1 * n)) > 1 else 0)
        assert (v, t) == (exp_v, exp_t), n


def test_ratio_split_hand_case():
    # one user with 10 items -> 8/1/1, one with 3 -> 1/1/1, one with 1 -> 1/0/0
    df = pd.DataFrame({"user": [0] * 10 + [1] * 3 + [2], "item": [*range(10), 0, 1, 2, 5]})
    split = ratio_split(Interactions.from_frame(df), random_state=3)
    assert split.train.user_counts().tolist() == [8, 1, 1]
    assert split.valid.user_counts().tolist() == [1, 1, 0]
    assert split.test.user_counts().tolist() == [1, 1, 0]


def test_same_seed_same_split_other_seed_differs(X):
    a, b, c = ratio_split(X, random_state=7), ratio_split(X, random_state=7), ratio_split(X, random_state=8)
    assert (a.test.matrix != b.test.matrix).nnz == 0
    assert (a.test.matrix != c.test.matrix).nnz > 0


def test_ratio_split_rejects_bad_ratios(X):
    with pytest.raises(DataError, match="ratios"):
        ratio_split(X, (0.5, 0.1, 0.1))


def test_leave_one_out_takes_latest(X):
    split = leave_one_out(X, random_state=0)
    _parts_cover(split, X)
    deg = X.user_counts()
    assert (split.test.user_counts() == (deg >= 2)).all()
    assert (split.valid.user_counts() == (deg >= 3)).all()
    # the test item is the user's latest interaction
    df = X.to_frame(raw_ids=False)
    test = split.test.to_frame(raw_ids=False)
    latest = df.groupby("user")["time"].max()
    assert (test.set_index("user")["time"] == latest.loc[test["user"]].to_numpy()).all()


def test_leave_one_out_ties_broken_by_seed():
    df = pd.DataFrame({"user": [0] * 5, "item": range(5), "time": [1] * 5})
    X = Interactions.from_frame(df, time="time")
    picks = {int(leave_one_out(X, random_state=s).test.matrix.indices[0]) for s in range(20)}
    assert len(picks) > 1
    assert (
        leave_one_out(X, random_state=4).test.matrix.indices[0]
        == leave_one_out(X, random_state=4).test.matrix.indices[0]
    )


def test_temporal_split_cuts_globally(X):
    split = temporal_split(X, (0.8, 0.1, 0.1))
    _parts_cover(split, X)
    assert split.train.timestamps.max() < split.valid.timestamps.min()
    assert split.valid.timestamps.max() < split.test.timestamps.min()
    assert abs(split.train.nnz / X.nnz - 0.8) < 0.05


@pytest.mark.statistical
def test_holdout_users_strong_generalization(seed, claim):
    X = two_communities(n_users=60, n_items=30, random_state=seed)
    split = holdout_users(X, n_valid=10, n_test=10, random_state=seed)
    train_users = set(np.flatnonzero(split.train.user_counts()))
    held = np.flatnonzero(split.test.user_counts())
    assert not train_users & set(held)
    assert not train_users & set(np.flatnonzero(split.valid.user_counts()))
    # fold-in is 80% of each held-out user's items, rounded up: 0.831-0.868 of them over seeds 0-9
    fi, te = split.fold_in.user_counts()[held], split.test.user_counts()[held]
    assert np.all(fi >= te) and 0.78 < claim("fold-in share", fi.sum() / (fi.sum() + te.sum())) < 0.92
    es = split.eval_set("test")
    assert set(es.users) == set(held)
    assert es.history[held].nnz == fi.sum()


def test_eval_set_excludes_valid_items_on_test(X):
    split = ratio_split(X, random_state=0)
    es = split.eval_set("test")
    assert (es.exclude - ((split.train.matrix + split.valid.matrix) > 0)).nnz == 0
    assert (es.history != split.train.matrix).nnz == 0
    with pytest.raises(DataError):
        split.eval_set("nope")


@pytest.mark.parametrize("maker", [lambda X: ratio_split(X, random_state=0), lambda X: holdout_users(X, 3, 3)])
def test_split_parquet_round_trip(X, tmp_path, maker):
    split = maker(X)
    split.save(tmp_path / "s")
    back = Split.load(tmp_path / "s", like=X)
    for part in ("train", "valid", "test", "fold_in"):
        a, b = getattr(split, part), getattr(back, part)
        assert (a is None) == (b is None)
        if a is not None:
            assert (a.matrix != b.matrix).nnz == 0
            np.testing.assert_array_equal(a.timestamps, b.timestamps)
            assert a.users == b.users and a.items == b.items
    assert back.protocol == split.protocol


def test_split_load_missing_dir(tmp_path):
    with pytest.raises(DataError, match="missing"):
        Split.load(tmp_path)


def test_empty_interactions_rejected():
    X = Interactions.from_frame(pd.DataFrame({"user": [1], "item": [1]})).select_entries(np.array([False]))
    with pytest.raises(DataError, match="empty"):
        ratio_split(X)


def test_cold_items_hold_out_whole_items(X):
    from advrec.data.splits import cold_items

    split = cold_items(X, 0.3, random_state=0)
    _parts_cover(split, X)
    cold_v, cold_t = split.protocol["cold_items"]["valid"], split.protocol["cold_items"]["test"]
    assert not set(cold_v) & set(cold_t)
    assert split.train.item_counts()[cold_v + cold_t].sum() == 0
    assert set(np.flatnonzero(split.test.item_counts())) <= set(cold_t)
    es = split.eval_set("test", cold_only=True)
    assert list(es.candidates) == sorted(cold_t)
    assert split.eval_set("test").candidates is None
    with pytest.raises(DataError, match="cold_items"):
        ratio_split(X).eval_set("test", cold_only=True)
    with pytest.raises(DataError, match="fraction"):
        cold_items(X, 1.5)


def test_holdout_users_with_fixed_fold_in_items():
    X = two_communities(n_users=60, n_items=30)
    split = holdout_users(X, n_valid=5, n_test=10, fold_in_items=3, random_state=0)
    held = np.flatnonzero(split.test.user_counts())
    assert len(held) > 0
    assert (split.fold_in.user_counts()[held] == 3).all()
    with pytest.raises(DataError, match="fold_in_items"):
        holdout_users(X, 5, 5, fold_in_items=0)
