"""Loading refuses model files whose arrays are missing, out of range, not finite or of the wrong dtype or shape."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from advrec.errors import ModelFileError
from advrec.io import ARRAYS_FILE, PARAMS_FILE
from advrec.models import (
    ADMMSLIM,
    BPRMF,
    BSPM,
    CFGAN,
    EASE,
    EDLAE,
    GFCF,
    IALS,
    IRGAN,
    SANSA,
    BERT4Rec,
    Ensemble,
    GenreAffinity,
    ItemKNN,
    LightGCN,
    MultVAE,
    Pop,
    RecVAE,
    SASRec,
    TextEASE,
    TextKNN,
    UniSRec,
)
from advrec.models.base import _REGISTRY, Recommender
from advrec.testing import two_communities

TORCH = {"device": "cpu", "epochs": 1, "random_state": 0}


def _genre_data():
    X = two_communities(12, 8)
    X.item_features = pd.DataFrame({"genres": ["a|b", "a", "b", "c", "a|c", "", "b|c", "c"]})
    return X


def _text_state(model: Recommender, n_users: int, n_items: int, **state: object) -> Recommender:
    """A text model with made-up learned state (fitting it needs a sentence encoder)."""
    model.__dict__.update(n_users_=n_users, n_items_=n_items, encoder_identity_="test-encoder", **state)
    return model


def make(name: str) -> Recommender:
    """A small fitted model of each registered class."""
    X = two_communities(12, 8)
    rng = np.random.default_rng(0)
    if name == "Pop":
        return Pop().fit(X)
    if name == "ItemKNN":
        return ItemKNN(k=3).fit(X)
    if name == "EASE":
        return EASE(l2=1.0).fit(X)
    if name == "EDLAE":
        return EDLAE(l2=1.0).fit(X)
    if name == "ADMMSLIM":
        return ADMMSLIM(l1=0.1, l2=1.0, alpha=0.0, rho=1.0, iterations=20).fit(X)
    if name == "Ensemble":
        return Ensemble([EASE(l2=1.0), ItemKNN(k=3)], weights=[0.6, 0.4]).fit(X)
    if name == "GFCF":
        return GFCF(k=2).fit(X)
    if name == "BSPM":
        return BSPM(k=2).fit(X)
    if name == "SANSA":  # made-up factors: fitting needs the optional sansa package
        factor = sp.random(8, 8, density=0.4, format="csr", random_state=0, dtype=np.float32)
        model = SANSA()
        model.__dict__.update(n_users_=12, n_items_=8, encoder_=factor, decoder_=factor.T.tocsr())
        return model
    if name == "GenreAffinity":
        return GenreAffinity().fit(_genre_data())
    if name == "IALS":
        return IALS(factors=3, iterations=2, device="cpu", random_state=0).fit(X)
    if name == "BPRMF":
        return BPRMF(factors=4, **TORCH).fit(X)
    if name == "LightGCN":
        return LightGCN(factors=4, layers=2, **TORCH).fit(X)
    if name == "MultVAE":
        return MultVAE(hidden=8, latent=2, **TORCH).fit(X)
    if name == "RecVAE":
        return RecVAE(hidden=8, latent=2, depth=2, **TORCH).fit(X)
    if name == "BERT4Rec":
        return BERT4Rec(dim=4, blocks=1, heads=1, max_len=4, **TORCH).fit(X)
    if name == "UniSRec":
        vectors = rng.random((8, 3)).astype(np.float32)
        with mock.patch("advrec.models.unisrec.encode_items", lambda *a, **k: (vectors, "test-encoder")):
            return UniSRec(dim=4, blocks=1, heads=1, max_len=4, **TORCH).fit(X)
    if name == "SASRec":
        return SASRec(dim=4, blocks=1, max_len=4, **TORCH).fit(X)
    if name == "CFGAN":
        return CFGAN(g_hidden=(8,), d_hidden=(8,), **TORCH).fit(X)
    if name == "IRGAN":
        return IRGAN(factors=2, pretrain_epochs=1, d_warmup=0, d_steps=1, g_steps=1, **TORCH).fit(X)
    if name == "TextKNN":
        return _text_state(TextKNN(), 12, 8, item_vectors_=rng.random((8, 3)).astype(np.float32))
    if name == "TextEASE":
        weights = rng.random((8, 8)).astype(np.float32)
        return _text_state(TextEASE(), 12, 8, weights_=weights, cold_items_=np.array([3]), cold_scale_=1.0)
    raise AssertionError(f"no test model for {name}")


MODELS = sorted(name for name, cls in _REGISTRY.items() if cls._score is not Recommender._score)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: make(name).save(root / name) for name in MODELS}


def edit_arrays(folder: Path, change) -> Path:
    arrays = dict(load_file(str(folder / ARRAYS_FILE)))
    change(arrays)
    save_file(arrays, str(folder / ARRAYS_FILE))
    return folder


def edit_params(folder: Path, change) -> Path:
    doc = json.loads((folder / PARAMS_FILE).read_text())
    change(doc)
    (folder / PARAMS_FILE).write_text(json.dumps(doc))
    return folder


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)  # with sub-folders: an ensemble's members
    return dst


def test_every_registered_model_has_a_case():
    assert set(MODELS) == {
        "ADMMSLIM", "BERT4Rec", "BPRMF", "BSPM", "CFGAN", "EASE", "EDLAE", "Ensemble", "GFCF", "GenreAffinity",
        "IALS", "IRGAN", "ItemKNN", "LightGCN", "MultVAE", "Pop", "RecVAE", "SANSA", "SASRec", "TextEASE", "TextKNN",
        "UniSRec",
    }  # fmt: skip


@pytest.mark.parametrize("name", MODELS)
def test_each_array_and_required_value_is_required(name, saved, tmp_path):
    """Removing any stored array, or a value the class declares, is refused with an error that names it."""
    src = saved[name]
    type(Recommender.load(src))  # the intact files load
    arrays = list(load_file(str(src / ARRAYS_FILE)))
    assert arrays
    for key in arrays:
        folder = edit_arrays(copy_of(src, tmp_path / f"a-{key}"), lambda a, key=key: a.pop(key))
        with pytest.raises(ModelFileError, match=rf"{ARRAYS_FILE}.*'{key}'"):
            Recommender.load(folder)
    cls = _REGISTRY[name]
    values = [k for k, spec in cls._required_state.items() if spec.kind == "value"] + ["n_users_", "n_items_"]
    for key in values:
        folder = edit_params(copy_of(src, tmp_path / f"v-{key}"), lambda d, key=key: d["fitted"].pop(key))
        with pytest.raises(ModelFileError, match=rf"{PARAMS_FILE}.*'{key}'"):
            Recommender.load(folder)


@pytest.mark.parametrize("name", MODELS)
def test_arrays_must_fit_the_saved_user_and_item_counts(name, saved, tmp_path):
    """One user and one item more in params.json than the arrays hold is refused, naming an array and the counts
    (item-based CFGAN holds no item-sized array, user-history models no user-sized one: both counts change)."""
    folder = edit_params(copy_of(saved[name], tmp_path / "m"), lambda d: d["fitted"].update(n_users_=13, n_items_=9))
    # an ensemble holds no user- or item-sized array of its own: its members' item count must match
    message = "member 0 .* has 8 items but .*n_items_ = 9" if name == "Ensemble" else "array '.*' has shape .*"
    with pytest.raises(
        ModelFileError, match=rf"{message}n_users_ = 13, n_items_ = 9" if name != "Ensemble" else message
    ):
        Recommender.load(folder)


def test_bprmf_with_one_user_vector_short_is_refused(saved, tmp_path):
    def drop_last_user(a):
        a["network.user.weight"] = np.ascontiguousarray(a["network.user.weight"][:-1])

    folder = edit_arrays(copy_of(saved["BPRMF"], tmp_path / "m"), drop_last_user)
    with pytest.raises(ModelFileError, match=r"'network.user.weight' has shape \(11, 4\), expected \(12, 4\)"):
        BPRMF.load(folder)


def test_unexpected_network_array_is_refused(saved, tmp_path):
    folder = edit_arrays(copy_of(saved["BPRMF"], tmp_path / "m"), lambda a: a.update({"network.extra": np.zeros(2)}))
    with pytest.raises(ModelFileError, match=r"'network\.extra' is not part of a BPRMF network"):
        BPRMF.load(folder)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (5000, r"'similarity_.indices' has index 5000 outside 0..7"),
        (-3, r"'similarity_.indices' has index -3 outside 0..7"),
    ],
)
def test_item_knn_index_outside_the_matrix_is_refused(saved, tmp_path, bad, message):
    def corrupt(a):
        a["similarity_.indices"][2] = bad

    folder = edit_arrays(copy_of(saved["ItemKNN"], tmp_path / "m"), corrupt)
    with pytest.raises(ModelFileError, match=rf"{ARRAYS_FILE}: array {message}"):
        ItemKNN.load(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update({"similarity_.indices": a["similarity_.indices"].astype(np.float64)}), "float64, expected"),
        (lambda a: a.update({"similarity_.indptr": a["similarity_.indptr"][:-1].copy()}), r"entries, expected 9"),
        (lambda a: a.update({"similarity_.indptr": a["similarity_.indptr"][::-1].copy()}), "runs from"),
        (lambda a: a.update({"similarity_.data": a["similarity_.data"][:-1].copy()}), "values for"),
        (lambda a: a["similarity_.data"].__setitem__(0, np.nan), r"'similarity_.data' has nan at \[0\]"),
    ],
)
def test_item_knn_sparse_parts_are_checked(saved, tmp_path, change, message):
    folder = edit_arrays(copy_of(saved["ItemKNN"], tmp_path / "m"), change)
    with pytest.raises(ModelFileError, match=message):
        ItemKNN.load(folder)


def test_indptr_that_decreases_is_refused(saved, tmp_path):
    def corrupt(a):
        p = a["similarity_.indptr"]
        p[3], p[4] = p[4], p[3] - 1 if p[4] == p[3] else p[3]

    folder = edit_arrays(copy_of(saved["ItemKNN"], tmp_path / "m"), corrupt)
    with pytest.raises(ModelFileError, match=r"'similarity_\.indptr' decreases after row"):
        ItemKNN.load(folder)


def test_sparse_shape_must_be_two_non_negative_ints(saved, tmp_path):
    folder = edit_params(
        copy_of(saved["ItemKNN"], tmp_path / "m"), lambda d: d["fitted"]["similarity_"].update(shape=[8])
    )
    with pytest.raises(ModelFileError, match="sparse array 'similarity_' has shape"):
        ItemKNN.load(folder)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(saved, tmp_path, value):
    def corrupt(a):
        a["weights_"][2, 5] = value

    folder = edit_arrays(copy_of(saved["EASE"], tmp_path / "m"), corrupt)
    with pytest.raises(ModelFileError, match=rf"array 'weights_' has {value} at \[2, 5\]"):
        EASE.load(folder)


def test_non_finite_network_weight_is_refused(saved, tmp_path):
    def corrupt(a):
        a["network.item.weight"][1, 0] = np.inf

    folder = edit_arrays(copy_of(saved["BPRMF"], tmp_path / "m"), corrupt)
    with pytest.raises(ModelFileError, match=r"'network.item.weight' has inf at \[1, 0\]"):
        BPRMF.load(folder)


def test_wrong_dtypes_are_refused(saved, tmp_path):
    folder = edit_arrays(
        copy_of(saved["EASE"], tmp_path / "e"), lambda a: a.update(weights_=np.zeros((8, 8), np.int64))
    )
    with pytest.raises(ModelFileError, match="'weights_' has dtype int64, expected a float dtype"):
        EASE.load(folder)
    folder = edit_arrays(
        copy_of(saved["BPRMF"], tmp_path / "b"), lambda a: a.update({"network.item.weight": np.zeros((8, 4), np.int32)})
    )
    with pytest.raises(ModelFileError, match=r"'network\.item\.weight' has dtype int32, expected torch\.float32"):
        BPRMF.load(folder)


def test_truncated_arrays_file_is_refused(saved, tmp_path):
    folder = copy_of(saved["EASE"], tmp_path / "m")
    data = (folder / ARRAYS_FILE).read_bytes()
    (folder / ARRAYS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=f"{ARRAYS_FILE} cannot be read as safetensors"):
        EASE.load(folder)


def test_unknown_parameter_is_refused(saved, tmp_path):
    folder = edit_params(copy_of(saved["EASE"], tmp_path / "m"), lambda d: d["params"].update(bogus=1))
    with pytest.raises(ModelFileError, match=f"{PARAMS_FILE}: the parameters of EASE are refused"):
        EASE.load(folder)


def test_crafted_item_knn_fails_cleanly_in_a_fresh_process(tmp_path):
    """An out-of-range neighbour index used to crash the process when scoring; now loading refuses it."""
    X = two_communities(40, 2000, density=0.01)
    folder = ItemKNN(k=5).fit(X).save(tmp_path / "m")

    def corrupt(a):
        a["similarity_.indices"][:] = 10**9

    edit_arrays(folder, corrupt)
    code = (
        "import numpy as np, scipy.sparse as sp\n"
        "from advrec.models import ItemKNN\n"
        f"m = ItemKNN.load({str(folder)!r})\n"
        "h = sp.random(50, m.n_items_, density=0.5, format='csr', dtype=np.float32, random_state=0)\n"
        "m.recommend(h, np.arange(50), k=10)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])  # an exception, not a signal
    assert "ModelFileError" in res.stderr and "'similarity_.indices' has index 1000000000 outside 0..1999" in res.stderr


def test_sparse_state_round_trips(tmp_path):
    W = sp.random(6, 5, density=0.4, format="csr", random_state=1, dtype=np.float32)
    model = _text_state(TextEASE(), 3, 5, weights_=np.zeros((5, 5), np.float32), cold_items_=np.array([], np.int64))
    model.cold_scale_, model.extra_ = 1.0, W
    back = TextEASE.load(model.save(tmp_path / "m"))
    assert (back.extra_ != W).nnz == 0 and back.cold_items_.dtype.kind == "i"
