"""The API's edge cases, in process (FastAPI's TestClient on a real SQLite store)."""

from __future__ import annotations

import hashlib
import time

import pytest
from fastapi.testclient import TestClient

from conditions.iov import IntervalOfValidity as IoV
from conditions.server import create_app
from conditions.store import open_store


@pytest.fixture
def api(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "payloads")
    _, admin = store.create_token("admin", ["admin"])
    _, scoped = store.create_token("calib", ["iov:calib_*"])
    app = create_app(store, max_upload_bytes=1000, state_ttl=0.2)
    with TestClient(app) as client:
        client.admin = {"Authorization": f"Bearer {admin}"}
        client.scoped = {"Authorization": f"Bearer {scoped}"}
        client.store = store
        yield client
    store.close()


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["reason"] and body["message"]
    return body


def test_uploads_are_capped_even_without_content_length(api):
    def chunks():
        for _ in range(20):
            yield b"x" * 100

    error_of(api.post("/api/v1/payloads/Big", content=chunks(), headers=api.admin), 413, "payload_too_large")
    error_of(api.post("/api/v1/payloads/Big", content=b"x" * 1001, headers=api.admin), 413, "payload_too_large")
    assert api.get("/api/v1/payloads", params={"name": "Big"}).json() == []
    assert api.post("/api/v1/payloads/Big", content=b"x" * 1000, headers=api.admin).status_code == 201


def test_upload_checks(api):
    data = b"calibration"
    wrong = hashlib.sha256(b"other").hexdigest()
    error_of(api.post("/api/v1/payloads/C", params={"sha256": wrong}, content=data, headers=api.admin),
             422, "checksum_mismatch")
    error_of(api.post("/api/v1/payloads/C", params={"metadata": "[1, 2]"}, content=data, headers=api.admin),
             422, "validation_error")
    error_of(api.post("/api/v1/payloads/C", params={"metadata": "{nope"}, content=data, headers=api.admin),
             422, "validation_error")
    error_of(api.post("/api/v1/payloads/bad.name", content=data, headers=api.admin), 422, "invalid_name")
    good = api.post("/api/v1/payloads/C", params={"sha256": hashlib.sha256(data).hexdigest(),
                                                  "metadata": '{"unit": "cm"}'}, content=data, headers=api.scoped)
    assert good.status_code == 201 and good.json()["metadata"]["unit"] == "cm"


def test_error_bodies_for_routing_and_validation(api):
    error_of(api.get("/api/v1/nothing-here"), 404, "not_found")
    error_of(api.delete("/api/v1/tags"), 405, "method_not_allowed")
    body = error_of(api.get("/api/v1/resolve", params={"tag": "gt", "name": "X", "exp": "one", "run": 0}),
                    422, "validation_error")
    assert "exp" in body["message"]
    error_of(api.post("/api/v1/tags", json={"name": "bad name!"}, headers=api.admin), 422, "invalid_name")
    error_of(api.post("/api/v1/tags", json={"name": "ok", "description": "nul\x00byte"}, headers=api.admin),
             422, "validation_error")
    error_of(api.post("/api/v1/tags", content=b"{not json", headers={**api.admin, "Content-Type": "application/json"}),
             422, "validation_error")
    error_of(api.get("/api/v1/iovs/999"), 404, "unknown_iov")
    error_of(api.get("/files/zz/Foo_r1.root"), 404, "unknown_payload")


def test_scopes_follow_the_tag_glob(api):
    for name in ("calib_x", "prod"):
        assert api.post("/api/v1/tags", json={"name": name}, headers=api.admin).status_code == 201
    api.post("/api/v1/payloads/P", content=b"p", headers=api.admin)
    iov = {"payload": "P", "revision": 1, "iov": {"first_exp": 0, "first_run": 0}}
    created = api.post("/api/v1/tags/calib_x/iovs", json=iov, headers=api.scoped)
    assert created.status_code == 201
    error_of(api.post("/api/v1/tags/prod/iovs", json=iov, headers=api.scoped), 403, "forbidden")
    prod_iov = api.post("/api/v1/tags/prod/iovs", json=iov, headers=api.admin).json()["iov_id"]
    error_of(api.delete(f"/api/v1/iovs/{prod_iov}", headers=api.scoped), 403, "forbidden")
    error_of(api.put("/api/v1/tags/calib_x/state", json={"state": "TESTING"}, headers=api.scoped), 403, "forbidden")
    error_of(api.get("/api/v1/tokens", headers=api.scoped), 403, "forbidden")
    assert api.delete(f"/api/v1/iovs/{created.json()['iov_id']}", headers=api.scoped).status_code == 200


def test_published_answers_are_cached_until_the_tag_is_invalidated(api):
    store = api.store
    store.create_tag("pub")
    payload = store.add_payload("P", b"published")
    store.add_iov("pub", "P", payload.revision, IoV(0, 0, -1, -1))
    for state in ("TESTING", "VALIDATED", "PUBLISHED"):
        store.set_tag_state("pub", state)
    params = {"tag": "pub", "name": "P", "exp": 1, "run": 1}
    first = api.get("/api/v1/resolve", params=params)
    assert first.status_code == 200 and first.headers["Cache-Control"] == "public, max-age=60"
    assert api.get("/api/v1/resolve", params=params).content == first.content
    assert api.app.state.resolve_cache.lookup((("pub",), "P", 1, 1, False), ("pub",)) == first.content

    # Invalidated behind the server's back (another worker): honoured within state_ttl.
    store.set_tag_state("pub", "INVALID")
    time.sleep(0.25)
    error_of(api.get("/api/v1/resolve", params=params), 409, "unusable_tag")


