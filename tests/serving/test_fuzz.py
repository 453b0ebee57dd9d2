"""Schema-driven fuzzing (schemathesis) of every operation of the OpenAPI schema: no answer is a 5xx.

Valid and invalid inputs (positive and negative generation modes) are drawn from the app's own schema, with
a key holding every scope and without a key; the number of examples per operation is bounded so the test runs
in seconds. Every POST operation also gets bodies that are not JSON (NaN, Infinity, 1e400, a lone surrogate).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from serving_helpers import AUTH, KEYS

from advrec.serving.app import create_app

pytestmark = pytest.mark.integration

SCALE = float(os.environ.get("ADVREC_FUZZ_SCALE", "1"))  # more examples for a longer local run
EXAMPLES = {
    schemathesis.GenerationMode.POSITIVE: int(25 * SCALE),
    schemathesis.GenerationMode.NEGATIVE: int(15 * SCALE),
}


@pytest.fixture(scope="module")
def api_schema(ease_run: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("fuzz")
    run = shutil.copytree(ease_run, root / "runs" / "ease")  # DELETE /v1/users/{id} may forget a user of it
    app = create_app(run, store_url=f"sqlite:///{root / 'events.db'}", api_keys=KEYS, max_body_bytes=100_000)
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)  # the schema needs the read scope


def operations(schema):  # type: ignore[no-untyped-def]
    ops = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in ops}
    assert {
        "GET /v1/users/{user_id}/recommendations",
        "POST /v1/interactions",
        "POST /v1/admin/reload",
        "DELETE /v1/users/{user_id}",
    } <= labels
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
            if not with_key and case.method in ("POST", "DELETE"):
                assert 400 <= response.status_code < 500, response.text  # refused, never stored or removed

        try:
            check()
        except Unsatisfiable:  # an operation without inputs (/healthz) has no invalid input to draw
            assert mode == schemathesis.GenerationMode.NEGATIVE, f"{op.method} {op.path}"
    assert any(200 <= s < 300 for s in seen) or mode == schemathesis.GenerationMode.NEGATIVE


NOT_JSON = ["NaN", "-Infinity", "Infinity", "1e400", '"\\ud800"', '"a\\udc00b"']


def test_every_post_operation_refuses_json_that_is_not_json(api_schema) -> None:  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    posts = [op for op in operations(api_schema) if op.method.upper() == "POST"]
    assert len(posts) >= 4
    with TestClient(api_schema.app, headers={**AUTH, "content-type": "application/json"}) as client:
        for op in posts:
            for value in NOT_JSON:
                for body in (value, f'{{"k": {value}}}', f'{{"events": [{{"user_id": {value}, "item_id": 1}}]}}'):
                    r = client.post(op.path, content=body.encode())
                    assert r.status_code == 422, (op.path, body, r.status_code, r.text)
                    assert "invalid JSON at character" in r.json()["detail"][0]["msg"], r.text
