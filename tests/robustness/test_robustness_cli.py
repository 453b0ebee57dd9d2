"""`advrec attack` and `advrec robustness` on small run directories."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from advrec.cli import app

runner = CliRunner()


def test_a_negative_rank_shift_reads_as_a_fall() -> None:
    from advrec.robustness.report import rank_shift_words

    assert rank_shift_words({"rank_shift": -2.94}) == "the targets fell 2.9 ranks on average"
    assert rank_shift_words({"rank_shift": 3.0}) == "the targets climbed 3.0 ranks on average"


def _train(tmp_path, data_dir, model: str, *sets: str):  # type: ignore[no-untyped-def]
    run = tmp_path / model.lower()
    args = ["train", model, "--dataset", "ml-100k", "--out", str(run), "--data-dir", str(data_dir)]
    for s in sets:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return run


def test_attack_command_writes_a_report(tmp_path, data_dir) -> None:  # type: ignore[no-untyped-def]
    run = _train(tmp_path, data_dir, "EASE", "l2=200")
    res = runner.invoke(app, ["attack", str(run), "--kind", "bandwagon", "--size", "0.05", "--targets", "1000,1200"])
    assert res.exit_code == 0, res.output
    result = json.loads((run / "attacks" / "bandwagon-0.05" / "attack.json").read_text())
    assert result["target_ids"] == [1000, 1200] and result["fake_users"] == 47
    assert result["undefended"]["rank_shift"] > 0
    assert "HR@10" in res.output and "targets 1000, 1200" in res.output
    report = (run / "attacks" / "bandwagon-0.05" / "report.md").read_text()
    assert "targets 1000, 1200." in report and "the targets climbed" in report and "np.int64" not in report
    res = runner.invoke(app, ["attack", str(run), "--kind", "sybil"])
    assert res.exit_code != 0 and "attack kind" in res.output
    res = runner.invoke(app, ["attack", str(run), "--targets", "no-such-item"])
    assert res.exit_code != 0 and "no-such-item" in res.output
    res = runner.invoke(app, ["attack", str(run), "--defend", "--detector", "oracle"])
    assert res.exit_code != 0 and "detector must be" in res.output


def test_robustness_command_needs_embeddings_and_draws_the_curve(tmp_path, data_dir) -> None:  # type: ignore[no-untyped-def]
    run = _train(tmp_path, data_dir, "BPRMF", "epochs=3", "factors=16")
    res = runner.invoke(app, ["robustness", str(run), "--eps", "0.5,1", "--steps", "2"])
    assert res.exit_code == 0, res.output
    rows = json.loads((run / "robustness" / "robustness.json").read_text())
    assert [r["method"] for r in rows] == ["clean", "fgsm", "fgsm", "pgd", "pgd"]
    assert (run / "robustness" / "robustness.png").stat().st_size > 5_000
    ease = _train(tmp_path, data_dir, "EASE", "l2=200")
    res = runner.invoke(app, ["robustness", str(ease)])
    assert res.exit_code != 0 and "embedding" in res.output
