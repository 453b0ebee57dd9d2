"""`advrec synthesize`, `audit`, `forget` and `train --epsilon` on ml-100k (few epochs, small networks)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from advrec.cli import app
from advrec.data import load_movielens

runner = CliRunner()
pytestmark = pytest.mark.integration

SMALL = ["--set", "hidden=32", "--set", "latent=8", "--epochs", "2"]


def test_synthesize_then_audit_the_release(tmp_path, data_dir):
    out = tmp_path / "release"
    args = ["synthesize", "--dataset", "ml-100k", "--epsilon", "3", "--users", "200", "--holdout", "0.2"]
    res = runner.invoke(app, [*args, *SMALL, "--out", str(out), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    assert "vae generator on ml-100k, ε = 3 (user level)" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert 0 < manifest["privacy"]["epsilon"] <= 3.05 and manifest["holdout"]["users"] == 189
    frame = pd.read_parquet(out / "interactions.parquet")
    real = load_movielens("ml-100k", data_dir=data_dir, min_rating=3)
    assert not set(frame["user"].astype(str)) & set(real.users.ids.astype(str))
    res = runner.invoke(app, ["audit", str(out), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "audit" / "report.json").read_text())
    assert 0 <= report["dcr"]["dcr_attack_auc"] <= 1 and (out / "audit" / "dcr.png").exists()
    gan = ["synthesize", "--dataset", "ml-100k", "--generator", "gan", "--epsilon", "8", "--users", "100",
           "--epochs", "1", "--set", "g_hidden=(16,)", "--set", "d_hidden=(16,)",
           "--data-dir", str(data_dir)]  # fmt: skip
    res = runner.invoke(app, [*gan, "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["privacy"]["epsilon"] <= 8.0 + 1e-3 and "DP-EASE release" in manifest["generator"]["prior"]
    res = runner.invoke(app, [*gan, "--set", "hidden=3", "--out", str(tmp_path / "h")])
    assert res.exit_code == 2 and "no parameter 'hidden'" in res.output, res.output
    res = runner.invoke(app, ["synthesize", "--epsilon", "lots", "--out", str(tmp_path / "e")])
    assert res.exit_code != 0 and "--epsilon takes a positive number or inf, not 'lots'" in res.output


def test_audit_and_forget_a_run(tmp_path, data_dir):
    run = tmp_path / "ease"
    res = runner.invoke(
        app,
        ["train", "EASE", "--dataset", "ml-100k", "--protocol", "holdout_users", "--set", "l2=50", "--out", str(run),
         "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["audit", str(run), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    report = json.loads((run / "audit" / "report.json").read_text())
    assert 0.5 < report["membership"]["auc"] <= 1.0 and report["privacy"]["private"] is False
    gender = [r for r in report["attributes"] if r["attribute"] == "gender"]
    assert gender and all(r["balanced_accuracy"] > 0.5 for r in gender)
    assert "membership inference" in res.output and (run / "audit" / "membership.png").exists()
    res = runner.invoke(app, ["forget", str(run), "--user", "1"])
    assert res.exit_code == 0, res.output
    assert "exact recomputation" in res.output
    res = runner.invoke(app, ["forget", str(run), "--user", "1"])
    assert res.exit_code == 2 and "not in the run" in res.output
    res = runner.invoke(app, ["audit", str(tmp_path / "nothing")])
    assert res.exit_code == 2


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_train_with_dp_writes_the_budget_to_the_manifest(tmp_path, data_dir):
    base = ["train", "--dataset", "ml-100k", "--protocol", "holdout_users", "--data-dir", str(data_dir)]
    run = tmp_path / "dp-ease"
    res = runner.invoke(app, [*base[:1], "EASE", *base[1:], "--set", "l2=5", "--epsilon", "8", "--dp", "gram_rank=50",
                              "--out", str(run)])  # fmt: skip
    assert res.exit_code == 0, res.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["privacy"]["private"] and 7.9 <= manifest["privacy"]["epsilon"] <= 8.0 + 1e-3
    assert manifest["privacy"]["gram_rank"] == 50 and manifest["config"]["privacy"]["epsilon"] == 8.0
    run = tmp_path / "dp-vae"
    res = runner.invoke(app, [*base[:1], "MultVAE", *base[1:], *SMALL[:4], "--set", "epochs=2", "--epsilon", "8",
                              "--dp", "method=synthetic", "--out", str(run)])  # fmt: skip
    assert res.exit_code == 0, res.output
    privacy = json.loads((run / "manifest.json").read_text())["privacy"]
    assert privacy["method"] == "synthetic" and "synthetic release" in privacy["mechanism"]
    res = runner.invoke(app, [*base[:1], "EASE", *base[1:], "--epsilon", "8", "--dp", "sigma=3"])
    assert res.exit_code == 2 and "privacy has no setting 'sigma'" in res.output, res.output
    res = runner.invoke(app, [*base[:1], "ItemKNN", *base[1:], "--epsilon", "8", "--out", str(tmp_path / "knn")])
    assert res.exit_code == 2 and "DP training supports" in res.output, res.output
