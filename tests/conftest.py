"""Shared fixtures: `data_dir`, the folder of real datasets (`$ADVREC_DATA_DIR`, else `../shared/data`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests/conftest.py -> tests -> repository root -> its parent, which holds shared/data
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_data_dir() -> Path:
    """`$ADVREC_DATA_DIR` when set, else `shared/data` beside the repository root."""
    env = os.environ.get("ADVREC_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else DEFAULT_DATA_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real datasets. Missing: a failure when `$CI` is set, else a skip."""
    path = real_data_dir()
    if not path.is_dir():
        message = (
            f"real datasets not found at {path}: set ADVREC_DATA_DIR to the folder that holds ml-100k/, ml-1m/ "
            "(see shared/data/SOURCES.md)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
