"""Integration: every model beats popularity on real data (ml-100k, per-user 8:1:1, full ranking)."""

import numpy as np
import pytest

from advrec.data import load_movielens
from advrec.data.splits import holdout_users, ratio_split
from advrec.errors import UnknownIdError
from advrec.evaluation import evaluate
from advrec.models import BPRMF, EASE, ItemKNN, MultVAE, Pop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def split(data_dir):
    X = load_movielens("ml-100k", data_dir=data_dir, min_rating=4)
    return ratio_split(X, random_state=0)


@pytest.fixture(scope="module")
def pop_ndcg(split):
    return evaluate(Pop().fit(split.train), split, ks=(10,)).summary["ndcg@10"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ItemKNN(),
        lambda: EASE(),
        lambda: BPRMF(epochs=25, lr=5e-3, device="cpu"),
        lambda: MultVAE(epochs=30, device="cpu"),
    ],
    ids=["ItemKNN", "EASE", "BPRMF", "MultVAE"],
)
def test_beats_popularity(make, split, pop_ndcg):
    model = make().fit(split.train, valid=split)
    ndcg = evaluate(model, split, ks=(10,)).summary["ndcg@10"]
    assert ndcg > 1.3 * pop_ndcg, f"{type(model).__name__} ndcg@10 {ndcg:.4f} vs Pop {pop_ndcg:.4f}"


def test_early_stopping_keeps_best_epoch(split):
    model = BPRMF(epochs=12, lr=5e-3, patience=3, device="cpu").fit(split.train, valid=split)
    log = model.training_log_
    assert model.epochs_run_ == len(log) <= 12
    best = max(r["valid_ndcg@10"] for r in log)
    assert model.best_valid_ndcg_ == pytest.approx(best)
    # the weights kept are those of the best epoch
    again = evaluate(model, split, ks=(10,), on="valid").summary["ndcg@10"]
    assert again == pytest.approx(best, abs=1e-6)


def test_history_models_score_unseen_users(data_dir):
    X = load_movielens("ml-100k", data_dir=data_dir, min_rating=4)
    split = holdout_users(X, n_valid=50, n_test=50, random_state=0)
    pop = evaluate(Pop().fit(split.train), split, ks=(10,)).summary["ndcg@10"]
    for model in (EASE(), ItemKNN(), MultVAE(epochs=20, device="cpu")):
        model.fit(split.train, valid=split)
        ndcg = evaluate(model, split, ks=(10,)).summary["ndcg@10"]
        assert ndcg > pop, type(model).__name__
    bpr = BPRMF(epochs=1, device="cpu").fit(split.train)
    # BPRMF keeps one vector per user: users are rows of the training matrix, so held-out users have
    # untrained vectors; scoring a user outside the matrix is refused
    with pytest.raises(UnknownIdError, match=r"not seen in training|outside"):
        bpr.score(split.history()[:10], np.array([X.n_users + 1]))
