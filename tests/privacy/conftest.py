"""Small data with known structure for the privacy tests."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions


@pytest.fixture(autouse=True)
def _quiet_opacus():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn.*")
        yield


def _random_matrix(n_users: int = 400, n_items: int = 300, density: float = 0.06, seed: int = 1) -> sp.csr_matrix:
    m = sp.random(n_users, n_items, density=density, random_state=seed, format="csr", dtype=np.float32)
    m.data[:] = 1.0
    return m


@pytest.fixture
def random_matrix(seed: int):
    """Factory of random 0/1 users×items matrices (no structure: a model can only memorize them); the test
    seed shifts every matrix's seed."""

    def make(n_users: int = 400, n_items: int = 300, density: float = 0.06, seed: int = 1) -> sp.csr_matrix:
        return _random_matrix(n_users, n_items, density, seed + 1000 * test_seed)

    test_seed = seed
    return make


@pytest.fixture
def tiny_gendered(seed: int) -> Interactions:
    """200 users × 60 items in two taste groups; group = gender (F likes items 0-29, M items 30-59)."""
    rng = np.random.default_rng(seed)
    n, m = 200, 60
    female = rng.random(n) < 0.5
    liked = np.where(female[:, None], np.arange(m)[None, :] < 30, np.arange(m)[None, :] >= 30)
    p = np.where(liked, 0.35, 0.03)
    dense = (rng.random((n, m)) < p).astype(np.float32)
    dense[np.arange(n), rng.integers(0, m, n)] = 1.0
    users = IdMap(np.array([f"user-{i}" for i in range(n)]), "user")
    items = IdMap(np.arange(1000, 1000 + m), "item")
    features = pd.DataFrame({"gender": np.where(female, "F", "M"), "age": rng.choice([1, 25, 35, 50], n)})
    titles = pd.DataFrame({"title": [f"movie {i}" for i in range(m)]})
    return Interactions(sp.csr_matrix(dense), users, items, item_features=titles, user_features=features, name="tiny")
