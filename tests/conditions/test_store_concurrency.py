"""Concurrent writers in real processes, on SQLite and on PostgreSQL: no lost update, no
race past the RUNNING append rule, revisions unique and gap-free, fresh stores created once."""

from __future__ import annotations

import multiprocessing
import traceback

import pytest

from conditions import ConcurrentModificationError, FrozenTagError, IntervalOfValidity as IoV

WORKERS = 6

# fork: the children need no re-import, which keeps these tests fast on two cores. Every
# child opens its own store (pooled connections never cross a fork).
_ctx = multiprocessing.get_context("fork")


def _run_workers(target, args_for):
    barrier = _ctx.Barrier(WORKERS)
    queue = _ctx.Queue()
    procs = [_ctx.Process(target=_worker_main, args=(target, barrier, queue, *args_for(i))) for i in range(WORKERS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    errors = [r for r in results if isinstance(r, str) and r.startswith("Traceback")]
    assert not errors, errors[0]
    return results


def _worker_main(target, barrier, queue, *args):
    try:
        barrier.wait(timeout=60)
        queue.put(target(*args))
    except BaseException:
        queue.put(traceback.format_exc())


def _append_distinct(url, payload_dir, worker, count):
    from conditions.store import open_store

    store = open_store(url, payload_dir)
    try:
        for k in range(count):
            exp = worker * 1000 + k
            store.add_iov("shared", "P", 1, IoV(exp, 0, exp, -1), user=f"worker{worker}")
        return count
    finally:
        store.close()


def test_no_lost_updates_between_concurrent_writers(store_url):
    store = store_url.open()
    store.create_tag("shared")
    store.add_payload("P", b"bytes")
    store.close()
    per_worker = 15
    results = _run_workers(_append_distinct, lambda i: (store_url.url, store_url.payload_dir, i, per_worker))
    assert results == [per_worker] * WORKERS
    store = store_url.open()
    try:
        records = store.iovs("shared")
        assert len(records) == WORKERS * per_worker
        assert {r.iov.first_exp for r in records} == {w * 1000 + k for w in range(WORKERS) for k in range(per_worker)}
        iov_audits = [e for e in store.audit(tag="shared", limit=1000) if e.action == "iov.add"]
        assert len(iov_audits) == WORKERS * per_worker
    finally:
        store.close()


def _append_after_last(url, payload_dir, worker, attempts):
    """Read the last covered run, then try to append the next one: the classic
    read-then-write race. Counts successes and the typed refusals."""
    from conditions.store import open_store

    store = open_store(url, payload_dir)
    outcome = {"added": 0, "frozen": 0, "busy": 0}
    try:
        for _ in range(attempts):
            last = max((r.iov.final_run for r in store.iovs("running", name="P")), default=-1)
            try:
                store.add_iov("running", "P", 1, IoV(0, last + 1, 0, last + 1), user=f"worker{worker}")
                outcome["added"] += 1
            except FrozenTagError:
                outcome["frozen"] += 1
            except ConcurrentModificationError:
                outcome["busy"] += 1
        return outcome
    finally:
        store.close()


def test_running_append_rule_holds_under_races(store_url):
    store = store_url.open()
    store.create_tag("running")
    store.add_payload("P", b"bytes")
    store.add_iov("running", "P", 1, IoV(0, 0, 0, 0))
    store.set_tag_state("running", "RUNNING")
    store.close()
    attempts = 12
    results = _run_workers(_append_after_last, lambda i: (store_url.url, store_url.payload_dir, i, attempts))
    added = sum(r["added"] for r in results)
    assert sum(r["added"] + r["frozen"] + r["busy"] for r in results) == WORKERS * attempts
    assert added >= attempts  # at least one writer always makes progress
    store = store_url.open()
    try:
        runs = sorted((r.iov.first_run, r.iov.final_run) for r in store.iovs("running", name="P"))
        # exactly one IoV per run, consecutive, never overlapping: no writer rewrote the past
        assert runs == [(n, n) for n in range(added + 1)]
    finally:
        store.close()


def _add_payload_revisions(url, payload_dir, worker, count):
    from conditions.store import open_store

    store = open_store(url, payload_dir)
    try:
        got = []
        for k in range(count):
            got.append(store.add_payload("Rev", f"worker {worker} item {k}".encode()).revision)
            got.append(store.add_payload("Same", b"identical bytes from everyone").revision)
        return got
    finally:
        store.close()


def test_concurrent_payload_revisions_are_unique_and_dense(store_url):
    store = store_url.open()  # create the schema first; the fresh-store race is tested below
    store.close()
    count = 5
    results = _run_workers(_add_payload_revisions, lambda i: (store_url.url, store_url.payload_dir, i, count))
    store = store_url.open()
    try:
        revisions = sorted(p.revision for p in store.list_payloads("Rev"))
        assert revisions == list(range(1, WORKERS * count + 1))
        assert [p.revision for p in store.list_payloads("Same")] == [1]
        for p in store.list_payloads():
            assert store.verified_path(p).is_file()
    finally:
        store.close()


def _open_fresh(url, payload_dir, worker):
    from conditions.store import open_store

    store = open_store(url, payload_dir)
    try:
        store.create_tag(f"tag{worker}")
        return True
    finally:
        store.close()


def test_fresh_store_opened_by_many_processes_at_once(store_url):
    results = _run_workers(_open_fresh, lambda i: (store_url.url, store_url.payload_dir, i))
    assert results == [True] * WORKERS
    store = store_url.open()
    try:
        assert [t.name for t in store.list_tags()] == [f"tag{i}" for i in range(WORKERS)]
    finally:
        store.close()
