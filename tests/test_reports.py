"""`advrec report` and `advrec compare`: self-contained HTML pages that render, with their images, in a headless
browser (Chromium, installed by .ci/run)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advrec.cli import app
from advrec.experiment import ExperimentConfig, load_data, make_split, run_experiment

pytestmark = pytest.mark.integration
runner = CliRunner()
CHECK = ('<script>window.addEventListener("load", () => document.body.setAttribute("data-images", '
         "JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth]))))</script>")  # fmt: skip


def browser() -> str:
    """Chromium's path; required where CI installed it ($ADVREC_TEST_BROWSER), else the test is skipped."""
    found = os.environ.get("ADVREC_TEST_BROWSER") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no Chromium here (.ci/run installs it from Debian)")
    return found


def rendered_images(page: Path, tmp_path: Path) -> list[list]:
    """[loaded, natural width] of every image of `page` once Chromium has loaded it (a probe script is added to a
    copy of the page; the page itself has no script)."""
    assert "<script" not in page.read_text()
    probe = tmp_path / f"probe-{page.parent.name}.html"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    dom = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("runs")
    base = ExperimentConfig(dataset="ml-100k", data_dir=str(data_dir))
    X = load_data(base)
    split = make_split(X, base)
    out = {}
    for name, params in (("MultVAE", {"epochs": 3, "hidden": 32}), ("EASE", {"l2": 200.0})):
        cfg = base.model_copy(update={"model": name, "params": params})
        out[name], _ = run_experiment(cfg, root / name.lower(), X=X, split=split)
    return out


def test_a_run_report_renders_with_its_images(runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = runner.invoke(app, ["report", str(runs["MultVAE"]), str(runs["EASE"])])
    assert res.exit_code == 0, res.output
    page = runs["MultVAE"] / "report" / "report.html"
    text = page.read_text()
    for heading in ("Protocol", "Metrics (mean over users, 95% interval)", "Training", "By user activity"):
        assert f"<h2>{heading}</h2>" in text
    markdown = (runs["MultVAE"] / "report" / "report.md").read_text()
    assert "![per-epoch training curves](training.png)" in markdown and "| Q5 |" in markdown
    images = rendered_images(page, tmp_path)
    assert len(images) == 2 and all(loaded and width > 100 for loaded, width in images)
    assert "<h2>Training</h2>" not in (runs["EASE"] / "report" / "report.html").read_text()  # no epochs to draw


def test_a_comparison_pairs_the_shared_users_and_renders(runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = runner.invoke(app, ["compare", str(runs["EASE"]), str(runs["MultVAE"]), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    markdown = (tmp_path / "cmp" / "report.md").read_text()
    assert "Paired tests on the 943 shared test users (ndcg@10, against EASE (ease))" in markdown
    tested = markdown.split("## Paired tests")[1]
    row = next(line for line in tested.splitlines() if line.startswith("| MultVAE (multvae) |"))
    assert re.fullmatch(r"\| MultVAE \(multvae\) \| [+-]0\.\d{4} \| [\d.e+-]+ \| [\d.e+-]+ \|", row), row
    metrics = markdown.split("## Paired tests")[0]
    assert re.search(r"\| EASE \(ease\) \| 0\.\d{4} \[0\.\d{4}, 0\.\d{4}\] \|", metrics)  # mean [95% interval]
    assert rendered_images(tmp_path / "cmp" / "report.html", tmp_path) == [[True, 504]]
    res = runner.invoke(app, ["compare", str(runs["EASE"])])
    assert res.exit_code != 0 and "at least two run directories" in res.output


def test_forget_drops_a_report_of_the_model_before(tmp_path, data_dir) -> None:  # type: ignore[no-untyped-def]
    from advrec.privacy.forget import forget_user
    from advrec.runs import load_run

    cfg = ExperimentConfig(dataset="ml-100k", data_dir=str(data_dir), model="EASE", params={"l2": 200.0})
    run, _ = run_experiment(cfg, tmp_path / "ease")
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0 and (run / "report" / "report.html").exists()
    (run / "notes.txt").write_text("kept")  # what the run's owner put there is carried, as before
    forget_user(run, load_run(run).users.ids[0])
    assert not (run / "report").exists() and (run / "notes.txt").read_text() == "kept"
