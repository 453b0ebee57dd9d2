"""Schema-driven fuzzing (schemathesis) of every operation of the OpenAPI schema: no answer is a 5xx.

Valid and invalid inputs (positive and negative generation modes) are drawn from the app's own schema, with
and without an API key; the number of examples per operation is bounded so the test runs in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from serving_helpers import API_KEY, AUTH

from advrec.serving.app import create_app

pytestmark = pytest.mark.integration

SCALE = float(os.environ.get("ADVREC_FUZZ_SCALE", "1"))  # more examples for a longer local run
EXAMPLES = {
    schemathesis.GenerationMode.POSITIVE: int(25 * SCALE),
    schemathesis.GenerationMode.NEGATIVE: int(15 * SCALE),
}


@pytest.fixture(scope="module")
def api_schema(ease_run: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    store = tmp_path_factory.mktemp("fuzz") / "events.db"
    app = create_app(ease_run, store_url=f"sqlite:///{store}", api_keys=[API_KEY], max_body_bytes=100_000)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema):  # type: ignore[no-untyped-def]
    ops = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in ops}
    assert {"GET /v1/users/{user_id}/recommendations", "POST /v1/interactions", "POST /v1/admin/reload"} <= labels
    return ops


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
def test_fuzzing_finds_no_server_error(api_schema, mode: schemathesis.GenerationMode, with_key: bool) -> None:  # type: ignore[no-untyped-def]
    seen: dict[int, int] = {}
    for op in operations(api_schema):

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES[mode] if with_key else int(5 * SCALE),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers=AUTH if with_key else None)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            request = f"{case.method} {case.formatted_path} {case.query} {case.body!r}"
            assert response.status_code < 500, f"{request}: {response.status_code} {response.text}"
            if not with_key and case.method == "POST" and case.path in ("/v1/interactions", "/v1/admin/reload"):
                assert 400 <= response.status_code < 500, response.text  # refused, never stored

        try:
            check()
        except Unsatisfiable:  # an operation without inputs (/healthz) has no invalid input to draw
            assert mode == schemathesis.GenerationMode.NEGATIVE, f"{op.method} {op.path}"
    assert any(200 <= s < 300 for s in seen) or mode == schemathesis.GenerationMode.NEGATIVE
