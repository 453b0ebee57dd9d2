"""The HTTP API on run directories trained on ml-100k: answers equal the library's, events change them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient
from serving_helpers import AUTH, KEYS

from advrec.runs import load_run
from advrec.serving.app import create_app
from advrec.serving.store import open_store

pytestmark = pytest.mark.integration


@pytest.fixture
def client(ease_run: Path, store_url: str) -> Iterator[TestClient]:
    """A client whose key has every scope (the scopes themselves are tested in test_security.py)."""
    app = create_app(ease_run, store_url=store_url, api_keys=KEYS, max_batch=100, max_body_bytes=200_000)
    with TestClient(app, headers=AUTH) as c:
        yield c


def top_ids(response) -> list:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return top_ids_of(response.json())


def top_ids_of(body: dict) -> list:
    return [x["item_id"] for x in body["items"]]


def test_known_user_gets_the_library_top_k(client: TestClient, ease_run: Path) -> None:
    run = load_run(ease_run)
    raw = run.users.raw(7)
    r = client.get(f"/v1/users/{raw}/recommendations", params={"k": 10})
    body = r.json()
    items, scores = run.model.recommend(run.history(), np.array([7]), k=10)
    assert top_ids(r) == run.items.raw(items[0]).tolist()
    assert np.allclose([x["score"] for x in body["items"]], scores[0], atol=1e-5)
    assert body["strategy"] == "history" and body["model_version"].startswith("EASE-")
    assert body["items"][0]["title"] == run.titles[items[0][0]]
    seen = set(run.items.raw(run.history()[7].indices).tolist())
    assert not seen & set(top_ids(r))
    with_seen = top_ids(client.get(f"/v1/users/{raw}/recommendations", params={"k": 10, "exclude_seen": False}))
    assert seen & set(with_seen)


def test_events_change_the_next_recommendation(client: TestClient, ease_run: Path) -> None:
    run = load_run(ease_run)
    raw = str(run.users.raw(3))
    before = top_ids(client.get(f"/v1/users/{raw}/recommendations", params={"k": 10}))
    events = [{"user_id": raw, "item_id": before[0]}, {"user_id": raw, "item_id": before[1], "rating": 5}]
    r = client.post("/v1/interactions", json={"events": events}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2 and r.json()["users_not_in_training"] == 0
    after = top_ids(client.get(f"/v1/users/{raw}/recommendations", params={"k": 10}))
    assert before[0] not in after and before[1] not in after
    # the served history is the training row plus the two events: the library gives the same list
    row = run.history()[3].toarray()
    row[0, run.items.indices(before[:2])] = 1.0
    items, _ = run.model.recommend(sp.csr_matrix(row), np.array([0]), k=10)
    assert after == run.items.raw(items[0]).tolist()


def test_low_rating_is_seen_but_not_liked(client: TestClient, ease_run: Path) -> None:
    run = load_run(ease_run)
    raw = str(run.users.raw(5))
    before = client.get(f"/v1/users/{raw}/recommendations", params={"k": 5}).json()["items"]
    client.post(
        "/v1/interactions",
        json={"events": [{"user_id": raw, "item_id": before[0]["item_id"], "rating": 1}]},
        headers=AUTH,
    )
    after = client.get(f"/v1/users/{raw}/recommendations", params={"k": 4}).json()["items"]
    assert [x["item_id"] for x in after] == [x["item_id"] for x in before[1:]]  # excluded, scores unchanged
    assert np.allclose([x["score"] for x in after], [x["score"] for x in before[1:]])


def test_events_create_a_new_user_served_by_fold_in(client: TestClient) -> None:
    assert client.get("/v1/users/newcomer/recommendations").status_code == 404
    events = [{"user_id": "newcomer", "item_id": i} for i in (50, 172, 181)]
    r = client.post("/v1/interactions", json={"events": events}, headers=AUTH)
    assert r.json()["users_not_in_training"] == 1
    got = client.get("/v1/users/newcomer/recommendations", params={"k": 5})
    assert got.json()["strategy"] == "fold-in"
    adhoc = client.post("/v1/recommendations", json={"history": [{"item_id": i} for i in ("50", 172, 181)], "k": 5})
    assert top_ids(got) == top_ids(adhoc)
    assert not {50, 172, 181} & set(top_ids(got))


def test_adhoc_history_equals_library_fold_in(client: TestClient, ease_run: Path) -> None:
    run = load_run(ease_run)
    history = [1, 50, 100]
    r = client.post("/v1/recommendations", json={"history": [{"item_id": i} for i in history], "k": 8})
    body = r.json()
    assert body["strategy"] == "fold-in" and body["user_id"] is None
    idx = run.items.indices(history)
    row = sp.csr_matrix((np.ones(3, np.float32), (np.zeros(3, int), idx)), shape=(1, len(run.items)))
    items, _ = run.model.recommend(row, np.array([0]), k=8)
    assert top_ids(r) == run.items.raw(items[0]).tolist()
    # no history: EASE has nothing to fold in, so the most popular items, said as such (not catalogue order)
    empty = client.post("/v1/recommendations", json={"history": [], "k": 3}).json()
    popular = client.get("/v1/items/popular", params={"k": 3}).json()
    assert empty["strategy"] == "popularity" and top_ids_of(empty) == top_ids_of(popular)
    assert min(x["score"] for x in empty["items"]) > 0


def test_similar_items_and_explanations(client: TestClient, ease_run: Path) -> None:
    run = load_run(ease_run)
    r = client.get("/v1/items/50/similar", params={"k": 5})
    assert r.json()["strategy"] == "model" and len(top_ids(r)) == 5 and 50 not in top_ids(r)
    weights = run.model.weights_[run.items.index(50)].copy()
    weights[run.items.index(50)] = -np.inf
    assert top_ids(r) == run.items.raw(np.argsort(-weights, kind="stable")[:5]).tolist()
    raw_user = run.users.raw(0)
    e = client.get(f"/v1/users/{raw_user}/explanations/50", params={"n": 2})
    assert e.status_code == 200, e.text
    body = e.json()
    assert len(body["because"]) == 2
    expected = run.model.explain(run.history(), 0, run.items.index(50), n=2)
    assert [c["item_id"] for c in body["because"]] == [run.items.raw(j) for j, _ in expected]
    assert body["score"] == pytest.approx(float(run.model.score(run.history(), [0])[0, run.items.index(50)]), rel=1e-5)


def test_unknown_ids_are_404_with_the_id_named(client: TestClient) -> None:
    r = client.get("/v1/users/no-such-user/recommendations")
    assert r.status_code == 404 and "no-such-user" in r.json()["detail"]
    r = client.get("/v1/items/999999/similar")
    assert r.status_code == 404 and "999999" in r.json()["detail"]
    r = client.get("/v1/users/1/explanations/999999")
    assert r.status_code == 404
    r = client.post("/v1/recommendations", json={"history": [{"item_id": 1}, {"item_id": "nope"}]})
    assert r.status_code == 422 and "history[1]" in r.json()["detail"] and "nope" in r.json()["detail"]


def test_events_for_unknown_items_are_refused_whole(client: TestClient, store_url: str) -> None:
    events = [{"user_id": "1", "item_id": 1}, {"user_id": "1", "item_id": "zzz"}]
    r = client.post("/v1/interactions", json={"events": events}, headers=AUTH)
    assert r.status_code == 422 and "events[1]" in r.json()["detail"] and "zzz" in r.json()["detail"]
    with open_store(store_url) as store:
        assert store.count() == 0


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("get", "/v1/users/1/recommendations?k=0", {}, 422),
        ("get", "/v1/users/1/recommendations?k=abc", {}, 422),
        ("get", "/v1/users/1/recommendations?k=100000", {}, 422),
        ("get", "/v1/users/1/recommendations?exclude_seen=maybe", {}, 422),
        ("get", "/v1/items/1/similar?k=-1", {}, 422),
        ("get", "/v1/users/%00/recommendations", {}, 422),
        (
            "post",
            "/v1/recommendations",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
        ),
        ("post", "/v1/recommendations", {"json": {"history": [{"item_id": 1}], "k": 0}}, 422),
        ("post", "/v1/recommendations", {"json": {"history": [{"item_id": 1, "rating": "high"}]}}, 422),
        ("post", "/v1/recommendations", {"json": {"history": [{"item_id": True}]}}, 422),
        ("post", "/v1/recommendations", {"json": {"history": [], "surprise": 1}}, 422),
        ("post", "/v1/interactions", {"json": {"events": []}, "headers": AUTH}, 422),
        ("post", "/v1/interactions", {"json": {"events": [{"user_id": "", "item_id": 1}]}, "headers": AUTH}, 422),
        (
            "post",
            "/v1/interactions",
            {"json": {"events": [{"user_id": "a", "item_id": 1, "timestamp": -5}]}, "headers": AUTH},
            422,
        ),
        (
            "post",
            "/v1/interactions",
            {"json": {"events": [{"user_id": "a", "item_id": 1}] * 101}, "headers": AUTH},
            413,
        ),
        ("post", "/v1/interactions", {"content": b"[" * 300_000, "headers": AUTH}, 413),
        (
            "post",
            "/v1/interactions",
            {"content": b'{"events": 3}', "headers": {**AUTH, "content-type": "application/json"}},
            422,
        ),
    ],
)
def test_bad_input_is_4xx(client: TestClient, method: str, path: str, kwargs: dict, status: int) -> None:
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text


def test_body_limit_holds_for_announced_and_streamed_bodies(client: TestClient) -> None:
    # the limit is 200,000 bytes; a streamed body has no Content-Length and is counted as it arrives
    chunks = (b"[" * 50_000 for _ in range(5))
    r = client.post("/v1/interactions", content=chunks, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "200000 bytes" in r.json()["detail"], r.text
    r = client.post("/v1/interactions", content=b" " * 200_001, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413, r.text
    ok = {"events": [{"user_id": "a", "item_id": 1}]}
    assert client.post("/v1/interactions", json=ok, headers=AUTH).status_code < 400


def test_reload_swaps_the_model_atomically_and_keeps_it_on_failure(client: TestClient, itemknn_run: Path) -> None:
    v1 = client.get("/v1/model").json()["version"]
    same = client.post("/v1/admin/reload", headers=AUTH)
    assert same.status_code == 200 and same.json()["version"] == v1  # same files, same version
    r = client.post("/v1/admin/reload", json={"run_dir": str(itemknn_run)}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "ItemKNN" and r.json()["version"] != v1
    rec = client.get("/v1/users/1/recommendations").json()
    assert rec["model_version"] == r.json()["version"]
    bad = client.post("/v1/admin/reload", json={"run_dir": str(itemknn_run.parent / "missing")}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["detail"] == "cannot load run 'missing': not a valid run directory"
    assert client.get("/v1/model").json()["version"] == r.json()["version"]
    metrics = client.get("/metrics").text  # the run is named by its directory's name, not its path
    assert f'advrec_model_info{{model="ItemKNN",run="itemknn",version="{r.json()["version"]}"}} 1.0' in metrics
    assert "advrec_model_reloads_total 2.0" in metrics
    # a run of another dataset is refused: the stored events are of the served one
    import json
    import shutil

    other = itemknn_run.parent / "other-dataset"
    shutil.copytree(itemknn_run, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["dataset"]["name"] = "ml-1m"
    (other / "manifest.json").write_text(json.dumps(manifest))
    refused = client.post("/v1/admin/reload", json={"run_dir": str(other)}, headers=AUTH)
    assert (
        refused.status_code == 409 and "trained on dataset 'ml-1m', but this service serves 'ml-100k'" in refused.text
    )
    assert client.get("/v1/model").json()["version"] == r.json()["version"]


def test_operations_endpoints_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "model_version": None, "store": None}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    client.get("/v1/users/1/recommendations")
    client.get("/v1/users/nobody/recommendations")
    client.post("/v1/interactions", json={"events": [{"user_id": "1", "item_id": 1}] * 3}, headers=AUTH)
    m = client.get("/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert (
        'advrec_http_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"} 1.0' in text
    )
    assert (
        'advrec_http_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="404"} 1.0' in text
    )
    assert (
        'advrec_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/users/{user_id}/recommendations"}'
        in text
    )
    assert "advrec_events_ingested_total 3.0" in text
    assert "advrec_model_info{" in text


def test_readyz_fails_when_the_store_is_gone(client: TestClient) -> None:
    client.app.state.serving.store.close()  # type: ignore[attr-defined]
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "store unavailable"
    r = client.post("/v1/interactions", json={"events": [{"user_id": "1", "item_id": 1}]}, headers=AUTH)
    assert r.status_code == 503


def test_vector_model_falls_back_to_popularity_for_unseen_users(bpr_run: Path, store_url: str) -> None:
    run = load_run(bpr_run)
    with TestClient(create_app(bpr_run, store_url=store_url, api_keys=KEYS), headers=AUTH) as c:
        known = c.get(f"/v1/users/{run.users.raw(2)}/recommendations", params={"k": 5}).json()
        assert known["strategy"] == "user-vector"
        items, _ = run.model.recommend(run.history(), np.array([2]), k=5)
        assert [x["item_id"] for x in known["items"]] == run.items.raw(items[0]).tolist()
        adhoc = c.post("/v1/recommendations", json={"history": [{"item_id": 50}], "k": 5}).json()
        assert adhoc["strategy"] == "popularity"
        counts = np.asarray(run.history().sum(axis=0)).ravel()
        counts[run.items.index(50)] = -1
        assert [x["item_id"] for x in adhoc["items"]] == run.items.raw(np.argsort(-counts, kind="stable")[:5]).tolist()
        sim = c.get("/v1/items/50/similar", params={"k": 3}).json()
        assert sim["strategy"] == "co-occurrence" and len(sim["items"]) == 3
        e = c.get(f"/v1/users/{run.users.raw(2)}/explanations/50")
        assert e.status_code == 422 and "cannot explain" in e.json()["detail"]


def test_reload_of_a_corrupt_run_keeps_the_served_model(client: TestClient, ease_run: Path) -> None:
    import shutil
    import uuid

    broken = ease_run.parent / f"broken-{uuid.uuid4().hex[:8]}"  # under the runs root, beside the served run
    shutil.copytree(ease_run, broken)
    for f in (broken / "model").glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    before = client.get("/v1/model").json()["version"]
    r = client.post("/v1/admin/reload", json={"run_dir": broken.name}, headers=AUTH)  # relative to the runs root
    shutil.rmtree(broken)
    assert r.status_code == 422 and r.json()["detail"] == f"cannot load run {broken.name!r}: not a valid run directory"
    assert client.get("/v1/model").json()["version"] == before
    assert client.get("/v1/users/1/recommendations").status_code == 200


def test_batch_recommendations_equal_the_single_user_answers(client: TestClient, ease_run: Path) -> None:
    run = load_run(ease_run)
    raws = [str(run.users.raw(u)) for u in (0, 5, 9)]
    client.post("/v1/interactions", json={"events": [{"user_id": "fresh", "item_id": 50}]}, headers=AUTH)
    client.post("/v1/interactions", json={"events": [{"user_id": raws[1], "item_id": 1}]}, headers=AUTH)
    r = client.post("/v1/users/recommendations", json={"user_ids": [*raws, "fresh"], "k": 7})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["user_id"] for x in results] == [*raws, "fresh"]
    for res in results:
        single = client.get(f"/v1/users/{res['user_id']}/recommendations", params={"k": 7}).json()
        assert res["items"] == single["items"] and res["strategy"] == single["strategy"]
    bad = client.post("/v1/users/recommendations", json={"user_ids": [raws[0], "ghost"]})
    assert bad.status_code == 404 and "ghost" in bad.json()["detail"]
    assert client.post("/v1/users/recommendations", json={"user_ids": []}).status_code == 422
    assert client.post("/v1/users/recommendations", json={"user_ids": ["1"] * 1001}).status_code == 422
    # bounded work: users × k of one request is at most 100,000
    assert client.post("/v1/users/recommendations", json={"user_ids": [raws[0]] * 1000, "k": 100}).status_code == 200
    big = client.post("/v1/users/recommendations", json={"user_ids": [raws[0]] * 1000, "k": 101})
    assert big.status_code == 422 and "users × k must be at most 100000" in big.json()["detail"]


def test_events_in_postgres_change_the_next_recommendation(ease_run: Path) -> None:
    """The same fold-in through a PostgreSQL store (runs when $ADVREC_TEST_POSTGRES_URL is set)."""
    import uuid

    from serving_helpers import postgres_url

    url = postgres_url()
    if url is None:
        pytest.skip("set $ADVREC_TEST_POSTGRES_URL to a PostgreSQL URL to run the PostgreSQL store tests")
    user = f"pg-{uuid.uuid4().hex[:10]}"
    with TestClient(create_app(ease_run, store_url=url, api_keys=KEYS), headers=AUTH) as c:
        assert c.get(f"/v1/users/{user}/recommendations").status_code == 404
        r = c.post(
            "/v1/interactions", json={"events": [{"user_id": user, "item_id": i} for i in (50, 172)]}, headers=AUTH
        )
        assert r.status_code == 200, r.text
        got = c.get(f"/v1/users/{user}/recommendations", params={"k": 5})
        adhoc = c.post("/v1/recommendations", json={"history": [{"item_id": 50}, {"item_id": 172}], "k": 5})
        assert top_ids(got) == top_ids(adhoc)
        assert c.get("/readyz").json()["store"] == "postgresql"
