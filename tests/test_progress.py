"""Progress of long work: a log line per epoch / iteration / evaluation chunk when there is no terminal."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from advrec.data.splits import ratio_split
from advrec.evaluation import evaluate
from advrec.models import BPRMF, IALS
from advrec.progress import Steps, enable_progress, progress_wanted
from advrec.testing import two_communities


@pytest.fixture
def progress_lines(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="advrec.progress")
    yield caplog
    enable_progress(False)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "advrec.progress"]


def test_a_line_per_step_with_what_it_reported_and_the_time_left(progress_lines):
    steps = Steps(range(3), "work", show=True, unit="round")
    for i in steps:
        if i != 1:  # step 1 reports nothing: its line comes when step 2 starts
            steps.report({"round": i, "loss": 0.5})
    lines = messages(progress_lines)
    assert [line.split(";")[0] for line in lines] == [
        "work: round 1 of 3: loss 0.5",
        "work: round 2 of 3",
        "work: round 3 of 3: loss 0.5",
    ]
    assert all("s so far, about" in line and "s left" in line for line in lines)


def test_nothing_unless_asked_or_enabled(progress_lines):
    for i in (steps := Steps(range(2), "quiet", show=progress_wanted(None))):
        steps.report({"i": i})
    assert not messages(progress_lines)
    enable_progress()
    assert progress_wanted(None) and not progress_wanted(False) and progress_wanted(True)


def test_training_and_evaluation_log_each_epoch_and_chunk(progress_lines):
    split = ratio_split(two_communities(40, 20), (0.7, 0.1, 0.2), random_state=0)
    IALS(factors=4, iterations=3, device="cpu", verbose=True).fit(split.train, valid=split)
    BPRMF(factors=4, epochs=2, eval_every=1, device="cpu", verbose=True).fit(split.train, valid=split)
    evaluate(IALS(factors=4, iterations=1, device="cpu").fit(split.train), split, batch_size=16, progress=True)
    lines = messages(progress_lines)
    ials = [line for line in lines if line.startswith("IALS: iteration")]
    assert len(ials) == 3 and "valid_ndcg@10" in ials[0] and "at most about" in ials[0]  # early stopping may end it
    assert [line.split(":")[1] for line in lines if line.startswith("BPRMF")] == [" epoch 1 of 2", " epoch 2 of 2"]
    chunks = [line for line in lines if line.startswith("evaluating")]
    assert len(chunks) == 3 and "chunk 3 of 3" in chunks[-1]  # the validation inside training logs no chunks


def test_the_command_line_shows_progress_unless_quiet(tmp_path, data_dir):
    from typer.testing import CliRunner

    from advrec.cli import app

    base = ["train", "IALS", "--dataset", "ml-100k", "--data-dir", str(data_dir), "--set", "iterations=2"]
    loud = CliRunner().invoke(app, [*base, "--set", "factors=4", "--out", str(tmp_path / "a")])
    assert loud.exit_code == 0, loud.output
    assert "IALS: iteration 2 of 2" in loud.output and "evaluating 943 users: chunk 1 of 1" in loud.output
    quiet = CliRunner().invoke(app, ["--quiet", *base, "--set", "factors=4", "--out", str(tmp_path / "b")])
    assert quiet.exit_code == 0 and "iteration" not in quiet.output


def test_a_command_leaves_the_progress_logger_as_it_was(tmp_path, data_dir, caplog):
    """The command line's handler and settings last for one command: a library call after it logs as before."""
    from typer.testing import CliRunner

    from advrec.cli import app
    from advrec.progress import log

    before = (list(log.handlers), log.level, log.propagate)
    result = CliRunner().invoke(app, ["datasets", "--data-dir", str(data_dir), "--no-counts"])
    assert result.exit_code == 0, result.output
    assert (list(log.handlers), log.level, log.propagate) == before and not progress_wanted(None)
    caplog.set_level(logging.INFO, logger="advrec.progress")
    for _ in (steps := Steps(range(1), "after", show=True)):
        steps.report({})
    lines = messages(caplog)
    assert len(lines) == 1 and lines[0].startswith("after: step 1 of 1")