def test_only_answers_that_cannot_change_are_cached(api):
    store = api.store
    for tag in ("running", "testing", "pub"):
        store.create_tag(tag)
    payload = store.add_payload("P", b"one")
    store.add_iov("running", "P", payload.revision, IoV(1, 0, 1, 10))
    store.add_iov("pub", "P", payload.revision, IoV(0, 0, -1, -1))
    store.set_tag_state("running", "RUNNING")
    store.set_tag_state("testing", "TESTING")
    for state in ("TESTING", "VALIDATED", "PUBLISHED"):
        store.set_tag_state("pub", state)
    cache = api.app.state.resolve_cache

    def ask(tags, exp, run):
        answer = api.get("/api/v1/resolve", params={"tag": tags, "name": "P", "exp": exp, "run": run})
        assert answer.status_code == 200, answer.text
        return cache.lookup((tuple(tags), "P", exp, run, False), tags) is not None

    assert ask(["running"], 1, 5)            # RUNNING decides: the past cannot be rewritten
    assert ask(["pub", "running"], 1, 5)     # PUBLISHED decides
    # A RUNNING tag without a match before the decider may still gain one: not cached.
    assert not ask(["running", "pub"], 2, 0)
    store.add_iov("running", "P", payload.revision, IoV(2, 0, 2, -1))
    time.sleep(0.25)
    answer = api.get("/api/v1/resolve", params={"tag": ["running", "pub"], "name": "P", "exp": 2, "run": 0})
    assert answer.json()["tag"] == "running"
    # TESTING before the decider: cached, pinned to its change serial (test_resolve_cache.py).
    assert ask(["testing", "pub"], 0, 0)
    store.set_tag_state("testing", "OPEN")
    time.sleep(0.25)
    error_of(api.get("/api/v1/resolve", params={"tag": ["testing", "pub"], "name": "P", "exp": 0, "run": 0}),
             409, "unusable_tag")
    # An OPEN tag in the list (allow_open): never cached, whatever decides.
    answer = api.get("/api/v1/resolve", params={"tag": ["testing", "pub"], "name": "P", "exp": 0, "run": 0,
                                                "allow_open": "true"})
    assert answer.status_code == 200 and answer.json()["tag"] == "pub"
    assert cache.lookup((("testing", "pub"), "P", 0, 0, True), ("testing", "pub")) is None


def test_every_write_through_the_api_is_listed_in_the_audit(api):
    """Each kind of change made over HTTP leaves an entry naming the token, readable by
    anyone through GET /api/v1/audit; a refused write leaves none."""
    a = api.admin
    assert api.post("/api/v1/tags", json={"name": "calib_a"}, headers=a).status_code == 201
    assert api.patch("/api/v1/tags/calib_a", json={"description": "new text"}, headers=a).status_code == 200
    assert api.post("/api/v1/payloads/P", content=b"p", headers=api.scoped).status_code == 201
    iov = {"payload": "P", "revision": 1, "iov": {"first_exp": 0, "first_run": 0, "final_exp": 0, "final_run": 9}}
    iov_id = api.post("/api/v1/tags/calib_a/iovs", json=iov, headers=api.scoped).json()["iov_id"]
    changed = {"iov": {"first_exp": 0, "first_run": 0, "final_exp": 0, "final_run": 5}}
    assert api.patch(f"/api/v1/iovs/{iov_id}", json=changed, headers=api.scoped).status_code == 200
    assert api.post("/api/v1/tags/calib_a/clone", json={"destination": "calib_b"}, headers=a).status_code == 201
    assert api.delete(f"/api/v1/iovs/{iov_id}", headers=api.scoped).status_code == 200
    assert api.put("/api/v1/tags/calib_a/state", json={"state": "TESTING"}, headers=a).status_code == 200
    created = api.post("/api/v1/tokens", json={"name": "shifter", "scopes": ["iov:x*"]}, headers=a)
    assert created.status_code == 201
    assert api.delete(f"/api/v1/tokens/{created.json()['token']['token_id']}", headers=a).status_code == 200
    # refused writes: no entry
    error_of(api.post("/api/v1/tags", json={"name": "calib_a"}, headers=a), 409, "tag_exists")
    error_of(api.post("/api/v1/tags", json={"name": "nobody"}), 401, "unauthenticated")

    answer = api.get("/api/v1/audit", params={"limit": 1000})
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    entries = answer.json()
    done = [(e["action"], e["tag"], e["who"]) for e in reversed(entries) if e["action"] != "token.create"
            or e["details"].get("name") == "shifter"]
    assert done == [
        ("tag.create", "calib_a", "admin"), ("tag.modify", "calib_a", "admin"),
        ("payload.add", None, "calib"), ("iov.add", "calib_a", "calib"), ("iov.modify", "calib_a", "calib"),
        ("tag.clone", "calib_b", "admin"), ("iov.delete", "calib_a", "calib"), ("tag.state", "calib_a", "admin"),
        ("token.create", None, "admin"), ("token.revoke", None, "admin"),
    ]
    only_a = api.get("/api/v1/audit", params={"tag": "calib_a"}).json()
    assert {e["tag"] for e in only_a} == {"calib_a"} and len(only_a) == 6
    assert all(e["when"] for e in entries)
