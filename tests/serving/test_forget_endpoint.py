"""DELETE /v1/users/{id} (admin): the user is hidden at once, removed by `forget_user`, the refitted model served."""

from __future__ import annotations

import inspect
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from serving_helpers import AUTH, KEYS

from advrec.privacy import forget as forgetting
from advrec.runs import load_run
from advrec.serving.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def served_copy(ease_run: Path, tmp_path: Path) -> Path:
    """A copy of the EASE run: forgetting rewrites the run directory it serves."""
    return Path(shutil.copytree(ease_run, tmp_path / "runs" / "ease"))


@pytest.fixture
def client(served_copy: Path, store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(served_copy, store_url=store_url, api_keys=KEYS), headers=AUTH) as c:
        yield c


def test_forget_hides_the_user_at_once_then_serves_the_refitted_model(
    client: TestClient,
    served_copy: Path,
    itemknn_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = client.app.state.serving  # type: ignore[attr-defined]
    user = "forget-me-7f3a"
    client.post("/v1/interactions", json={"events": [{"user_id": user, "item_id": i} for i in (1, 50)]})
    assert client.get(f"/v1/users/{user}/recommendations").status_code == 200
    calls = []

    def fake_forget(run_dir, raw_user, store=None, store_url=None):  # type: ignore[no-untyped-def]
        with pytest.raises(HTTPException) as hidden:  # while it runs, no answer uses the user's data
            state.user_rows(state.model, [raw_user])
        assert hidden.value.status_code == 404 and state.events([raw_user]) == {}
        calls.append((Path(run_dir), raw_user))
        removed = store.delete_user(raw_user)
        return SimpleNamespace(
            run_dir=itemknn_run, method="exact", interactions_removed=0, events_removed=removed, seconds=0.5
        )

    monkeypatch.setattr(forgetting, "forget_user", fake_forget)
    before = client.get("/v1/model").json()["version"]
    with caplog.at_level(logging.INFO, logger="advrec.serving"):
        r = client.delete(f"/v1/users/{user}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["events_removed"] == 2 and body["interactions_removed"] == 0 and body["method"] == "exact"
    assert body["model_version"] != before and body["model_version"] == client.get("/v1/model").json()["version"]
    assert [(p.resolve(), u) for p, u in calls] == [(served_copy.resolve(), user)]
    assert client.get(f"/v1/users/{user}/recommendations").status_code == 404  # gone from the store
    assert "forgot user sha256:" in caplog.text and user not in caplog.text  # logged without the raw id


def test_forget_of_an_unknown_user_is_404_and_a_failure_keeps_the_user_hidden(
    client: TestClient, served_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(run_dir, raw_user, store=None, store_url=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    monkeypatch.setattr(forgetting, "forget_user", failing)
    r = client.delete("/v1/users/nobody-at-all")
    assert r.status_code == 404 and "nobody-at-all" in r.json()["detail"]
    user = str(load_run(served_copy).users.raw(3))
    assert client.get(f"/v1/users/{user}/recommendations").status_code == 200
    r = client.delete(f"/v1/users/{user}")
    assert r.status_code == 500 and "disk full" not in r.text
    assert client.get(f"/v1/users/{user}/recommendations").status_code == 404


needs_forget_with_store = pytest.mark.skipif(
    "store" not in inspect.signature(forgetting.forget_user).parameters,
    reason="waiting on forget_user(run_dir, raw_user, store=...)",
)


@needs_forget_with_store
def test_forget_removes_a_training_user_and_their_events(client: TestClient, served_copy: Path) -> None:
    run = load_run(served_copy)
    user = str(run.users.raw(4))
    n_train = int(run.history()[4].nnz)
    client.post("/v1/interactions", json={"events": [{"user_id": user, "item_id": 50}]})
    before = client.get("/v1/model").json()
    r = client.delete(f"/v1/users/{user}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["events_removed"] == 1 and body["interactions_removed"] >= n_train
    after = client.get("/v1/model").json()
    assert after["version"] == body["model_version"] != before["version"] and after["n_users"] == before["n_users"] - 1
    assert client.get(f"/v1/users/{user}/recommendations").status_code == 404
    assert client.delete(f"/v1/users/{user}").status_code == 404
    assert user not in load_run(served_copy).users
