"""`advrec federate` writes a run directory that loads like any run and that `advrec serve` serves."""

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from advrec.cli import app
from advrec.runs import load_run

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_federate_writes_a_servable_run(tmp_path, data_dir):
    run = tmp_path / "fcf"
    args = ["federate", "FCF", "--dataset", "ml-100k", "--clients", "3", "--rounds", "2", "--strategy", "fedavg",
            "--set", "lr=20", "--set", "factors=8", "--out", str(run), "--data-dir", str(data_dir)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    loaded = load_run(run)
    fed = loaded.manifest["federated"]
    assert fed["clients"] == 3 and fed["rounds"] == 2 and fed["epsilon"] is None
    n_items = loaded.split.n_items
    assert fed["bytes_per_client_round"] == 2 * n_items * 8 * 4
    assert fed["bytes_total"] == 3 * n_items * 8 * 4 * (2 * 2 + len(fed["history"]["evaluate"]))
    # the test NDCG@10 the clients summed for the released round is the one evaluated on the run's model
    clients = fed["history"]["evaluate"][str(fed["best_round"])]["test-ndcg@10"]
    assert loaded.manifest["metrics"]["ndcg@10"] == pytest.approx(clients, rel=1e-3)

    from advrec.serving.app import create_app

    key = "k" * 24
    with TestClient(create_app(run, api_keys={key: ("read",)}), headers={"Authorization": f"Bearer {key}"}) as c:
        user = str(loaded.users.ids[0])
        got = c.get(f"/v1/users/{user}/recommendations", params={"k": 5})
        assert got.status_code == 200 and len(got.json()["items"]) == 5
        history = [int(i) for i in loaded.items.ids[:3]]
        anon = c.post("/v1/recommendations", json={"history": [{"item_id": i} for i in history], "k": 5})
        assert anon.status_code == 200 and anon.json()["strategy"] == "fold-in"
        assert not set(history) & {x["item_id"] for x in anon.json()["items"]}
    assert np.isfinite(loaded.model.user_factors_).all()

    # forgetting a user runs the federation again without them (not a centralised refit)
    from advrec.privacy.forget import forget_user

    gone = loaded.users.ids[0]
    result = forget_user(run, gone)
    again = load_run(run)
    assert result.method == "re-running the federation (same settings and seeds)"
    assert gone not in again.users and again.split.n_users == loaded.split.n_users - 1
    assert type(again.model).__name__ == "IALS" and again.manifest["federated"]["clients"] == 3
    assert again.manifest["federated"]["history"] != fed["history"]  # a new federation's rounds
    assert not np.allclose(again.model.item_factors_, loaded.model.item_factors_)


def test_federate_refuses_other_models_and_bad_settings(tmp_path):
    res = runner.invoke(app, ["federate", "BPRMF", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "federated training exists for FCF" in res.output
    res = runner.invoke(app, ["federate", "FCF", "--set", "rounds=abc", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "rounds takes a int" in res.output
    res = runner.invoke(app, ["federate", "FCF", "--set", "nope=1", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "key among" in res.output
    assert not (tmp_path / "x").exists()


def test_federated_multvae_is_a_servable_multvae_run(tmp_path, data_dir):
    run = tmp_path / "vae"
    args = ["federate", "MultVAE", "--dataset", "ml-100k", "--clients", "2", "--rounds", "2", "--set", "hidden=32",
            "--set", "latent=8", "--out", str(run), "--data-dir", str(data_dir)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    loaded = load_run(run)
    fed = loaded.manifest["federated"]
    assert type(loaded.model).__name__ == "MultVAE" and fed["model"] == "multvae" and fed["strategy"] == "fedavg"
    n_weights = sum(p.numel() for p in loaded.model.network_.parameters())
    assert fed["bytes_per_client_round"] == 2 * 4 * n_weights
    clients = fed["history"]["evaluate"][str(fed["best_round"])]["test-ndcg@10"]
    assert loaded.manifest["metrics"]["ndcg@10"] == pytest.approx(clients, rel=1e-3)

    from advrec.serving.app import create_app

    key = "k" * 24
    with TestClient(create_app(run, api_keys={key: ("read",)}), headers={"Authorization": f"Bearer {key}"}) as c:
        history = [int(i) for i in loaded.items.ids[:3]]
        anon = c.post("/v1/recommendations", json={"history": [{"item_id": i} for i in history], "k": 5})
        assert anon.status_code == 200 and len(anon.json()["items"]) == 5
        assert not set(history) & {x["item_id"] for x in anon.json()["items"]}
