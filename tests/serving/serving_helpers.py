"""Helpers shared by the serving tests (a module of its own: `conftest` names clash across test folders)."""

from __future__ import annotations

import os

API_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
POSTGRES_ENV = "ADVREC_TEST_POSTGRES_URL"


def postgres_url() -> str | None:
    """The PostgreSQL server of the tests ($ADVREC_TEST_POSTGRES_URL), or None: those tests are skipped."""
    return os.environ.get(POSTGRES_ENV) or None
