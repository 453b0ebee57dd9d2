"""The synthetic generator: seeds, exact counts without duplicates, chunk invariance, peak memory, clusters,
timestamps, and the power-law fit recovering known exponents."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.data.synthetic import RNG_BLOCK, alias_table, fit_discrete_power_law, fit_power_law, like
from advrec.data.synthetic import synthetic_interactions as synth
from advrec.errors import ConfigError, DataError


def same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return bool(np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices))


def test_same_seed_same_matrix_other_seed_another() -> None:
    a, b = synth(3_000, 500, 40_000, random_state=5), synth(3_000, 500, 40_000, random_state=5)
    assert same(a.matrix, b.matrix)
    assert not same(a.matrix, synth(3_000, 500, 40_000, random_state=6).matrix)
    g1, g2 = synth(300, 50, 3_000, random_state=np.random.default_rng(1)), synth(300, 50, 3_000, random_state=1)
    assert g1.nnz == g2.nnz == 3_000  # a Generator is accepted as random_state


@pytest.mark.parametrize("clusters", [None, 4])
def test_exact_counts_and_no_duplicate_pairs(clusters: int | None) -> None:
    X = synth(5_000, 800, 120_000, clusters=clusters, max_user_degree=400, random_state=3)
    m = X.matrix
    assert X.shape == (5_000, 800) and X.nnz == 120_000 and m.dtype == np.float32
    assert set(np.unique(m.data).tolist()) == {1.0}
    key = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)) * m.shape[1] + m.indices
    assert len(np.unique(key)) == m.nnz  # no (user, item) pair twice
    assert m.has_sorted_indices and X.user_counts().min() >= 1 and X.user_counts().max() <= 400
    assert X.users.ids.tolist() == list(range(5_000)) and X.meta["max_user_degree"] == 400


def test_chunked_build_equals_unchunked() -> None:
    args = (3 * RNG_BLOCK + 100, 600, 150_000)
    whole = synth(*args, clusters=3, timestamps=True, random_state=11, chunk_users=10**9)
    for chunk in (1, RNG_BLOCK, 2 * RNG_BLOCK + 1):  # rounded up to whole blocks of users
        part = synth(*args, clusters=3, timestamps=True, random_state=11, chunk_users=chunk)
        assert same(whole.matrix, part.matrix)
        assert np.array_equal(whole.timestamps, part.timestamps)  # type: ignore[arg-type]


def test_heavy_users_are_filled_exactly() -> None:
    # users asking for most of the catalogue leave rejection sampling short; the exact fallback fills them
    X = synth(200, 300, 40_000, user_exponent=1.5, random_state=2)
    assert X.nnz == 40_000 and X.user_counts().max() == 300
    # at affinity 1 a user wanting more items than its group holds gets the rest from outside it, no item twice
    Y = synth(400, 300, 60_000, clusters=6, cluster_affinity=1.0, random_state=0)
    m = Y.matrix
    assert len(np.unique(np.repeat(np.arange(400), np.diff(m.indptr)) * 300 + m.indices)) == Y.nnz == 60_000


def test_peak_memory_within_twice_the_output() -> None:
    tracemalloc.start()
    try:
        X = synth(200_000, 20_000, 2_000_000, random_state=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    m = X.matrix
    output = m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    assert peak <= 2 * output, f"peak {peak / 2**20:.1f} MiB for {output / 2**20:.1f} MiB of CSR"  # measured 1.38×


def test_timestamps_do_not_change_the_matrix() -> None:
    plain, timed = synth(2_000, 300, 30_000, random_state=4), synth(2_000, 300, 30_000, timestamps=True, random_state=4)
    assert same(plain.matrix, timed.matrix) and plain.timestamps is None
    t = timed.timestamps
    assert t is not None and t.dtype == np.int64 and len(t) == timed.nnz
    assert t.min() >= 1_230_768_000 and t.max() < 1_293_840_000  # 2009-2010


@pytest.mark.statistical
def test_clusters_concentrate_users_on_their_group(seed: int, claim: Callable[[str, float], float]) -> None:
    def own_share(affinity: float) -> float:
        X = synth(4_000, 1_000, 80_000, clusters=5, cluster_affinity=affinity, random_state=seed)
        m = X.matrix
        assert X.user_features is not None and X.item_features is not None
        ug, ig = X.user_features["group"].to_numpy(), X.item_features["group"].to_numpy()
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        return float(np.mean(ug[rows] == ig[m.indices]))

    # a share a + (1 - a)/5 is drawn in the own group; redraws of duplicates and saturated groups lower it a little
    high, none = claim("own_share_0.8", own_share(0.8)), claim("own_share_0", own_share(0.0))
    assert high > 0.7  # seeds 0-9: 0.760-0.793
    assert abs(none - 0.2) < 0.03  # seeds 0-9: 0.198-0.202


@pytest.mark.statistical
def test_fit_recovers_the_generators_exponents(seed: int, claim: Callable[[str, float], float]) -> None:
    X = synth(50_000, 5_000, 500_000, item_exponent=2.2, user_exponent=2.8, random_state=seed)
    fit = fit_power_law(X)
    items, users = claim("item_exponent", fit.items.exponent), claim("user_exponent", fit.users.exponent)
    assert abs(items - 2.2) < 0.1  # seeds 0-9: 2.18-2.25
    assert abs(users - 2.8) < 0.05  # seeds 0-9: 2.795-2.815
    assert fit.items.ks < 0.03 and fit.users.ks < 0.01  # seeds 0-9: 0.008-0.016 and 0.0019-0.0032
    assert fit.items.n_tail >= 100 and fit.users.n == 50_000


def test_discrete_fit_on_a_pure_power_law() -> None:
    rng = np.random.default_rng(0)
    # a continuous Pareto of exponent 2.5 rounded down is close to a discrete power law of the same exponent
    k = np.floor(5 * (1 - rng.random(200_000)) ** (-1 / 1.5)).astype(int)
    fit = fit_discrete_power_law(k)
    assert abs(fit.exponent - 2.5) < 0.05 and fit.xmin >= 5
    with pytest.raises(DataError, match="at least 100 positive values"):
        fit_discrete_power_law(np.arange(50))


def test_like_uses_the_fit_of_the_data() -> None:
    X = synth(20_000, 2_000, 200_000, item_exponent=2.3, user_exponent=3.0, random_state=1)
    Y = like(X, 10_000, 1_000, 90_000, random_state=2)
    assert Y.shape == (10_000, 1_000) and Y.nnz == 90_000
    assert Y.meta["fit"] == fit_power_law(X).to_dict()
    assert Y.meta["item_exponent"] == Y.meta["fit"]["items"]["exponent"]


def test_alias_table_is_exact() -> None:
    rng = np.random.default_rng(0)
    for p in (rng.pareto(0.7, 5_000) + 1e-12, np.ones(7), np.eye(1, 9, 4).ravel(), np.r_[0.0, 0.0, 3.0, 1.0]):
        p = p / p.sum()
        prob, alias = alias_table(p)
        implied = (prob + np.bincount(alias, weights=1 - prob, minlength=len(p))) / len(p)
        assert np.allclose(implied, p, atol=1e-12) and prob.min() >= 0 and prob.max() <= 1


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        (dict(nnz=10), "nnz must lie in"),
        (dict(nnz=10**9), "nnz must lie in"),
        (dict(item_exponent=1.0), "item_exponent must be > 1"),
        (dict(clusters=0), "clusters must lie in"),
        (dict(cluster_affinity=1.5), "cluster_affinity must lie in"),
        (dict(max_user_degree=0), "max_user_degree must lie in"),
    ],
)
def test_bad_arguments_are_named(kw: dict[str, float], key: str) -> None:
    args = {"n_users": 100, "n_items": 50, "nnz": 1_000, **kw}
    with pytest.raises(ConfigError, match=key):
        synth(**args)  # type: ignore[arg-type]
