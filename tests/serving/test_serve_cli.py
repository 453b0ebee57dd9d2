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
    store = ["--store", str(tmp_path / "e.db")]
    keys.write_text("short read\n")
    r = runner.invoke(app, ["serve", str(ease_run), *store, "--api-key-file", str(keys)])
    assert r.exit_code == 2 and "line 1" in words(r.output) and "at least 16" in words(r.output)
    keys.write_text("# ops\nkey-without-scopes-0123456789\n")  # scopes are required; the key is not shown
    r = runner.invoke(app, ["serve", str(ease_run), *store, "--api-key-file", str(keys)])
    out = words(r.output)
    assert r.exit_code == 2 and "line 2" in out and "'<key> <scope>[,<scope>...]'" in out
    assert "key-without-scopes" not in out
    r = runner.invoke(app, ["serve", str(ease_run), *store, "--protect-reads"])
    assert r.exit_code == 2 and "--protect-reads was removed" in words(r.output)
    assert "serve" in runner.invoke(app, ["--help"]).output
    help_text = words(runner.invoke(app, ["serve", "--help"]).output)
    assert "--public-reads" in help_text and "--runs-root" in help_text and "--protect-reads" not in help_text
