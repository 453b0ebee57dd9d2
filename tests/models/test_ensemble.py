"""Ensemble: normalisation known answers, weights, tuning on validation, save/load, crafted files refused."""

import json
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.data.splits import ratio_split
from advrec.errors import ConfigError, ModelFileError
from advrec.io import ARRAYS_FILE, PARAMS_FILE
from advrec.models import EASE, Ensemble, ItemKNN, Pop, Recommender
from advrec.models.ensemble import normalize_scores, simplex_grid
from advrec.testing import check_recommender, two_communities


class Inverted(EASE, register=False):
    """EASE's scores negated: the worst ranking EASE's weights allow."""

    def _score(self, history, users):
        return -super()._score(history, users)


@pytest.mark.parametrize("normalize", ["zscore", "minmax", "rank"])
def test_conformance(normalize, tmp_path):
    check_recommender(lambda: Ensemble([EASE(l2=1.0), ItemKNN(k=10)], normalize=normalize), tmp_path)


def test_normalisation_known_answers():
    scores = np.array([[1.0, 2.0, 3.0, 10.0], [4.0, 4.0, 4.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    seen = sp.csr_matrix(np.array([[0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.float32))
    z = normalize_scores(scores, seen, "zscore")
    s = np.sqrt(2 / 3)  # std of (1, 2, 3): the seen 10 does not count
    np.testing.assert_allclose(z[0], [-1 / s, 0, 1 / s, 8 / s], rtol=1e-6)
    np.testing.assert_array_equal(z[1:], 0)  # constant row; row with nothing unseen
    mm = normalize_scores(scores, seen, "minmax")
    np.testing.assert_allclose(mm[0], [0, 0.5, 1, 4.5])
    np.testing.assert_array_equal(mm[1:], 0)
    r = normalize_scores(np.array([[3.0, 1.0, 2.0, 2.0, 9.0]]), sp.csr_matrix(np.array([[0, 0, 0, 0, 1.0]])), "rank")
    np.testing.assert_allclose(r, [[1.0, 0.0, 0.5, 0.5, 0.0]])  # ties averaged, the seen item 0


def test_simplex_grid():
    grid = simplex_grid(3, 0.5)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert grid.tolist()[0] == [1.0, 0.0, 0.0] and len(grid) == 6
    with pytest.raises(ConfigError, match="grid_step must divide 1"):
        simplex_grid(2, 0.3)
    with pytest.raises(ConfigError, match="raise grid_step or pass weights"):
        simplex_grid(8, 0.01)


def test_weights_one_zero_give_the_first_members_ranking():
    X = two_communities(30, 16)
    ease = EASE(l2=1.0).fit(X)
    ens = Ensemble([ease, Pop()], weights=[1.0, 0.0]).fit(X)
    users = np.arange(X.n_users)
    np.testing.assert_array_equal(ens.recommend(X, users, k=8)[0], ease.recommend(X, users, k=8)[0])
    assert ens.members[0] is ease  # a fitted member is used as it is


def test_tuning_picks_the_clearly_better_member():
    X = two_communities(60, 20)
    split = ratio_split(X, (0.6, 0.2, 0.2), random_state=0)
    good_first = Ensemble([EASE(l2=1.0), Inverted(l2=1.0)], grid_step=0.25).fit(split.train, valid=split)
    np.testing.assert_array_equal(good_first.weights_, [1.0, 0.0])
    # Inverted's z-scores are EASE's negated, so every blend with more weight on EASE ranks as EASE does: the
    # first such vector in grid order, (0.25, 0.75), wins the tie
    good_last = Ensemble([Inverted(l2=1.0), EASE(l2=1.0)], grid_step=0.25).fit(split.train, valid=split)
    np.testing.assert_array_equal(good_last.weights_, [0.25, 0.75])
    users = np.arange(X.n_users)
    ease = good_last.members[1]
    np.testing.assert_array_equal(good_last.recommend(split.train, users)[0], ease.recommend(split.train, users)[0])
    assert good_first.best_valid_ == pytest.approx(good_last.best_valid_) and good_first.best_valid_ > 0.5


def test_tuned_metric_is_the_evaluated_metric():
    from advrec.evaluation import evaluate

    X = two_communities(60, 20, density=0.4)
    split = ratio_split(X, (0.6, 0.2, 0.2), random_state=1)
    ens = Ensemble([EASE(l2=5.0), ItemKNN(k=5), Pop()], grid_step=0.5).fit(split.train, valid=split)
    assert ens.best_valid_ == pytest.approx(evaluate(ens, split, ks=(10,), on="valid").summary["ndcg@10"])


def test_save_load_round_trip(tmp_path):
    X = two_communities(30, 16)
    split = ratio_split(X, (0.6, 0.2, 0.2), random_state=0)
    ens = Ensemble([EASE(l2=1.0), ItemKNN(k=5), Pop()], normalize="rank", grid_step=0.5).fit(split.train, split)
    folder = ens.save(tmp_path / "ens")
    back = Recommender.load(folder)
    assert isinstance(back, Ensemble) and [type(m) for m in back.members] == [EASE, ItemKNN, Pop]
    users = np.arange(X.n_users)
    np.testing.assert_array_equal(back.score(split.train, users), ens.score(split.train, users))
    np.testing.assert_array_equal(back.weights_, ens.weights_)
    assert back.best_valid_ == ens.best_valid_


@pytest.fixture
def saved(tmp_path):
    X = two_communities(20, 8)
    return Ensemble([EASE(l2=1.0), Pop()], weights=[0.7, 0.3]).fit(X).save(tmp_path / "ens")


def _edit_params(folder, change):
    doc = json.loads((folder / PARAMS_FILE).read_text())
    change(doc)
    (folder / PARAMS_FILE).write_text(json.dumps(doc))


def test_unknown_member_class_is_refused(saved):
    _edit_params(saved, lambda d: d["params"]["members"].__setitem__(1, "Pickle"))
    with pytest.raises(ModelFileError, match=r"params.json: member 1: unknown model 'Pickle'"):
        Recommender.load(saved)


def test_member_class_must_match_its_folder(saved):
    _edit_params(saved, lambda d: d["params"]["members"].__setitem__(1, "ItemKNN"))
    with pytest.raises(ModelFileError, match="holds a Pop, not a ItemKNN"):
        Recommender.load(saved)


def test_missing_member_folder_and_bad_member_list_are_refused(saved):
    shutil.rmtree(saved / "members" / "1")
    with pytest.raises(ModelFileError, match=r"member 1 \(Pop\) has no model files"):
        Recommender.load(saved)
    _edit_params(saved, lambda d: d["params"].update(members="EASE"))
    with pytest.raises(ModelFileError, match="'members' must be a non-empty list"):
        Recommender.load(saved)


def test_weights_of_the_wrong_shape_are_refused(saved):
    from safetensors.numpy import load_file, save_file

    arrays = dict(load_file(str(saved / ARRAYS_FILE)))
    arrays["weights_"] = np.array([0.2, 0.3, 0.5])
    save_file(arrays, str(saved / ARRAYS_FILE))
    with pytest.raises(ModelFileError, match=r"'weights_' has shape \(3,\), expected \(2,\)"):
        Recommender.load(saved)


def test_member_of_another_catalogue_is_refused(saved):
    _edit_params(saved, lambda d: d["fitted"].update(n_items_=9))
    with pytest.raises(ModelFileError, match=r"member 0 \(EASE\) has 8 items but .*n_items_ = 9"):
        Recommender.load(saved)


def test_bad_parameters_are_refused():
    X = two_communities(20, 8)
    with pytest.raises(ConfigError, match="at least one member"):
        Ensemble([]).fit(X)
    with pytest.raises(ConfigError, match="member 1 is a str"):
        Ensemble([Pop(), "EASE"]).fit(X)
    with pytest.raises(ConfigError, match="weights must be 2 non-negative numbers"):
        Ensemble([Pop(), EASE()], weights=[1.0]).fit(X)
    with pytest.raises(ConfigError, match="weights must be 2 non-negative numbers"):
        Ensemble([Pop(), EASE()], weights=[1.0, -1.0]).fit(X)
    with pytest.raises(ConfigError, match="normalize"):
        Ensemble([Pop()], normalize="softmax").fit(X)
    with pytest.raises(ConfigError, match="valid_metric must be METRIC@K"):
        Ensemble([Pop()], tune_metric="auc").fit(X)


def test_clone_copies_the_members():
    ens = Ensemble([EASE(l2=2.0)]).fit(two_communities(20, 8))
    twin = ens.clone()
    assert twin.members[0] is not ens.members[0] and not twin.members[0].is_fitted
    assert twin.members[0].l2 == 2.0
