"""Who may read what: key scopes, public reads, answers that never depend on which users exist, key files."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_helpers import ADMIN_KEY, API_KEY, AUTH, KEYS, READ_KEY, WRITE_KEY, bearer, postgres_url

from advrec.errors import ConfigError
from advrec.runs import load_run
from advrec.serving.app import create_app
from advrec.serving.auth import KeyChecker, load_api_keys, parse_key_env, parse_key_file

pytestmark = pytest.mark.integration

STORED_USER_READS = [
    ("get", "/v1/users/{u}/recommendations", {}),
    ("get", "/v1/users/{u}/recommendations?k=1000&exclude_seen=false", {}),
    ("get", "/v1/users/{u}/explanations/50?n=100", {}),
    ("post", "/v1/users/recommendations", {"json": {"user_ids": ["{u}"], "k": 5}}),
]
PUBLIC_READS = [
    ("post", "/v1/recommendations", {"json": {"history": [{"item_id": 50}], "k": 5}}),
    ("get", "/v1/items/50/similar?k=5", {}),
    ("get", "/v1/items/popular?k=5", {}),
]
PROTECTED_OPS = ["/v1/model", "/metrics", "/docs", "/docs/assets/swagger-ui-bundle.js", "/openapi.json"]


@pytest.fixture
def app(ease_run: Path, store_url: str):  # type: ignore[no-untyped-def]
    return create_app(ease_run, store_url=store_url, api_keys=KEYS)


@pytest.fixture
def anon(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c


@pytest.fixture
def public(ease_run: Path, store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(ease_run, store_url=store_url, api_keys=KEYS, public_reads=True)) as c:
        yield c


def call(c: TestClient, method: str, path: str, kwargs: dict, user: str, headers: dict | None = None):  # type: ignore[no-untyped-def]
    body = kwargs.get("json")
    if body and "user_ids" in body:
        kwargs = {"json": {**body, "user_ids": [user]}}
    return getattr(c, method)(path.replace("{u}", user), headers=headers or {}, **kwargs)


def existing_user(ease_run: Path) -> str:
    return str(load_run(ease_run).users.raw(0))


def assert_same_refusal(c: TestClient, ease_run: Path, status: int, headers: dict | None = None) -> None:
    """Every stored-user read is refused with `status`, with the same answer for a user that exists and one that
    does not (nor one created by events): nothing tells which users exist."""
    c.post("/v1/interactions", json={"events": [{"user_id": "by-events", "item_id": 1}]}, headers=AUTH)
    for method, path, kwargs in STORED_USER_READS:
        answers = [call(c, method, path, kwargs, u, headers) for u in (existing_user(ease_run), "by-events", "nobody")]
        assert {(r.status_code, r.text) for r in answers} == {(answers[0].status_code, answers[0].text)}, path
        assert answers[0].status_code == status, (path, answers[0].text)


def test_reads_need_a_key_by_default(anon: TestClient, ease_run: Path) -> None:
    assert_same_refusal(anon, ease_run, 401)
    for method, path, kwargs in PUBLIC_READS:
        assert getattr(anon, method)(path, **kwargs).status_code == 401, path
    for path in PROTECTED_OPS:
        r = anon.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
    assert anon.get("/healthz").status_code == 200 and anon.get("/readyz").status_code == 200
    for headers in ({"Authorization": "Bearer wrong-key-wrong-key"}, {"Authorization": f"Basic {API_KEY}"}):
        assert anon.get(f"/v1/users/{existing_user(ease_run)}/recommendations", headers=headers).status_code == 401


def test_each_scope_opens_its_own_endpoints(anon: TestClient, ease_run: Path) -> None:
    user = existing_user(ease_run)
    read, write, admin = bearer(READ_KEY), bearer(WRITE_KEY), bearer(ADMIN_KEY)
    events = {"events": [{"user_id": user, "item_id": 1}]}
    for method, path, kwargs in STORED_USER_READS + [(m, p, k) for m, p, k in PUBLIC_READS]:
        assert call(anon, method, path, kwargs, user, read).status_code == 200, path
    for path in PROTECTED_OPS:
        assert anon.get(path, headers=read).status_code == 200, path
    # a write key stores events but reads nothing, and its answer does not say which users the model knows
    assert_same_refusal(anon, ease_run, 403, write)
    r = anon.post("/v1/interactions", json=events, headers=write)
    assert r.status_code == 200 and r.json()["users_not_in_training"] is None
    assert anon.post("/v1/interactions", json=events, headers=read).status_code == 403
    assert anon.post("/v1/interactions", json=events, headers=AUTH).json()["users_not_in_training"] == 0
    # admin calls need the admin scope; an admin key does not read users
    for headers in (read, write):
        r = anon.post("/v1/admin/reload", headers=headers)
        assert r.status_code == 403 and "'admin' scope" in r.json()["detail"]
        assert anon.delete(f"/v1/users/{user}", headers=headers).status_code == 403
    assert anon.post("/v1/admin/reload", headers=admin).status_code == 200
    assert_same_refusal(anon, ease_run, 403, admin)
    assert (
        anon.get("/metrics", headers=admin).status_code == 200
        and anon.get("/metrics", headers=write).status_code == 403
    )


def test_public_reads_serve_only_anonymous_histories(public: TestClient, ease_run: Path) -> None:
    for method, path, kwargs in PUBLIC_READS:
        r = getattr(public, method)(path, **kwargs)
        assert r.status_code == 200 and len(r.json()["items"]) == 5, path
    popular = public.get("/v1/items/popular", params={"k": 3}).json()
    assert popular["strategy"] == "popularity" and popular["items"][0]["score"] == 1.0
    assert_same_refusal(public, ease_run, 401)
    for path in ("/docs", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert public.get(path).status_code == 200, path
    # the docs page loads its script and style from this service, never from a CDN
    page = public.get("/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower() and "http" not in page
    assert public.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert public.get("/docs/assets/..%2f__init__.py").status_code == 404
    assert public.get("/docs/assets/index.html").status_code == 404
    assert public.get("/v1/model").status_code == 401 and public.get("/metrics").status_code == 401
    assert public.post("/v1/interactions", json={"events": [{"user_id": "x", "item_id": 1}]}).status_code == 401
    assert public.post("/v1/recommendations", json={"history": []}, headers=bearer(WRITE_KEY)).status_code == 200


def reconstruct(c: TestClient, users: list[str], headers: dict) -> tuple[dict[str, set], int]:
    """The attack of the issue: 6 requests per user rebuild their training items from explanations and from the
    difference between exclude_seen=false and exclude_seen=true at large k."""
    found: dict[str, set] = {u: set() for u in users}
    refused = 0
    for u in users:
        for item in (50, 100, 181, 258):
            r = c.get(f"/v1/users/{u}/explanations/{item}", params={"n": 100}, headers=headers)
            refused += r.status_code in (401, 403)
            if r.status_code == 200:
                found[u] |= {x["item_id"] for x in r.json()["because"] if x["contribution"] != 0}
        lists = []
        for exclude in ("false", "true"):
            r = c.get(f"/v1/users/{u}/recommendations", params={"k": 1000, "exclude_seen": exclude}, headers=headers)
            refused += r.status_code in (401, 403)
            lists.append({x["item_id"] for x in r.json()["items"]} if r.status_code == 200 else set())
        found[u] |= lists[0] - lists[1]
    return found, refused


def test_history_reconstruction_fails_without_the_read_scope(
    anon: TestClient, public: TestClient, ease_run: Path
) -> None:
    run = load_run(ease_run)
    users = [str(run.users.raw(u)) for u in range(5)]
    truth = {u: set(run.items.raw(run.history()[i].indices).tolist()) for i, u in enumerate(users)}
    found, _ = reconstruct(anon, users, bearer(READ_KEY))  # the attack works for a reader (who may see histories):
    assert found == truth  # every training item of the five users (356 items here), no false positive
    for client, headers in ((anon, {}), (public, {}), (anon, bearer(WRITE_KEY))):
        found, refused = reconstruct(client, users, headers)
        assert refused == 30 and not any(found.values())


def test_a_server_without_keys_refuses_all_but_health(ease_run: Path, store_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("ADVREC_API_KEYS", raising=False)
    with TestClient(create_app(ease_run, store_url=store_url)) as c:
        r = c.post("/v1/interactions", json={"events": [{"user_id": "1", "item_id": 1}]}, headers=AUTH)
        assert r.status_code == 401 and "none configured" in r.json()["detail"]
        assert c.get("/v1/users/1/recommendations").status_code == 401
        assert c.get("/healthz").status_code == 200


def test_status_endpoints_show_no_path_and_no_password(ease_run: Path, store_url: str, caplog) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(ease_run, store_url=store_url, api_keys=KEYS), headers=AUTH) as c:
        ready = c.get("/readyz").json()
        assert ready["store"] == "sqlite" and ready["status"] == "ready"
        model = c.get("/v1/model").json()
        assert model["run"] == ease_run.name and "run_dir" not in model
        for text in (c.get("/readyz").text, c.get("/v1/model").text, c.get("/metrics").text):
            assert str(ease_run.parent) not in text and "/tmp" not in text
    url = postgres_url()
    if url is None:
        return
    secret = "pw-that-must-not-leak"  # the test server trusts local connections, so any password is accepted
    with_pw = url.replace("postgres@", f"postgres:{secret}@", 1)
    assert secret in with_pw
    with caplog.at_level(logging.DEBUG), TestClient(create_app(ease_run, store_url=with_pw, api_keys=KEYS)) as c:
        assert c.get("/readyz").json()["store"] == "postgresql"
        c.app.state.serving.store.close()  # type: ignore[attr-defined]
        down = c.get("/readyz")
        failed = c.post("/v1/interactions", json={"events": [{"user_id": "1", "item_id": 1}]}, headers=AUTH)
        assert down.status_code == 503 and failed.status_code == 503
        assert secret not in down.text + failed.text
    assert secret not in caplog.text


def test_key_file_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "keys"
    f.write_text(
        "# operators\n  # indented comment\nfile#key-0123456789abcdef read,write\n\nadm-0123456789abcdef admin\n"
    )
    keys = parse_key_file(f.read_text(), str(f))
    assert keys == {"file#key-0123456789abcdef": {"read", "write"}, "adm-0123456789abcdef": {"admin"}}
    checker = KeyChecker(keys)
    assert checker.scopes("file#key-0123456789abcdef") == {"read", "write"}  # '#' inside a key is part of it
    assert checker.scopes("file") is None and checker.scopes("") is None and not KeyChecker({}).check("x" * 20)
    env = parse_key_env("env-key-0123456789abcdef read; env-key2-0123456789abcd read, write ,admin")
    assert env == {"env-key-0123456789abcdef": {"read"}, "env-key2-0123456789abcd": {"read", "write", "admin"}}
    monkeypatch.setenv("ADVREC_API_KEYS", "adm-0123456789abcdef read")
    assert load_api_keys(f)["adm-0123456789abcdef"] == {"read", "admin"}  # listed twice: both scope sets
    secret = "no-scope-0123456789abcdef"
    for text, line, problem in (
        (f"good-key-0123456789abcdef read\n{secret}\n", 2, "found no scope"),
        (f"{secret} read,delete\n", 1, "unknown scope"),
        (f"{secret} read {secret}x\n", 1, "unknown scope"),
        ("short read\n", 1, "at least 16 characters"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_key_file(text, "keys.txt")
        message = str(err.value)
        assert f"keys.txt, line {line}" in message and problem in message, message
        assert "'<key> <scope>[,<scope>...]'" in message or "16" in message
        assert secret not in message
    with pytest.raises(ConfigError, match=r"\$ADVREC_API_KEYS, entry 2: expected"):
        parse_key_env(f"good-key-0123456789abcdef read;{secret}")


def test_reload_loads_only_runs_under_the_runs_root(
    ease_run: Path, itemknn_run: Path, store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    (ease_run.parent / "escape").unlink(missing_ok=True)
    (ease_run.parent / "escape").symlink_to(outside)  # a link under the root that leads out of it
    app = create_app(ease_run, store_url=store_url, api_keys=KEYS)  # runs root: the parent of the served run
    with TestClient(app, headers=AUTH) as c, caplog.at_level(logging.INFO, logger="advrec.serving"):
        refusals = [
            c.post("/v1/admin/reload", json={"run_dir": run_dir})
            for run_dir in (str(outside), str(tmp_path / "missing"), "/etc", "../../etc", "escape", "../évil\u202e")
        ]
        assert {r.status_code for r in refusals} == {403}
        assert len({r.text for r in refusals}) == 1  # the same answer whether the path exists or not
        assert "runs root" in refusals[0].json()["detail"] and str(tmp_path) not in refusals[0].text
        for bad in ("runs/\nforged log line", "a\x1b[31mred", "tab\there"):
            r = c.post("/v1/admin/reload", json={"run_dir": bad})
            assert r.status_code == 422 and "control characters" in r.text
        missing = c.post("/v1/admin/reload", json={"run_dir": "nothing-here"})  # under the root: one message
        assert missing.status_code == 422
        assert missing.json()["detail"] == "cannot load run 'nothing-here': not a valid run directory"
        assert c.post("/v1/admin/reload", json={"run_dir": itemknn_run.name}).json()["model"] == "ItemKNN"
    (ease_run.parent / "escape").unlink()
    assert "\\u202e" in caplog.text and "\u202e" not in caplog.text  # user text is escaped in the log


def test_the_default_event_store_is_private_to_its_owner(ease_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(ease_run, tmp_path / "ease", ignore=shutil.ignore_patterns("events.db*"))
    with TestClient(create_app(run, api_keys=KEYS), headers=AUTH) as c:
        assert c.post("/v1/interactions", json={"events": [{"user_id": "u", "item_id": 1}]}).status_code == 200
    assert (run / "events.db").stat().st_mode & 0o777 == 0o600
