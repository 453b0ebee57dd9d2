"""Fixtures of the serving tests: small run directories trained on ml-100k, apps and an event store URL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from serving_helpers import POSTGRES_ENV, postgres_url

from advrec.experiment import ExperimentConfig, run_experiment


def train_run(root: Path, data_dir: Path, model: str, **params: object) -> Path:
    cfg = ExperimentConfig(dataset="ml-100k", data_dir=str(data_dir), model=model, params=dict(params))
    path, _ = run_experiment(cfg, root / model.lower())
    return path


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def ease_run(runs_root: Path, data_dir: Path) -> Path:
    """EASE on ml-100k (ratings ≥ 3, per-user 8:1:1 split): fits in about a second."""
    return train_run(runs_root, data_dir, "EASE", l2=200.0)


@pytest.fixture(scope="session")
def itemknn_run(runs_root: Path, data_dir: Path) -> Path:
    return train_run(runs_root, data_dir, "ItemKNN", k=50)


@pytest.fixture(scope="session")
def bpr_run(runs_root: Path, data_dir: Path) -> Path:
    """BPR-MF (one vector per user), one epoch: only its serving fallbacks are tested."""
    return train_run(runs_root, data_dir, "BPRMF", epochs=1, batch_size=8192, factors=8, device="cpu")


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A fresh table name in the test PostgreSQL database, dropped afterwards."""
    url = postgres_url()
    if url is None:
        pytest.skip(f"set ${POSTGRES_ENV} to a PostgreSQL URL to run the PostgreSQL store tests")
    name = f"advrec_test_{uuid.uuid4().hex[:12]}"
    yield name
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")  # type: ignore[arg-type]


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """The test PostgreSQL URL with a fresh schema first on the search path (dropped afterwards) and an
    application name of its own, so that a server started on it sees only its own tables and connections."""
    url = postgres_url()
    if url is None:
        pytest.skip(f"set ${POSTGRES_ENV} to a PostgreSQL URL to run the PostgreSQL store tests")
    import psycopg

    name = f"advrec_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")  # type: ignore[arg-type]
    sep = "&" if "?" in url else "?"
    yield f"{url}{sep}options=-csearch_path%3D{name}&application_name={name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")  # type: ignore[arg-type]
