"""EASE's memory guard and float32 option; SANSA, the large-catalogue EASE, against EASE on a toy matrix."""

import importlib

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ConfigError, DataError
from advrec.models import EASE, SANSA
from advrec.models import ease as ease_module
from advrec.models import sansa as sansa_module


@pytest.fixture
def toy() -> sp.csr_matrix:
    rng = np.random.default_rng(1)
    dense = (rng.random((60, 25)) < 0.3).astype(np.float32)
    dense[np.arange(25), np.arange(25)] = 1.0  # every item seen
    return sp.csr_matrix(dense)


def test_memory_need_is_the_gram_matrix_and_the_weights():
    # the Gram matrix is inverted in place; a float64 solve adds the float32 weights
    assert ease_module.ease_memory_need(40_981) == 40_981**2 * (8 + 4)  # 20.2 GB: Gowalla
    assert ease_module.ease_memory_need(1000, "float32") == 1000**2 * 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_in_place_inverse(dtype):
    rng = np.random.default_rng(0)
    x = rng.random((40, 9))
    a = (x.T @ x + np.eye(9)).astype(dtype)
    expected = np.linalg.inv(a.astype(np.float64))
    out = ease_module.invert_spd_in_place(a, block=4)  # blocks of 4 rows: 9 is not a multiple
    assert out is a
    np.testing.assert_allclose(a, expected, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-6)
    with pytest.raises(DataError, match="not positive definite"):
        ease_module.invert_spd_in_place(-np.eye(3))


def test_memory_guard_names_need_memory_and_alternatives(toy, monkeypatch):
    monkeypatch.setattr(ease_module, "available_memory", lambda: 2_000)  # 25 items: 7.5 kB (float64), 2.5 kB (float32)
    with pytest.raises(ConfigError) as err:
        EASE(l2=1.0).fit(toy)
    msg = str(err.value)
    assert "needs about 7.5 kB" in msg and "25 × 25 float64" in msg  # the need
    assert "this machine has 2.0 kB available" in msg  # the machine's memory
    assert "SANSA" in msg and "GFCF" in msg  # the alternatives
    assert "dtype='float32'" not in msg  # float32 does not fit either: not offered


def test_memory_guard_offers_float32_when_it_fits(monkeypatch):
    monkeypatch.setattr(ease_module, "available_memory", lambda: int(16e9))
    with pytest.raises(ConfigError, match=r"needs about 20\.2 GB.*16\.0 GB available; dtype='float32' needs 6\.7 GB"):
        EASE()._check_memory(40_981)
    EASE(dtype="float32")._check_memory(20_000)  # 3.2 GB: allowed


def test_memory_guard_refuses_before_allocating(toy, monkeypatch):
    monkeypatch.setattr(ease_module, "available_memory", lambda: 0)
    monkeypatch.setattr(ease_module, "invert_spd_in_place", lambda a: pytest.fail("allocated before refusing"))
    with pytest.raises(ConfigError, match="needs about"):
        EASE(l2=1.0).fit(toy)


def test_available_memory_reads_the_machine():
    avail = ease_module.available_memory()
    assert avail is None or avail > 0


def test_float32_matches_float64(toy):
    users = np.arange(toy.shape[0])
    s64 = EASE(l2=2.0).fit(toy).score(toy, users)
    s32 = EASE(l2=2.0, dtype="float32").fit(toy).score(toy, users)
    np.testing.assert_allclose(s32, s64, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        EASE(dtype="float16").fit(toy)


def test_sansa_without_pruning_equals_ease(toy):
    pytest.importorskip("sansa")
    users = np.arange(toy.shape[0])
    ease = EASE(l2=5.0).fit(toy)
    for density in (0.6, 1.0):  # the exact factors of this toy hold 13/25 of n² entries: nothing is dropped
        model = SANSA(l2=5.0, density=density, factorizer="cholmod").fit(toy)
        # measured: max |difference| 2.4e-7
        np.testing.assert_allclose(model.score(toy, users), ease.score(toy, users), atol=1e-5)
        for (i, w), (j, v) in zip(model.explain(toy, 0, 3, n=2), ease.explain(toy, 0, 3, n=2), strict=True):
            assert i == j and w == pytest.approx(v, abs=1e-5)


def test_sansa_pruned_is_sparse_and_close_to_ease(toy, tmp_path):
    pytest.importorskip("sansa")
    model = SANSA(l2=5.0, density=0.4, factorizer="cholmod").fit(toy)
    assert model.encoder_.nnz <= 0.4 * 25**2 and model.decoder_.nnz <= 0.4 * 25**2
    users = np.arange(toy.shape[0])
    S, E = model.score(toy, users), EASE(l2=5.0).fit(toy).score(toy, users)
    assert np.corrcoef(S.ravel(), E.ravel())[0, 1] > 0.95  # measured 0.985 (0.78 at density 0.2)
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(SANSA.load(tmp_path / "m").score(toy, users), S)


def test_sansa_bad_parameters_and_missing_package(toy, monkeypatch):
    with pytest.raises(ConfigError, match="density"):
        SANSA(density=0.0).fit(toy)
    with pytest.raises(ConfigError, match="factorizer"):
        SANSA(factorizer="lu").fit(toy)
    real = importlib.import_module

    def no_sansa(name, *a):
        if name == "sansa":
            raise ImportError("No module named 'sansa'")
        return real(name, *a)

    monkeypatch.setattr(sansa_module.importlib, "import_module", no_sansa)
    with pytest.raises(ConfigError, match=r"needs the 'sansa' package.*libsuitesparse-dev.*sansa==1\.1\.0"):
        SANSA().fit(toy)
