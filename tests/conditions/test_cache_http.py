"""The cache and snapshots against a real conditions server (uvicorn on loopback)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os

import pytest

from conditions.client import ConditionsClient
from conditions.exceptions import NoPayloadFoundError
from conditions.iov import IntervalOfValidity as IoV
from conditions.snapshot import SnapshotSource, export_snapshot

from .cache_helpers import child_get_over_http, fetch_count
from .server.conftest import start_server

NAME = "PXDBackgroundGenerator_resnet"
N_JOBS = 16


@pytest.fixture
def served(tmp_path):
    from conditions.store import open_store

    url = f"sqlite:///{tmp_path / 'conditions.db'}"
    store = open_store(url, tmp_path / "payloads")
    data = os.urandom(3 << 20)
    p = store.add_payload(NAME, data, filename="ckpt.safetensors")
    q = store.add_payload(NAME, os.urandom(1000), filename="ckpt.safetensors")
    store.create_tag("campaign")
    store.add_iov("campaign", NAME, p.revision, IoV(0, 0, 4, -1))
    store.add_iov("campaign", NAME, q.revision, IoV(5, 0, -1, -1))
    store.set_tag_state("campaign", "RUNNING")
    server = start_server(url, tmp_path / "payloads", tmp_path / "server.log")
    try:
        yield server.url, store, data
    finally:
        server.stop()
        store.close()


def test_sixteen_jobs_one_http_download(served, tmp_path):
    url, store, data = served
    counter = tmp_path / "downloads"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(N_JOBS)
    results = ctx.Queue()
    jobs = [ctx.Process(target=child_get_over_http,
                        args=(url, str(tmp_path / "cache"), str(counter), "campaign", NAME, barrier, results))
            for _ in range(N_JOBS)]
    for job in jobs:
        job.start()
    answers = [results.get(timeout=120) for _ in jobs]
    for job in jobs:
        job.join(timeout=60)
    assert not [a for a in answers if a[1] == "ERROR"], answers
    assert fetch_count(counter) == 1
    assert {a[2] for a in answers} == {hashlib.md5(data).hexdigest()}
    assert len({a[1] for a in answers}) == 1


def test_snapshot_exported_over_http_resolves_like_the_store(served, tmp_path):
    url, store, data = served
    client = ConditionsClient(url)
    try:
        report = export_snapshot(client, "campaign", tmp_path / "snap")
    finally:
        client.close()
    assert report.copied == 2
    with SnapshotSource(tmp_path / "snap") as snap:
        for exp in range(0, 8):
            for run in (0, 1, 500, 10**6):
                try:
                    want = store.resolve("campaign", NAME, exp, run)
                except NoPayloadFoundError:
                    with pytest.raises(NoPayloadFoundError):
                        snap.resolve("campaign", NAME, exp, run)
                    continue
                got = snap.resolve("campaign", NAME, exp, run)
                assert (got.payload.revision, got.payload.checksum, got.iov) == (
                    want.payload.revision, want.payload.checksum, want.iov)
                assert hashlib.sha256(snap.local_path(got.payload).read_bytes()).hexdigest() == want.payload.sha256
