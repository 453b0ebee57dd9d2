"""Synthetic release (no real ids) and forgetting a user (exact for EASE; MIA score falls to non-member level)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from advrec.data.splits import ratio_split
from advrec.errors import ConfigError, UnknownIdError
from advrec.models import EASE, Pop
from advrec.privacy.forget import drop_user, forget_user
from advrec.privacy.membership import MembershipAttack, partition_users
from advrec.privacy.synthesize import synthesize
from advrec.runs import checkpoint_dir, load_run, save_run

SMALL_VAE = {"hidden": 16, "latent": 4, "epochs": 2, "batch_size": 50}


@pytest.mark.parametrize("epsilon", [math.inf, 5.0])
def test_synthetic_release_has_no_real_user_ids(tiny_gendered, tmp_path, epsilon):
    release = synthesize(tiny_gendered, epsilon=epsilon, n_users=80, params=SMALL_VAE, random_state=0)
    out = release.save(tmp_path / "release")
    frame = pd.read_parquet(out / "interactions.parquet")
    real_ids = set(tiny_gendered.users.ids.astype(str))
    assert frame["user"].nunique() <= 80 and not set(frame["user"].astype(str)) & real_ids
    assert set(frame["item"]) <= set(tiny_gendered.items.ids)
    items = pd.read_parquet(out / "items.parquet")
    assert len(items) == tiny_gendered.n_items and "title" in items
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["users"] == 80 and manifest["generator"]["params"]["hidden"] == 16
    if math.isinf(epsilon):
        assert manifest["privacy"]["epsilon"] is None or math.isinf(manifest["privacy"]["epsilon"])
    else:
        assert 0 < manifest["privacy"]["epsilon"] <= 5.05 and 0 < manifest["privacy"]["delta"] < 1 / 200
    with pytest.raises(ConfigError, match="generator must be"):
        synthesize(tiny_gendered, generator="diffusion")


def test_gan_release_samples_a_user_based_cfgan(tiny_gendered, tmp_path):
    params = {"g_hidden": (16,), "d_hidden": (16,), "epochs": 3, "batch_size": 50}
    release = synthesize(tiny_gendered, generator="gan", n_users=60, params=params, random_state=0)
    manifest = json.loads((release.save(tmp_path / "gan") / "manifest.json").read_text())
    assert manifest["generator"]["class"] == "CFGAN" and manifest["generator"]["params"]["mode"] == "user"
    assert manifest["generator"]["prior"].startswith("none")  # conditioned on real histories, no prior
    assert manifest["privacy"]["epsilon"] in (None, math.inf) and manifest["users"] == 60
    assert release.data.n_users == 60 and release.data.nnz > 0
    again = synthesize(tiny_gendered, generator="gan", n_users=60, params=params, random_state=0)
    assert (release.data.matrix != again.data.matrix).nnz == 0  # same seed, same release


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_gan_release_at_finite_epsilon_learns_only_from_a_dp_release(tiny_gendered):
    params = {"g_hidden": (16,), "d_hidden": (16,), "epochs": 3, "batch_size": 50}
    release = synthesize(tiny_gendered, generator="gan", epsilon=8.0, n_users=60, params=params, random_state=0)
    m = release.manifest
    assert m["generator"]["class"] == "CFGAN" and "DP-EASE release" in m["generator"]["prior"]
    assert 7.9 <= m["privacy"]["epsilon"] <= 8.0 + 1e-3 and m["privacy"]["noise_multiplier"] > 0
    assert m["privacy"]["epsilon_gram"] == pytest.approx(7.6, abs=0.01) and release.data.n_users == 60


def test_forget_is_exact_for_ease(tiny_gendered, tmp_path):
    split = ratio_split(tiny_gendered, random_state=0)
    model = EASE(l2=5.0).fit(split.train)
    path = save_run(tmp_path / "run", model, tiny_gendered, split, dataset={"name": "tiny"})
    left = checkpoint_dir(path)  # as a failed torchrun job of this run leaves it
    left.mkdir()
    (left / "checkpoint.safetensors").write_bytes(b"weights trained on user-7 too")
    result = forget_user(path, "user-7")
    assert not left.exists()
    assert result.method == "exact recomputation" and result.interactions_removed == tiny_gendered.matrix[7].nnz
    run = load_run(path)
    assert "user-7" not in run.users and len(run.users) == tiny_gendered.n_users - 1
    without = tiny_gendered.subset(users=np.arange(tiny_gendered.n_users) != 7)
    expected = EASE(l2=5.0).fit(ratio_split(tiny_gendered, random_state=0).train.subset(users=np.arange(200) != 7))
    np.testing.assert_array_equal(run.model.weights_, expected.weights_)
    assert run.split.train.nnz + run.split.test.nnz + run.split.valid.nnz == without.nnz
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["forgotten"][0]["interactions_removed"] == result.interactions_removed
    assert "user-7" not in (path / "manifest.json").read_text()
    with pytest.raises(UnknownIdError, match="user-7"):
        forget_user(path, "user-7")


def test_forget_pop_by_recomputation(tiny_gendered, tmp_path):
    split = ratio_split(tiny_gendered, random_state=0)
    path = save_run(tmp_path / "pop", Pop().fit(split.train), tiny_gendered, split, dataset={"name": "tiny"})
    forget_user(path, "user-0")
    run = load_run(path)
    np.testing.assert_array_equal(run.model.item_counts_, Pop().fit(drop_user(split, 0).train).item_counts_)


@pytest.mark.statistical
def test_membership_score_of_a_forgotten_user_falls_to_non_member_level(random_matrix, seed, claim):
    X = random_matrix(400, 300)
    parts = partition_users(X, random_state=seed)
    attack = MembershipAttack(k=10, item_dim=16, random_state=seed)
    attack.fit(EASE(l2=0.5).fit(parts.shadow_in), parts.shadow_in, parts.shadow_out)
    target = EASE(l2=0.5).fit(parts.target_in)
    members = attack.score(target, parts.target_in)
    non_members = attack.score(target, parts.target_out)
    forgotten = np.argsort(-members)[:10]  # the ten users the attack is surest about
    keep = np.ones(parts.target_in.shape[0], dtype=bool)
    keep[forgotten] = False
    after = EASE(l2=0.5).fit(parts.target_in[keep])  # what forget computes: EASE without those users
    scores_after = attack.score(after, parts.target_in[forgotten])
    before = claim("forgotten users' lowest score before", members[forgotten].min())
    after_mean = claim("their mean score after", scores_after.mean())
    q90 = claim("non-members' 90th percentile", np.quantile(non_members, 0.9))
    gap = claim("after minus non-members' mean", scores_after.mean() - non_members.mean())
    # seeds 0-9: before 0.997-0.999; after 0.006-0.211 vs non-members' 90th percentile 0.027-0.273 (after ≤ q90 on
    # every seed); gap to non-members' mean -0.038 to 0.125
    assert before > 0.9 and after_mean <= q90 and abs(gap) < 0.2


def test_membership_audit_of_a_run_needs_held_out_users(tiny_gendered, tmp_path):
    from advrec.privacy.audit import audit_run

    split = ratio_split(tiny_gendered, random_state=0)
    path = save_run(tmp_path / "run", EASE().fit(split.train), tiny_gendered, split, dataset={"name": "tiny"})
    with pytest.raises(ConfigError, match="holdout_users"):
        audit_run(path, attributes=False)


@pytest.mark.parametrize("name", ["MultVAE", "BPRMF"])
def test_forget_retrains_a_dp_model_with_its_noise(tiny_gendered, tmp_path, name):
    from advrec.models import BPRMF, MultVAE
    from advrec.privacy.dp import fit_private, privacy_manifest

    split = ratio_split(tiny_gendered, random_state=0)
    fresh = MultVAE(hidden=16, latent=4, epochs=2, batch_size=50) if name == "MultVAE" else BPRMF(factors=8, epochs=2)
    model = fit_private(fresh, split.train, noise_multiplier=1.5)
    path = save_run(tmp_path / "dp", model, tiny_gendered, split, dataset={"name": "tiny"},
                    extra={"privacy": privacy_manifest(model)})  # fmt: skip
    result = forget_user(path, "user-3")
    assert result.method.startswith("retraining (DP-SGD")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["privacy"]["noise_multiplier"] == 1.5 and manifest["privacy"]["epsilon"] > 0
    assert load_run(path).model.privacy_.noise_multiplier == 1.5


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_ease_release_records_its_gram_budget(tiny_gendered, tmp_path):
    release = synthesize(tiny_gendered, generator="ease", epsilon=8.0, n_users=70, random_state=0)
    p = release.manifest["privacy"]
    assert 7.9 <= p["epsilon"] <= 8.0 + 1e-3 and p["epsilon_gram"] == pytest.approx(7.6, abs=0.01)
    assert p["gram_rank"] == tiny_gendered.n_items  # 200 by default, at most the catalogue
    assert release.manifest["generator"]["class"] == "EASE" and "Gram" in release.manifest["generator"]["prior"]
    assert release.data.n_users == 70 and release.data.n_items == tiny_gendered.n_items
    plain = synthesize(tiny_gendered, generator="ease", n_users=70, random_state=0)
    assert math.isinf(plain.manifest["privacy"]["epsilon"]) and plain.manifest["privacy"]["gram_rank"] is None
    with pytest.raises(ConfigError, match="has no parameter 'epochs'"):
        synthesize(tiny_gendered, generator="ease", params={"epochs": 3})


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_forget_retrains_a_release_trained_multvae_on_a_new_release(tiny_gendered, tmp_path):
    from advrec.models import MultVAE
    from advrec.privacy.dp import fit_private, privacy_manifest

    split = ratio_split(tiny_gendered, random_state=0)
    model = fit_private(MultVAE(hidden=16, latent=4, epochs=2, batch_size=50), split.train, epsilon=4.0,
                        method="synthetic")  # fmt: skip
    path = save_run(tmp_path / "dp", model, tiny_gendered, split, dataset={"name": "tiny"},
                    extra={"privacy": privacy_manifest(model)})  # fmt: skip
    result = forget_user(path, "user-3")
    assert result.method.startswith("retraining on a new DP release")
    again = load_run(path).model
    assert again.privacy_.method == "synthetic" and again.privacy_.release_users == model.privacy_.release_users - 1
    assert again.privacy_.epsilon == pytest.approx(model.privacy_.epsilon, abs=0.01)
