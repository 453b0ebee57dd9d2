"""advrec.tuning and `advrec tune`: spaces inside the declared constraints, studies that pick the best validation
value, resume after more trials or an interrupt, pruning of torch trials, the refit run, the command line."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

import advrec.tuning as tuning
from advrec.cli import app
from advrec.data.splits import ratio_split
from advrec.errors import ConfigError
from advrec.evaluation import evaluate
from advrec.experiment import ExperimentConfig
from advrec.models import BPRMF, EASE, MultVAE
from advrec.models.base import _REGISTRY
from advrec.models.params import check_space, is_valid
from advrec.models.torch_base import TrainingPlugin
from advrec.runs import load_run
from advrec.testing import two_communities
from advrec.tuning import Choice, Float, Int, PruningPlugin, search_space, tune

runner = CliRunner()
TUNED = ("EASE", "EDLAE", "ItemKNN", "GFCF", "BSPM", "BPRMF", "MultVAE", "IALS")


@pytest.fixture(autouse=True)
def _quiet_optuna():
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(before)


@pytest.fixture(scope="module")
def tiny():
    return two_communities(60, 30, density=0.3, random_state=1)


def finished(run_dir) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=tuning.STUDY_NAME, storage=f"sqlite:///{run_dir / tuning.STUDY_FILE}")
    return study.trials


# ---------------------------------------------------------------------- spaces
@pytest.mark.parametrize("name", sorted(n for n, c in _REGISTRY.items() if getattr(c, "_search_space", None)))
def test_declared_space_lies_inside_the_constraints(name):
    space = search_space(name)  # raises where a bound is refused
    cls = _REGISTRY[name]
    for param, dim in space.items():
        for value in dim.points():
            assert any(is_valid([c], value) for c in cls._parameter_constraints[param]), (name, param, value)


def test_the_main_models_declare_spaces():
    for name in TUNED:
        assert search_space(name), name


def test_malformed_spaces_are_refused():
    constraints = EASE._parameter_constraints
    with pytest.raises(ConfigError, match=r"l2.*must be a float in \(0"):
        check_space("EASE", constraints, {"l2": Float(0.0, 10.0)})  # l2 > 0
    with pytest.raises(ConfigError, match="log-scale Float needs low > 0"):
        check_space("EASE", constraints, {"l2": Float(0.0, 10.0, log=True)})
    with pytest.raises(ConfigError, match="'alpha', which is not a parameter"):
        check_space("EASE", constraints, {"alpha": Float(1.0, 2.0)})
    with pytest.raises(ConfigError, match=r"dtype.*reaches 'float16'"):
        check_space("EASE", constraints, {"dtype": Choice(["float32", "float16"])})
    with pytest.raises(ConfigError, match="low ≤ high"):
        check_space("EASE", constraints, {"l2": Float(10.0, 1.0)})
    with pytest.raises(ConfigError, match="declares no search space"):
        search_space("Pop")


def test_bad_arguments_name_themselves(tiny, tmp_path):
    with pytest.raises(ConfigError, match="metric must be METRIC@K"):
        tune("EASE", data=tiny, run_dir=tmp_path / "a", trials=1, metric="ndcg")
    with pytest.raises(ConfigError, match="trials must be at least 1"):
        tune("EASE", data=tiny, run_dir=tmp_path / "a", trials=0)
    with pytest.raises(ConfigError, match="nothing to tune"):
        tune("EASE", ExperimentConfig(params={"l2": 5.0}), data=tiny, run_dir=tmp_path / "a", trials=1)
    with pytest.raises(ConfigError, match="validation part"):
        split = ratio_split(tiny, (0.8, 0.0, 0.2), random_state=0)
        tune("EASE", split=split, run_dir=tmp_path / "a", trials=1)
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------------- studies
def test_tune_picks_the_best_validation_value_and_refits_it(tiny, tmp_path):
    run_dir = tmp_path / "ease"
    result = tune("EASE", data=tiny, run_dir=run_dir, trials=4, seed=3, space={"l2": Float(0.1, 1e4, log=True)})
    values = [t.value for t in result.study.trials if t.state == TrialState.COMPLETE]
    assert len(values) == 4 and result.best_value == max(values)
    assert result.counts == {"complete": 4}
    run = load_run(run_dir)  # a normal run: model, split, id maps, manifest
    assert isinstance(run.model, EASE) and run.model.l2 == pytest.approx(result.best_params["l2"])
    again = evaluate(run.model, run.split, ks=(10,), on="valid").summary["ndcg@10"]
    assert again == pytest.approx(result.best_value, abs=1e-9)  # selection reproduced by the refit
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["tuning"]["best_value"] == pytest.approx(result.best_value)
    assert "ndcg@10" in manifest["metrics"] and manifest["config"]["seed"] == 3
    assert (run_dir / "tuning.png").stat().st_size > 0
    report = (run_dir / "report.md").read_text()
    assert "## Parameter importances" in report and "- l2: 1.000" in report and "| 3 | complete |" in report


def test_one_trial_reports_why_there_are_no_importances(tiny, tmp_path):
    result = tune("EDLAE", data=tiny, run_dir=tmp_path / "e", trials=1, seed=0)
    assert set(result.best_params) == {"dropout", "l2"}
    report = (tmp_path / "e" / "report.md").read_text()
    assert "parameter importances need at least 2 complete trials; the study has 1" in report
    assert (tmp_path / "e" / "tuning.png").stat().st_size > 0


def test_a_study_resumes_with_more_trials(tiny, tmp_path):
    run_dir = tmp_path / "knn"
    tune("ItemKNN", data=tiny, run_dir=run_dir, trials=3, seed=0, refit=False)
    assert len(finished(run_dir)) == 3
    result = tune("ItemKNN", data=tiny, run_dir=run_dir, trials=5, seed=0)
    trials = finished(run_dir)
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({(t.params["k"], t.params["shrink"]) for t in trials}) == 5  # the resumed sampler draws anew
    assert result.counts == {"complete": 5}
    tune("ItemKNN", data=tiny, run_dir=run_dir, trials=5, seed=0, refit=False)  # nothing left to do
    assert len(finished(run_dir)) == 5
    with pytest.raises(ConfigError, match=r"holds a study with other settings.*seed 0, now 1"):
        tune("ItemKNN", data=tiny, run_dir=run_dir, trials=5, seed=1)


def test_an_interrupted_study_resumes(tiny, tmp_path, monkeypatch):
    run_dir = tmp_path / "ease"
    fit = tuning.fit_trial
    calls = []

    def interrupted_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return fit(*args, **kw)

    monkeypatch.setattr(tuning, "fit_trial", interrupted_third)
    with pytest.raises(KeyboardInterrupt):
        tune("EASE", data=tiny, run_dir=run_dir, trials=4, seed=0)
    states = [(t.state, t.user_attrs.get(tuning.INTERRUPTED, False)) for t in finished(run_dir)]
    assert states == [(TrialState.COMPLETE, False)] * 2 + [(TrialState.FAIL, True)]
    # a trial a hard stop left RUNNING (the process killed between two writes) is marked failed on resume
    study = optuna.load_study(study_name=tuning.STUDY_NAME, storage=f"sqlite:///{run_dir / tuning.STUDY_FILE}")
    study.ask()
    result = tune("EASE", data=tiny, run_dir=run_dir, trials=4, seed=0)
    trials = finished(run_dir)
    assert sum(tuning.counted(t) for t in trials) == 4 and len(trials) == 6
    assert [t.state for t in trials if t.user_attrs.get(tuning.INTERRUPTED)] == [TrialState.FAIL] * 2
    assert result.counts == {"complete": 4, "interrupted": 2}
    assert trials[4].params == trials[2].params  # the interrupted configuration is tried again, first
    assert isinstance(load_run(run_dir).model, EASE)


def test_a_failing_configuration_fails_its_trial_only(tiny, tmp_path):
    # GFCF's k must be below the smaller side of the training matrix (30 items): k ≥ 30 fails, k < 30 works
    result = tune("GFCF", data=tiny, run_dir=tmp_path / "g", trials=6, seed=0, space={"k": Int(2, 60)}, refit=False)
    states = {t.state for t in result.study.trials}
    assert states == {TrialState.COMPLETE, TrialState.FAIL}
    failed = [t for t in result.study.trials if t.state == TrialState.FAIL]
    assert all("must be below the smaller side" in t.user_attrs[tuning.ERROR] for t in failed)
    assert all(t.params["k"] >= 30 for t in failed)


# ---------------------------------------------------------------------- pruning
class FakeTrial:
    """Records reports; says "prune" from the `prune_at`-th consultation on."""

    def __init__(self, prune_at: int) -> None:
        self.reports: list[tuple[int, float]] = []
        self.asked, self.prune_at = 0, prune_at

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        self.asked += 1
        return self.asked >= self.prune_at


def test_pruning_consults_the_trial_every_validated_epoch(tiny):
    split = ratio_split(tiny, (0.8, 0.1, 0.1), random_state=0)
    trial = FakeTrial(prune_at=3)
    model = MultVAE(hidden=16, latent=8, epochs=10, eval_every=2, patience=10, device="cpu")
    with pytest.raises(optuna.TrialPruned, match=r"valid_ndcg@10 .* at epoch 6"):
        model.fit(split.train, valid=split, plugins=[PruningPlugin(trial, "valid_ndcg@10")])  # type: ignore[arg-type]
    assert [s for s, _ in trial.reports] == [2, 4, 6] and trial.asked == 3
    assert all(np.isfinite(v) for _, v in trial.reports)


def test_a_watching_plugin_leaves_the_fit_as_it_is(tiny):
    """BPRMF keeps its written-out gradient step with a plug-in that only watches: same weights as without."""

    class Watch(TrainingPlugin):
        changes_training = False

        def __init__(self) -> None:
            self.rows: list[dict[str, float]] = []

        def epoch_end(self, model, row):  # type: ignore[no-untyped-def]
            self.rows.append(row)

    split = ratio_split(tiny, (0.8, 0.1, 0.1), random_state=0)
    make = lambda: BPRMF(factors=8, epochs=4, eval_every=1, patience=10, batch_size=64, device="cpu")  # noqa: E731
    plain = make().fit(split.train, valid=split)
    watch = Watch()
    watched = make().fit(split.train, valid=split, plugins=[watch])
    assert np.array_equal(plain.network_.user.weight.detach().numpy(), watched.network_.user.weight.detach().numpy())
    assert [r["epoch"] for r in watch.rows] == [1, 2, 3, 4] and "valid_ndcg@10" in watch.rows[0]


def test_a_bad_torch_configuration_is_pruned(tiny, tmp_path):
    # two learning rates that learn, then two that leave the network where it started; judged at epoch 3, where
    # (seed 0) the first two score 0.313 and 0.249 and the last two 0.166 (seeds 1, 2: median 0.210 / 0.222
    # against 0.166 / 0.205)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3)
    result = tune(
        "MultVAE",
        ExperimentConfig(params={"hidden": 16, "latent": 8, "epochs": 8, "patience": 8, "device": "cpu"}),
        data=tiny,
        run_dir=tmp_path / "vae",
        trials=4,
        seed=0,
        space={"lr": Float(1e-7, 3e-2, log=True)},
        pruner=pruner,
        enqueue=[{"lr": 3e-2}, {"lr": 1e-2}, {"lr": 1e-7}, {"lr": 2e-7}],
        refit=False,
    )
    trials = result.study.trials
    assert [t.params["lr"] for t in trials] == [3e-2, 1e-2, 1e-7, 2e-7]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 2
    assert [len(t.intermediate_values) for t in trials] == [8, 8, 3, 3]


# ---------------------------------------------------------------------- command line
def flat(output: str) -> str:
    """The console output with its line wrapping undone (the terminal wraps at a width, between words)."""
    return " ".join(output.split())


def test_cli_tunes_resumes_and_writes_a_run(tmp_path, data_dir, monkeypatch):
    run_dir = tmp_path / "tune"
    args = ["tune", "EASE", "--dataset", "ml-100k", "--data-dir", str(data_dir), "--out", str(run_dir)]
    fit = tuning.fit_trial
    calls = []

    def interrupted_second(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fit(*a, **kw)

    monkeypatch.setattr(tuning, "fit_trial", interrupted_second)
    res = runner.invoke(app, [*args, "--trials", "3"])
    assert res.exit_code == 130 and "run the same command to resume" in flat(res.output)
    res = runner.invoke(app, [*args, "--trials", "3"])
    assert res.exit_code == 0, res.output
    assert "trial 3 [3/3] complete" in flat(res.output) and "best validation ndcg@10" in flat(res.output)
    assert sum(tuning.counted(t) for t in finished(run_dir)) == 3
    res = runner.invoke(app, ["evaluate", str(run_dir)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert f"{manifest['metrics']['ndcg@10']:.4f}" in flat(res.output)
    assert {"report.md", "tuning.png", tuning.STUDY_FILE} <= {p.name for p in run_dir.iterdir()}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["Nope"], "unknown model 'Nope'"),
        (["Pop"], "Pop declares no search space"),
        (["EASE", "--metric", "ndcg@x"], "metric must be METRIC@K"),
        (["EASE", "--set", "l3=1"], "EASE has no parameter 'l3'"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, extra, message):
    res = runner.invoke(app, ["tune", *extra, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and message in flat(res.output)
    assert not (tmp_path / "x").exists()
