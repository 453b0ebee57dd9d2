"""Shilling attacks, their metrics and the fake-profile detector: known answers on tiny data, ml-100k checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from advrec.data import load_movielens
from advrec.data.interactions import Interactions
from advrec.data.splits import ratio_split
from advrec.errors import ConfigError, UnknownIdError
from advrec.models import EASE, ItemKNN, Pop
from advrec.robustness.attacks import KINDS, ShillingAttack, fake_profiles, inject, pick_targets
from advrec.robustness.detect import ShillingDetector, detection_scores, profile_features, robust_fit, without_users
from advrec.robustness.metrics import attack_effect, target_ranks


def rated(n_users: int = 50, n_items: int = 40, seed: int = 0) -> Interactions:
    """Ratings 1–5 on a random sparse matrix, with genres."""
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=0.3, random_state=rng, format="csr", dtype=np.float32)
    m.data = rng.integers(1, 6, size=m.nnz).astype(np.float32)
    genres = pd.DataFrame({"genres": ["Drama" if i % 2 else "Comedy|Drama" if i % 5 == 0 else "Comedy"
                                      for i in range(n_items)]})  # fmt: skip
    X = Interactions.from_frame(
        pd.DataFrame({"user": m.tocoo().row, "item": m.tocoo().col, "rating": m.tocoo().data}),
        user="user", item="item", rating="rating",
    )  # fmt: skip
    X.item_features = genres.iloc[X.items.ids.astype(int)].reset_index(drop=True)
    return X


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "gan"])
def test_fake_profiles_have_the_attack_shape(kind: str) -> None:
    X = rated()
    attack = ShillingAttack(kind, targets=[3], size=0.1, filler=6, selected=3, popular_share=0.5)
    fake = fake_profiles(X, attack, random_state=0)
    assert fake.shape == (5, X.n_items)  # 10% of 50 users
    assert (fake[:, 3].toarray() == 5).all()  # push: target rated max
    assert (np.diff(fake.indptr) == 7).all()  # filler 6 (selected items included) + target
    assert fake.data.min() >= 1 and fake.data.max() <= 5
    assert np.allclose(fake.data, np.rint(fake.data))
    np.testing.assert_array_equal(fake.toarray(), fake_profiles(X, attack, random_state=0).toarray())
    nuke = fake_profiles(X, ShillingAttack(kind, targets=[3], size=0.1, filler=6, intent="nuke"), random_state=0)
    assert (nuke[:, 3].toarray() == 1).all()


def test_bandwagon_and_segment_pick_their_items() -> None:
    X = rated()
    popular = np.argsort(-X.item_counts(), kind="stable")
    fake = fake_profiles(X, ShillingAttack("bandwagon", [popular[0]], size=0.1, filler=5, selected=2), 0)
    top2 = popular[1:3]  # the target itself is not a selected item
    assert (fake[:, top2].toarray() == 5).all()
    target = int(np.flatnonzero(X.item_features["genres"] == "Comedy")[0])
    seg = fake_profiles(X, ShillingAttack("segment", [target], size=0.1, filler=8, selected=3), 0)
    comedy = {i for i, g in enumerate(X.item_features["genres"]) if "Comedy" in g}
    maxed = set(np.flatnonzero((seg.toarray() == 5).all(axis=0))) - {target}
    assert maxed and maxed <= comedy
    assert set(seg.data) == {1.0, 5.0}  # segment filler rated min


def test_popular_attack_fills_from_the_head() -> None:
    X = rated(n_items=100)
    fake = fake_profiles(X, ShillingAttack("popular", [0], size=0.1, filler=5, popular_share=0.1), 0)
    head = set(np.argsort(-X.item_counts(), kind="stable")[:11].tolist())
    assert set(fake.indices.tolist()) - {0} <= head


def test_inject_appends_fakes_and_keeps_genuine_rows() -> None:
    X = rated()
    poisoned, fake = inject(X, ShillingAttack("average", [1, 2], size=0.04), random_state=1)
    np.testing.assert_array_equal(fake, [50, 51])
    assert (poisoned.matrix[:50] != X.matrix).nnz == 0
    assert poisoned.users.raw(50) not in X.users
    assert poisoned.meta["attack"]["kind"] == "average"


def test_bad_attacks_are_refused() -> None:
    X = rated()
    with pytest.raises(ConfigError, match="kind"):
        fake_profiles(X, ShillingAttack("sybil", [1]))
    with pytest.raises(UnknownIdError, match="target"):
        fake_profiles(X, ShillingAttack("random", [400]))
    with pytest.raises(ConfigError, match="size"):
        fake_profiles(X, ShillingAttack("random", [1], size=0.0))
    with pytest.raises(ConfigError, match="generator"):
        fake_profiles(X, ShillingAttack("gan", [1]))


def test_target_ranks_known_answer() -> None:
    history = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    pop = Pop().fit(sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=np.float32)))
    ranks, _ = target_ranks(pop, history, [1, 3], np.array([0, 1]))
    # user 0 sees item 0; unseen order 1 (2), 2 (1), 3 (0): item 1 rank 0, item 3 rank 2
    # user 1 sees item 3; unseen order 0, 1, 2: item 1 rank 1; item 3 is seen (-inf): after all others
    np.testing.assert_array_equal(ranks, [[0, 2], [1, 3]])


def test_profile_features_known_answer() -> None:
    m = sp.csr_matrix(np.array([[5, 1, 0], [3, 0, 4], [0, 1, 4]], dtype=np.float32))
    f = profile_features(m, neighbours=1)
    # item means 4, 1, 4; counts 2, 2, 2. user 0: |5-4|/2 + |1-1|/2 = 0.5 over 2 items -> RDMA 0.25
    assert f.loc[0, "rdma"] == pytest.approx(0.25)
    assert f.loc[0, "wdma"] == pytest.approx((1 / 4) / 2)
    assert f.loc[1, "fmtd"] == pytest.approx(1.0)
    assert f.loc[0, "share_max"] == pytest.approx(0.5)
    assert f.loc[0, "degsim"] == pytest.approx(0.5)  # cosine of {0,1} with {0,2} or {1,2}


def test_detection_scores_known_answer() -> None:
    s = detection_scores(np.array([1, 2, 3, 4]), np.array([3, 4, 5]), 10)
    assert (s["precision"], s["recall"]) == (0.5, pytest.approx(2 / 3))
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_without_users_empties_rows() -> None:
    X = rated()
    Y = without_users(X, np.array([0, 5]))
    assert Y.user_counts()[[0, 5]].sum() == 0 and Y.n_users == X.n_users
    assert Y.nnz == X.nnz - X.user_counts()[[0, 5]].sum()


# Thresholds of the statistical tests, set with a margin beyond the worst of seeds 0-9; the measured range
# (min-max over the seeds, benchmarks/results/test_spread.md) is beside each.
RANK_SHIFT_MIN = 120  # 169-264 places
DETECTOR_F1_MIN = {"average": 0.9, "bandwagon": 0.6}  # 1.000-1.000, 0.727-1.000
FAKES_KEPT_MAX = 0.55  # share of bandwagon fakes the defence keeps: 0.000-0.429 (median 0.054)
BLIND_F1_MAX, AWARE_F1_MIN = 0.3, 0.85  # 0.000-0.000, 0.963-1.000


@pytest.fixture(scope="module")
def ml100k(data_dir, seed):  # type: ignore[no-untyped-def]
    X = load_movielens("ml-100k", data_dir=data_dir)
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=1 + seed)
    return split, pick_targets(split.train, 3, random_state=1 + seed)


@pytest.mark.integration
@pytest.mark.statistical
def test_bandwagon_attack_pushes_targets_on_ml100k(ml100k, seed, claim) -> None:  # type: ignore[no-untyped-def]
    split, targets = ml100k
    clean = ItemKNN().fit(split.train)
    attack = ShillingAttack("bandwagon", targets, size=0.05, filler=0.01)
    poisoned, _ = inject(split.train, attack, random_state=seed)
    effect = attack_effect(clean, ItemKNN().fit(poisoned), split, targets, ks=(10, 50))
    # the targets climb about a seventh of the catalogue, yet rarely into the top 50: HR@50 after - before is
    # -0.019 to 0.000 over seeds 0-9, so no claim is made on it
    claim("HR@50 after - before", effect["hr@50_after"] - effect["hr@50_before"])
    assert claim("rank shift", effect["rank_shift"]) > RANK_SHIFT_MIN


@pytest.mark.integration
@pytest.mark.statistical
def test_detector_finds_average_and_bandwagon_fakes_on_ml100k(ml100k, seed, claim) -> None:  # type: ignore[no-untyped-def]
    split, targets = ml100k
    detector = ShillingDetector(random_state=seed)
    detector.fit(split.train)
    f1 = {}
    for kind in ("average", "bandwagon"):
        poisoned, fake = inject(split.train, ShillingAttack(kind, targets, size=0.03), random_state=5 + seed)
        f1[kind] = claim(f"{kind} F1", detection_scores(detector.detect(poisoned), fake, poisoned.n_users)["f1"])
    model, dropped = robust_fit(EASE(l2=100.0), poisoned, detector)
    kept = claim("share of fakes kept", len(set(fake) - set(dropped)) / len(fake))
    assert all(f1[k] >= DETECTOR_F1_MIN[k] for k in f1) and kept <= FAKES_KEPT_MAX, (f1, kept)
    assert model.is_fitted


def test_gan_attack_samples_profiles_from_a_generator() -> None:
    from advrec.generative import ProfileGenerator
    from advrec.models import MultVAE

    X = rated()
    gen = ProfileGenerator(MultVAE(hidden=16, latent=4, epochs=3, random_state=0)).fit(X)
    fake = fake_profiles(X, ShillingAttack("gan", [3], size=0.1, generator=gen), random_state=0)
    assert fake.shape == (5, X.n_items) and (fake[:, 3].toarray() == 5).all()
    sizes = np.diff(fake.indptr) - 1  # without the target
    assert set(sizes) <= set(X.user_counts()) | set(X.user_counts() - 1)  # real profile sizes
    np.testing.assert_array_equal(
        fake.toarray(), fake_profiles(X, ShillingAttack("gan", [3], size=0.1, generator=gen), 0).toarray()
    )


def test_detector_needs_a_generator_for_gan_simulations() -> None:
    X = rated()
    with pytest.raises(ConfigError, match="generator"):
        ShillingDetector(kinds=("average", "gan")).fit(X)
    with pytest.raises(ConfigError, match="generator must be"):
        ShillingDetector(generator="vae").fit(X)


@pytest.mark.integration
@pytest.mark.statistical
def test_generator_aware_detector_finds_gan_fakes_on_ml100k(ml100k, seed, claim) -> None:  # type: ignore[no-untyped-def]
    from advrec.generative import ProfileGenerator
    from advrec.models import MultVAE

    split, targets = ml100k
    attacker = ProfileGenerator(MultVAE(epochs=30, random_state=1 + seed), prior="posterior").fit(split.train)
    defender = ProfileGenerator(MultVAE(epochs=30, random_state=2 + seed), prior="posterior").fit(split.train)
    attack = ShillingAttack("gan", targets, size=0.03, generator=attacker)
    poisoned, fake = inject(split.train, attack, random_state=5 + seed)
    classic = ShillingDetector(simulations=3, random_state=seed).fit(split.train)
    aware = ShillingDetector(simulations=3, generator=defender, random_state=seed).fit(split.train)
    blind_f1 = claim("classic detector F1", detection_scores(classic.detect(poisoned), fake, poisoned.n_users)["f1"])
    aware_f1 = claim("generator-aware F1", detection_scores(aware.detect(poisoned), fake, poisoned.n_users)["f1"])
    assert blind_f1 < BLIND_F1_MAX and aware_f1 >= AWARE_F1_MIN  # the classic detector is blind to them
