"""The `advrec` command on ml-100k: train → evaluate → recommend, split, datasets, config errors."""

import json

import pytest
from typer.testing import CliRunner

from advrec.cli import app
from advrec.errors import ConfigError
from advrec.experiment import config_from_dict, load_config, parse_assignments

runner = CliRunner()
pytestmark = pytest.mark.integration


@pytest.mark.statistical
def test_train_evaluate_recommend(tmp_path, data_dir, seed, claim):
    run = tmp_path / "ease"
    args = ["train", "EASE", "--dataset", "ml-100k", "--set", "l2=200", "--seed", str(2020 + seed)]
    res = runner.invoke(app, [*args, "--out", str(run), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["class"] == "EASE" and manifest["model"]["params"]["l2"] == 200
    assert manifest["dataset"]["name"] == "ml-100k" and manifest["split"]["name"] == "ratio_split"
    assert claim("EASE NDCG@10", manifest["metrics"]["ndcg@10"]) > 0.2 and manifest["model_bytes"] > 0  # 0.278-0.303
    assert {"python", "numpy", "torch"} <= set(manifest["versions"])
    res = runner.invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    assert f"{manifest['metrics']['ndcg@10']:.4f}" in res.output
    res = runner.invoke(app, ["recommend", str(run), "--user", "1", "-k", "5", "--explain"])
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") > 5 and "because you liked" in res.output
    res = runner.invoke(app, ["recommend", str(run), "--user", "999999"])
    assert res.exit_code == 2 and "unknown user id" in res.output


def test_train_rejects_unknown_parameter(tmp_path, data_dir):
    res = runner.invoke(
        app, ["train", "EASE", "--set", "alpha=3", "--out", str(tmp_path / "x"), "--data-dir", str(data_dir)]
    )
    assert res.exit_code == 2 and "alpha" in res.output
    assert not (tmp_path / "x").exists()


def test_split_and_datasets(tmp_path, data_dir):
    res = runner.invoke(
        app, ["split", "--protocol", "leave_one_out", "--out", str(tmp_path / "s"), "--data-dir", str(data_dir)]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "interactions.parquet").exists()
    res = runner.invoke(app, ["datasets", "--data-dir", str(data_dir)])
    assert res.exit_code == 0 and "ml-100k" in res.output and "100,000" in res.output


def test_config_file_and_errors(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text('dataset = "ml-100k"\nmodel = "BPRMF"\nseed = 7\n[params]\nfactors = 32\n')
    cfg = load_config(f)
    assert cfg.model == "BPRMF" and cfg.params == {"factors": 32} and cfg.seed == 7
    f.write_text('model = "EASE"\nepochz = 3\n')
    with pytest.raises(ConfigError, match="epochz"):
        load_config(f)
    with pytest.raises(ConfigError, match="factorz"):
        config_from_dict({"model": "BPRMF", "params": {"factorz": 3}})
    with pytest.raises(ConfigError, match="protocol"):
        config_from_dict({"protocol": "random"})
    assert parse_assignments(["a=1", "b=0.5", "c=True", "d=text"]) == {"a": 1, "b": 0.5, "c": True, "d": "text"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["novalue"])


def test_encode_items_and_cold_start_training(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("ADVREC_CACHE_DIR", str(tmp_path / "cache"))
    res = runner.invoke(app, ["encode-items", "--dataset", "ml-100k", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    assert "1,682 items → 384-d vectors" in res.output
    assert list((tmp_path / "cache" / "embeddings").glob("*.npz"))
    args = [
        "train",
        "TextEASE",
        "--protocol",
        "cold_items",
        "--out",
        str(tmp_path / "run"),
        "--data-dir",
        str(data_dir),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["split"]["name"] == "cold_items" and manifest["model"]["class"] == "TextEASE"


def test_train_cfgan_with_training_curves(tmp_path, data_dir):
    run = tmp_path / "cfgan"
    args = ["train", "cfgan", "--dataset", "ml-100k", "--set", "epochs=2", "--set", "batch_size=128"]
    res = runner.invoke(app, [*args, "--plot", "--out", str(run), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    assert (run / "training.png").stat().st_size > 10_000
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["class"] == "CFGAN" and manifest["metrics"]["ndcg@10"] > 0


def test_train_evaluate_recommend_a_sequential_model(tmp_path, data_dir):
    """SASRec under leave-last-out from the command line: the run evaluates and recommends from ordered histories."""
    run = tmp_path / "sasrec"
    sets = ["dim=16", "blocks=1", "max_len=20", "epochs=2", "batch_size=256", "device=cpu"]
    args = ["train", "SASRec", "--dataset", "ml-100k", "--protocol", "leave_last_out"]
    res = runner.invoke(app, [*args, *(x for s in sets for x in ("--set", s)), "--out", str(run), "--data-dir",
                              str(data_dir)])  # fmt: skip
    assert res.exit_code == 0, res.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["split"]["name"] == "leave_last_out" and manifest["model"]["class"] == "SASRec"
    assert 0 < manifest["metrics"]["ndcg@10"] < 1
    res = runner.invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 0 and f"{manifest['metrics']['ndcg@10']:.4f}" in res.output, res.output
    res = runner.invoke(app, ["recommend", str(run), "--user", "1", "-k", "5"])
    assert res.exit_code == 0 and res.output.count("\n") > 5, res.output


def test_finetune_encoder_writes_a_model_folder_and_reuses_it(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("ADVREC_CACHE_DIR", str(tmp_path / "cache"))
    args = ["finetune-encoder", "--dataset", "ml-100k", "--protocol", "cold_items", "--data-dir", str(data_dir)]
    args += ["--max-pairs", "12", "--batch-size", "6"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "12 pairs of" in res.output and "cold_items training part (seed 2020)" in res.output
    folder = res.output.split("model: ")[1].strip()
    assert folder.startswith(str(tmp_path / "cache" / "finetuned"))
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.output.split("model: ")[1].strip() == folder
    assert parse_assignments([f"encoder={folder}"], model="UniSRec") == {"encoder": folder}
    assert parse_assignments([f"model={folder}"], model="TextKNN") == {"model": folder}


def test_the_protocol_help_names_every_protocol() -> None:
    from typing import get_args

    from advrec.cli import PROTOCOL_HELP
    from advrec.experiment import Protocol

    assert PROTOCOL_HELP.split(" (")[0].split(" | ") == list(get_args(Protocol))


def test_a_failed_train_leaves_no_run_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["train", "BPRMF", "--dataset", "no-such-dataset"])
    assert res.exit_code != 0 and "no loader for dataset 'no-such-dataset'" in res.output
    assert not list(tmp_path.glob("runs/*"))


def test_option_values_are_checked_before_any_run_is_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = str(tmp_path / "no-run")  # not read: the option is refused first
    res = runner.invoke(app, ["evaluate", missing, "--ks", "abc"])
    assert res.exit_code != 0 and "--ks takes comma-separated positive integers such as 10,20, not 'abc'" in res.output
    res = runner.invoke(app, ["evaluate", missing, "--on", "train"])
    assert res.exit_code != 0 and "--on takes test or valid" in res.output
    res = runner.invoke(app, ["robustness", missing, "--eps", "0.1,-1"])
    assert res.exit_code != 0 and "--eps takes comma-separated positive numbers" in res.output


def test_an_error_is_printed_as_it_is_not_as_markup(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("ADVREC_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "advrec").mkdir()
    (tmp_path / "advrec" / "config.toml").write_text("[data]\nhome = 3\n")
    res = runner.invoke(app, ["datasets", "--no-counts"])
    assert res.exit_code == 2 and "config.toml: [data] home must be a folder path" in res.output
