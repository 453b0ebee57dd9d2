"""The server's settings: one object, validated, and its round trip through the environment of a worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from advrec.errors import ConfigError
from advrec.serving.settings import ENV_PREFIX, ServingSettings


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    given = ServingSettings(run_dir=tmp_path, public_reads=True, max_batch=10, store_url="sqlite:///x.db")
    for key, value in given.to_env().items():
        monkeypatch.setenv(key, value)
    back = ServingSettings.from_env()
    assert back == given.replace(run_dir=tmp_path.resolve()) and back.public_reads and back.max_batch == 10
    monkeypatch.setenv(ENV_PREFIX + "PUBLIC_READS", "")  # empty: the default
    assert ServingSettings.from_env().public_reads is False


def test_bad_settings_are_refused_naming_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"max_batch \(\$ADVREC_SERVE_MAX_BATCH\): Input should be greater than"):
        ServingSettings(run_dir=tmp_path, max_batch=0)
    monkeypatch.setenv(ENV_PREFIX + "RUN_DIR", str(tmp_path))
    monkeypatch.setenv(ENV_PREFIX + "MAX_ENTRIES", "many")
    with pytest.raises(ConfigError, match=r"max_entries .*valid integer.*'many'"):
        ServingSettings.from_env()
    monkeypatch.delenv(ENV_PREFIX + "RUN_DIR")
    monkeypatch.delenv(ENV_PREFIX + "MAX_ENTRIES")
    with pytest.raises(ConfigError, match=r"RUN_DIR must name the run directory"):
        ServingSettings.from_env()
    with pytest.raises(ConfigError, match="unknown serving setting 'workers'; settings: run_dir, store_url"):
        ServingSettings(run_dir=tmp_path, workers=3)
