"""`advrec serve` refuses a bad run directory, store or key file before starting the server."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from advrec.cli import app


def words(text: str) -> str:
    """The output with line wrapping undone (the console wraps long paths)."""
    return " ".join(text.split())


def test_serve_fails_cleanly_on_bad_input(ease_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["serve", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "not an advrec run directory" in words(r.output)
    r = runner.invoke(app, ["serve", str(ease_run), "--store", "redis://x"])
    assert r.exit_code == 2 and "unknown event store URL" in words(r.output)
    keys = tmp_path / "keys"
    keys.write_text("short\n")
    r = runner.invoke(app, ["serve", str(ease_run), "--store", str(tmp_path / "e.db"), "--api-key-file", str(keys)])
    assert r.exit_code == 2 and "line 1" in words(r.output) and "at least 16" in words(r.output)
    assert "serve" in runner.invoke(app, ["--help"]).output
