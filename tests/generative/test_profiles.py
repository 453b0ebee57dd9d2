"""Profile generator, realism measures and augmentation on tiny data with known structure."""

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ConfigError, NotFittedError
from advrec.generative import ProfileGenerator, augment, realism
from advrec.generative.profiles import _draw_rows
from advrec.models import CFGAN, EASE, MultVAE
from advrec.testing import two_communities


@pytest.fixture(scope="module")
def data():
    return two_communities(n_users=80, n_items=40, density=0.3)


@pytest.fixture(scope="module")
def vae_gen(data):
    vae = MultVAE(hidden=32, latent=4, dropout=0.2, epochs=150, batch_size=16, lr=1e-2, device="cpu")
    return ProfileGenerator(vae).fit(data)


def test_draw_rows_gives_distinct_items_and_sizes():
    rng = np.random.default_rng(0)
    probs = np.full((3, 6), 1 / 6)
    rows = _draw_rows(probs, np.array([1, 3, 9]), rng)
    assert np.diff(rows.indptr).tolist() == [1, 3, 6]
    assert rows.max() == 1.0


def test_realism_is_zero_for_identical_data_and_large_for_unlike(data):
    assert realism(data.matrix, data.matrix).as_dict() == {"size_ks": 0.0, "popularity_ks": 0.0}
    single = sp.csr_matrix(np.eye(80, 40, dtype=np.float32))
    assert realism(data.matrix, single).size_ks > 0.9


def test_vae_samples_are_realistic_and_seeded(vae_gen, data):
    a, b = vae_gen.sample(200, random_state=1), vae_gen.sample(200, random_state=1)
    assert (a != b).nnz == 0 and a.shape == (200, 40)
    r = realism(data.matrix, a)
    assert r.size_ks < 0.2 and r.popularity_ks < 0.5, r
    # generated users keep the two communities apart: most rows stay on one side
    left = np.asarray(a[:, :20].sum(1)).ravel() / np.diff(a.indptr)
    assert np.mean((left > 0.8) | (left < 0.2)) > 0.8


def test_densify_adds_only_new_items_to_the_sparsest_users(vae_gen, data):
    aug = augment(data, vae_gen, "densify", share=0.25, threshold=0.05, max_add=3)
    added = aug.matrix - data.matrix
    assert added.min() >= 0 and added.nnz > 0
    assert set(np.unique(added.nonzero()[0])) <= set(np.argsort(data.user_counts(), kind="stable")[:20])
    assert np.diff(added.indptr).max() <= 3
    assert aug.meta["augmented"]["added"] == added.nnz
    EASE(l2=1.0).fit(aug)  # trains unchanged


def test_synthetic_users_are_appended(vae_gen, data):
    aug = augment(data, vae_gen, "users", n_users=10, random_state=3)
    assert aug.n_users == data.n_users + 10 and aug.users.ids[-1] == "synthetic-9"
    assert (aug.matrix[: data.n_users] != data.matrix).nnz == 0


def test_cfgan_generator_and_errors(data):
    cf = CFGAN(
        mode="user", g_hidden=(16,), d_hidden=(8,), epochs=20, batch_size=8, d_batch_size=8, lr=1e-2, device="cpu"
    )
    gen = ProfileGenerator(cf).fit(data)
    fake = gen.sample(100, random_state=0)
    assert fake.shape == (100, 40)
    left = np.asarray(fake[:, :20].sum(1)).ravel() / np.diff(fake.indptr)
    assert np.mean((left > 0.8) | (left < 0.2)) > 0.7  # synthetic users stay in one community
    with pytest.raises(ConfigError, match="user-based"):
        ProfileGenerator(CFGAN(mode="item"))
    with pytest.raises(NotFittedError):
        ProfileGenerator(MultVAE()).sample(3)
    with pytest.raises(ConfigError, match="strategy"):
        augment(data, gen, "mixup")
    with pytest.raises(ConfigError, match="threshold"):
        augment(data, gen, "densify", threshold=0.0)


def test_posterior_prior_samples_keep_the_structure(vae_gen, data):
    post = ProfileGenerator(vae_gen.model, prior="posterior").fit(data)
    a = post.sample(300, random_state=2)
    assert (a != post.sample(300, random_state=2)).nnz == 0
    left = np.asarray(a[:, :20].sum(1)).ravel() / np.diff(a.indptr)
    assert np.mean((left > 0.8) | (left < 0.2)) > 0.8
    assert realism(data.matrix, a).size_ks < 0.2
    with pytest.raises(ConfigError, match="prior"):
        ProfileGenerator(vae_gen.model, prior="uniform")


def test_ease_generator_grows_users_inside_one_community(data):
    gen = ProfileGenerator(EASE(l2=10.0).fit(data), temperature=0.05, rounds=5).fit(data)
    a, b = gen.sample(150, random_state=2), gen.sample(150, random_state=2)
    assert (a != b).nnz == 0 and a.shape == (150, 40) and a.max() == 1.0
    sizes = np.diff(a.indptr)
    assert set(sizes) <= set(gen.sizes_)  # each size drawn from the real ones, items distinct
    left = np.asarray(a[:, :20].sum(1)).ravel() / sizes
    assert np.mean((left > 0.8) | (left < 0.2)) > 0.8, left
    with pytest.raises(ConfigError, match="rounds"):
        ProfileGenerator(EASE(), rounds=0)
