"""The resolve fast path for TESTING and VALIDATED tags: cached answers pinned to the tag's
change serial, dropped at once by the worker that changes the tag and within the state
TTL by any other worker on the same database (two apps with their own stores on one
SQLite file stand for two server workers)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from conditions.iov import IntervalOfValidity as IoV
from conditions.server import create_app
from conditions.store import open_store

TTL = 0.3  # state_ttl of both workers and cache_ttl of the first worker's store


class Worker:
    """One app over its own store, counting how often the route reached the store."""

    def __init__(self, tmp_path, *, state_ttl: float, store_cache_ttl: float):
        self.store = open_store(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "payloads", cache_ttl=store_cache_ttl)
        self.store_calls = 0
        versioned = self.store.resolve_versioned

        def counting(*args, **kwargs):
            self.store_calls += 1
            return versioned(*args, **kwargs)

        self.store.resolve_versioned = counting
        self.app = create_app(self.store, state_ttl=state_ttl)
        self.cache = self.app.state.resolve_cache
        self.client = TestClient(self.app)
        self.client.__enter__()

    def resolve(self, tag: str, exp: int = 1, run: int = 1):
        return self.client.get("/api/v1/resolve", params={"tag": tag, "name": "P", "exp": exp, "run": run})

    def revision(self, tag: str, exp: int = 1, run: int = 1) -> int:
        answer = self.resolve(tag, exp, run)
        assert answer.status_code == 200, answer.text
        return answer.json()["payload"]["revision"]

    def cached(self, tag: str, exp: int = 1, run: int = 1) -> bool:
        return self.cache.lookup(((tag,), "P", exp, run, False), (tag,)) is not None

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.store.close()


@pytest.fixture
def workers(tmp_path):
    first = Worker(tmp_path, state_ttl=TTL, store_cache_ttl=TTL)
    _, admin = first.store.create_token("admin", ["admin"])
    first.admin = {"Authorization": f"Bearer {admin}"}
    second = Worker(tmp_path, state_ttl=TTL, store_cache_ttl=TTL)
    # The first worker's store made the tag; both see it through the database.
    first.store.create_tag("t")
    one = first.store.add_payload("P", b"one")
    first.store.add_iov("t", "P", one.revision, IoV(0, 0, -1, -1))
    first.store.set_tag_state("t", "TESTING")
    yield first, second
    second.close()
    first.close()


def edit_through_api(worker: Worker, back_to: tuple[str, ...] = ("TESTING",)) -> int:
    """TESTING -> OPEN -> a new IoV of a new revision -> ``back_to``, all over HTTP on ``worker``."""
    admin = worker.admin

    def put_state(state):
        answer = worker.client.put("/api/v1/tags/t/state", json={"state": state}, headers=admin)
        assert answer.status_code == 200, answer.text

    put_state("OPEN")
    two = worker.client.post("/api/v1/payloads/P", content=b"two", headers=admin)
    assert two.status_code == 201, two.text
    revision = two.json()["revision"]
    iov = {"payload": "P", "revision": revision,
           "iov": {"first_exp": 0, "first_run": 0, "final_exp": -1, "final_run": -1}}
    assert worker.client.post("/api/v1/tags/t/iovs", json=iov, headers=admin).status_code == 201
    for state in back_to:
        put_state(state)
    return revision


def test_testing_answers_are_repeated_from_the_fast_path(workers):
    first, _ = workers
    assert first.revision("t") == 1 and first.store_calls == 1
    assert first.cached("t")
    for _ in range(5):
        assert first.revision("t") == 1
    assert first.store_calls == 1  # every repeat answered without the store
    # VALIDATED is pinned the same way; the state change itself drops the old answer.
    answer = first.client.put("/api/v1/tags/t/state", json={"state": "VALIDATED"}, headers=first.admin)
    assert answer.status_code == 200, answer.text
    assert first.revision("t") == 1 and first.store_calls == 2
    assert first.revision("t") == 1 and first.store_calls == 2


def test_the_changing_worker_serves_the_new_answer_at_once(tmp_path):
    # A long state TTL: only forgetting the changed tag can explain the new answer.
    worker = Worker(tmp_path, state_ttl=60.0, store_cache_ttl=60.0)
    _, admin = worker.store.create_token("admin", ["admin"])
    worker.admin = {"Authorization": f"Bearer {admin}"}
    worker.store.create_tag("t")
    worker.store.add_iov("t", "P", worker.store.add_payload("P", b"one").revision, IoV(0, 0, -1, -1))
    worker.store.set_tag_state("t", "TESTING")
    try:
        assert worker.revision("t") == 1 and worker.revision("t") == 1 and worker.store_calls == 1
        answer = worker.client.put("/api/v1/tags/t/state", json={"state": "OPEN"}, headers=worker.admin)
        assert answer.status_code == 200, answer.text
        assert worker.resolve("t").status_code == 409  # not from the cache
        new = edit_through_api_from_open(worker)
        assert worker.revision("t") == new
        assert worker.revision("t") == new and worker.cached("t")
    finally:
        worker.close()


def edit_through_api_from_open(worker: Worker) -> int:
    two = worker.client.post("/api/v1/payloads/P", content=b"two", headers=worker.admin).json()["revision"]
    iov = {"payload": "P", "revision": two, "iov": {"first_exp": 0, "first_run": 0, "final_exp": -1, "final_run": -1}}
    assert worker.client.post("/api/v1/tags/t/iovs", json=iov, headers=worker.admin).status_code == 201
    assert worker.client.put("/api/v1/tags/t/state", json={"state": "TESTING"}, headers=worker.admin).status_code == 200
    return two


def test_another_worker_serves_the_new_answer_within_the_ttl(workers):
    first, second = workers
    assert second.revision("t") == 1 and second.revision("t") == 1 and second.store_calls == 1
    assert first.client.put("/api/v1/tags/t/state", json={"state": "OPEN"}, headers=first.admin).status_code == 200
    time.sleep(TTL + 0.1)
    answer = second.resolve("t")
    assert answer.status_code == 409 and answer.json()["code"] == "unusable_tag"
    new = edit_through_api_from_open(first)
    time.sleep(TTL + 0.1)
    assert second.revision("t") == new
    calls = second.store_calls
    assert second.revision("t") == new and second.store_calls == calls  # the new answer is cached


@pytest.mark.parametrize("back_to", [("TESTING",), ("TESTING", "VALIDATED", "PUBLISHED")])
def test_an_answer_from_stale_store_rows_is_not_cached(tmp_path, workers, back_to):
    """The store keeps tag rows for its cache_ttl, so a worker may compute an answer from
    the old rows after it already knows the tag's new version: that answer must not be
    kept under the new version (it would be served until the next edit)."""
    first, _ = workers
    slow = Worker(tmp_path, state_ttl=TTL, store_cache_ttl=1.5)
    try:
        assert slow.revision("t") == 1 and slow.cached("t")
        new = edit_through_api(first, back_to)
        time.sleep(TTL + 0.1)
        # The store still answers from its old rows (documented: up to its cache_ttl) ...
        assert slow.revision("t") == 1
        # ... but this answer is not cached under the version known now.
        assert not slow.cached("t")
        calls = slow.store_calls
        assert slow.revision("t") == 1 and slow.store_calls == calls + 1
        time.sleep(1.5)
        assert slow.revision("t") == new and slow.cached("t")
    finally:
        slow.close()


def test_an_invalid_tag_is_never_answered_from_the_cache(workers):
    first, second = workers
    for state in ("VALIDATED", "PUBLISHED"):
        first.store.set_tag_state("t", state)
    time.sleep(TTL + 0.1)
    for worker in workers:
        assert worker.revision("t") == 1 and worker.cached("t")
    # Through the first worker's API (at once there), behind the second's back (within the TTL).
    answer = first.client.put("/api/v1/tags/t/state", json={"state": "INVALID"}, headers=first.admin)
    assert answer.status_code == 200
    assert first.resolve("t").status_code == 409 and not first.cached("t")
    time.sleep(TTL + 0.1)
    for _ in range(3):
        answer = second.resolve("t")
        assert answer.status_code == 409 and answer.json()["code"] == "unusable_tag"
    assert not second.cached("t")


def test_store_reports_the_versions_behind_an_answer(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'v.db'}", tmp_path / "payloads", cache_ttl=60.0)
    try:
        store.create_tag("t")
        store.add_iov("t", "P", store.add_payload("P", b"one").revision, IoV(0, 0, -1, -1))
        store.set_tag_state("t", "TESTING")
        before = store.tag_version("t")
        assert before.state.value == "TESTING" and before.serial is not None
        answer, used = store.resolve_versioned(["t"], "P", 1, 1)
        assert answer.payload.revision == 1 and used == (before,)
        # Another process moves the tag on: tag_version sees it now, the store's cached
        # row (what resolve used) lags, and says so.
        other = open_store(f"sqlite:///{tmp_path / 'v.db'}", tmp_path / "payloads")
        other.set_tag_state("t", "OPEN")
        other.close()
        after = store.tag_version("t")
        assert after.state.value == "OPEN" and after.serial > before.serial and after.tag_id == before.tag_id
        assert store.resolve_versioned(["t"], "P", 1, 1)[1] == (before,)
    finally:
        store.close()
