"""Shared fixtures: `data_dir`, the folder of real datasets (`$ADVREC_DATA_DIR`, else `../shared/data`)."""

from __future__ import annotations

import json
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


# ---------------------------------------------------------------------- statistical claims
# A test whose assertion is statistical (a metric above a threshold, an AUC in a band) takes its seeds from the
# `seed` fixture and records each measured value with `claim(name, value)` before asserting on it.
# `benchmarks/test_spread.py` runs those tests (marker `statistical`) over seeds 0-9 and tabulates each claim's
# range, from which the thresholds are set (range and margin written beside each assertion).
SEED_ENV = "ADVREC_TEST_SEED"
CLAIMS_ENV = "ADVREC_CLAIMS_FILE"


@pytest.fixture(scope="session")
def seed() -> int:
    """The seed of the statistical tests: `$ADVREC_TEST_SEED`, default 0 (what `make test` runs)."""
    return int(os.environ.get(SEED_ENV, "0"))


@pytest.fixture
def claim(request: pytest.FixtureRequest, seed: int):  # type: ignore[no-untyped-def]
    """`claim(name, value)` returns `value`, and appends it to `$ADVREC_CLAIMS_FILE` (JSON lines) when set."""

    def record(name: str, value: float) -> float:
        path = os.environ.get(CLAIMS_ENV)
        if path:
            line = {"test": request.node.nodeid, "claim": name, "seed": seed, "value": float(value)}
            with open(path, "a") as fh:
                fh.write(json.dumps(line) + "\n")
        return value

    return record
