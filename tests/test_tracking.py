"""Experiment tracking: every torch model's epochs, parameters and final metrics in TensorBoard and MLflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from advrec.data.splits import leave_last_out, ratio_split
from advrec.experiment import fit_evaluate
from advrec.models import BPRMF, CFGAN, EASE, IRGAN, BERT4Rec, LightGCN, MultVAE, RecVAE, SASRec, UniSRec
from advrec.testing import cyclic_sequences, two_communities
from advrec.tracking import MLflowTracker, TensorBoardTracker

# every torch model, tiny; the sequential ones on ordered data
TORCH_MODELS = {
    "BPRMF": lambda: BPRMF(factors=4, epochs=2, batch_size=64, device="cpu"),
    "MultVAE": lambda: MultVAE(hidden=8, latent=4, epochs=2, batch_size=16, device="cpu"),
    "RecVAE": lambda: RecVAE(hidden=8, latent=4, depth=1, epochs=2, batch_size=16, device="cpu"),
    "LightGCN": lambda: LightGCN(factors=4, layers=1, epochs=2, batch_size=64, device="cpu"),
    "CFGAN": lambda: CFGAN(g_hidden=(8,), d_hidden=(8,), epochs=2, batch_size=8, d_batch_size=8, device="cpu"),
    "IRGAN": lambda: IRGAN(factors=4, pretrain_epochs=2, epochs=2, device="cpu"),
    "SASRec": lambda: SASRec(dim=8, blocks=1, max_len=5, epochs=2, batch_size=16, device="cpu"),
    "BERT4Rec": lambda: BERT4Rec(dim=8, blocks=1, max_len=5, epochs=2, batch_size=16, device="cpu"),
    "UniSRec": lambda: UniSRec(dim=8, blocks=1, heads=1, max_len=5, epochs=2, batch_size=16, device="cpu"),
}
SEQUENTIAL = {"SASRec", "BERT4Rec", "UniSRec"}


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:  # type: ignore[no-untyped-def]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def split_for(name: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    if name not in SEQUENTIAL:
        return ratio_split(two_communities(40, 20, density=0.4, random_state=0), random_state=0)
    X = cyclic_sequences(40, 10, 6, seed=0)
    if name == "UniSRec":  # its item vectors without a text model
        vectors = np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32)
        monkeypatch.setattr("advrec.models.unisrec.encode_items", lambda X, *a, **k: (vectors, "test-vectors"))
        X.item_features = pd.DataFrame({"text": [f"item {i}" for i in range(X.n_items)]})
    return leave_last_out(X, random_state=0)


@pytest.mark.parametrize("name", list(TORCH_MODELS))
def test_every_torch_model_logs_its_epochs_to_both_trackers(name, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tb, ml = TensorBoardTracker(tmp_path / "tb"), MLflowTracker(uri, run_name=name)
    outcome = fit_evaluate(TORCH_MODELS[name](), split_for(name, monkeypatch), ks=[10], trackers=[tb, ml])
    epochs = [row["epoch"] for row in outcome.model.training_log_]
    got = scalars(tmp_path / "tb")
    assert [step for step, _ in got["train/loss"]] == epochs
    assert [v for _, v in got["train/loss"]] == pytest.approx([row["loss"] for row in outcome.model.training_log_])
    assert "train/valid_ndcg@10" in got and any(tag.startswith("lr/") for tag in got)
    assert got["test/ndcg@10"] == [(0, pytest.approx(outcome.report.summary["ndcg@10"]))]
    client = MlflowClient(uri)
    run = client.get_run(ml.run_id)
    assert run.info.status == "FINISHED" and run.data.params["model"] == name
    history = client.get_metric_history(ml.run_id, "train/loss")
    assert [m.step for m in history] == epochs
    assert run.data.metrics["test/ndcg_at_10"] == pytest.approx(outcome.report.summary["ndcg@10"])


def test_a_model_without_epochs_logs_parameters_and_final_metrics(tmp_path) -> None:  # type: ignore[no-untyped-def]
    split = ratio_split(two_communities(40, 20, density=0.4, random_state=0), random_state=0)
    with TensorBoardTracker(tmp_path / "tb") as tb:
        outcome = fit_evaluate(EASE(l2=1.0), split, ks=[10], trackers=[tb])
    got = scalars(tmp_path / "tb")
    assert got["test/ndcg@10"] == [(0, pytest.approx(outcome.report.summary["ndcg@10"]))]
    assert not [tag for tag in got if tag.startswith("train/")]


def test_cli_train_writes_tensorboard_and_mlflow_and_records_them(tmp_path, data_dir) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    from advrec.cli import app
    from advrec.runs import load_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", "MultVAE", "--dataset", "ml-100k", "--set", "epochs=2", "--out", str(tmp_path / "run"),
            "--tensorboard", str(tmp_path / "tb"), "--mlflow", uri, "--data-dir", str(data_dir)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    tracking = load_run(tmp_path / "run").manifest["tracking"]
    assert tracking["tensorboard"] == str(tmp_path / "tb") and tracking["mlflow"]["uri"] == uri
    assert [s for s, _ in scalars(tmp_path / "tb")["train/loss"]] == [1, 2]
    run = MlflowClient(uri).get_run(tracking["mlflow"]["run_id"])
    assert run.info.run_name == "run" and run.data.metrics["test/ndcg_at_10"] > 0


def test_a_fit_that_fails_leaves_a_failed_mlflow_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    from advrec.errors import DataError

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(DataError), MLflowTracker(uri) as ml:
        MultVAE(epochs=1, device="cpu").fit(np.zeros((0, 3)), plugins=[ml])
    assert MlflowClient(uri).get_run(ml.run_id).info.status == "FAILED"


def test_the_manifest_gets_no_password_of_an_mlflow_uri(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ml = MLflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ml.uri = "https://alice:secret@mlflow.example.org:5000/"
    assert ml.describe()["mlflow"]["uri"] == "https://mlflow.example.org:5000/"
    ml.finish()
