"""The cache under real concurrent processes: one download for 16 cold jobs, and a writer
killed with SIGKILL mid-download leaves nothing a later get() would accept."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time

import pytest

from conditions.cache import PayloadCache, check_file, forget_verified
from conditions.exceptions import OfflineError

from .cache_helpers import FileBlobSource, child_get, child_slow_fill, fetch_count

N_JOBS = 16


# 16 forked jobs; the spawn variant (each child a fresh interpreter, as on macOS or under
# some batch systems) uses 8, and is marked slow: every child imports the package anew.
@pytest.mark.parametrize("start_method, n_jobs",
                         [("fork", N_JOBS), pytest.param("spawn", 8, marks=pytest.mark.slow)])
def test_sixteen_cold_jobs_download_once(tmp_path, start_method, n_jobs):
    data = os.urandom(3 << 20)
    counter = tmp_path / "fetches"
    # a slow fetch (0.3 s) so that all jobs really pile up on the same cold entry
    source = FileBlobSource(tmp_path / "blobs", counter=counter, fetch_delay=0.3)
    info = source.add(data, "PXDBackgroundGenerator_test", 2)
    cache_dir = tmp_path / "cache"

    ctx = multiprocessing.get_context(start_method)
    barrier = ctx.Barrier(n_jobs)
    results = ctx.Queue()
    jobs = [ctx.Process(target=child_get, args=(str(cache_dir), info, source, barrier, results))
            for _ in range(n_jobs)]
    for job in jobs:
        job.start()
    answers = [results.get(timeout=120) for _ in jobs]
    for job in jobs:
        job.join(timeout=60)
        assert job.exitcode == 0

    errors = [a for a in answers if a[1] == "ERROR"]
    assert not errors, errors
    assert fetch_count(counter) == 1, counter.read_text()
    expected = hashlib.md5(data).hexdigest()
    assert {a[2] for a in answers} == {expected}
    assert {a[1] for a in answers} == {str(cache_dir / expected[:2] / expected)}
    assert len({a[0] for a in answers}) == n_jobs  # really distinct processes
    # nothing but the payload itself in its directory
    assert [p.name for p in (cache_dir / expected[:2]).iterdir()] == [expected]


def test_writer_killed_mid_download_leaves_nothing_acceptable(tmp_path):
    data = os.urandom(2 << 20)  # 32 chunks of 64 KiB
    started = tmp_path / "started"
    slow = FileBlobSource(tmp_path / "blobs", counter=tmp_path / "fetches", chunk_delay=0.2,
                          started=started)
    info = slow.add(data, "Slow")
    cache_dir = tmp_path / "cache"

    ctx = multiprocessing.get_context("fork")
    writer = ctx.Process(target=child_slow_fill, args=(str(cache_dir), info, slow))
    writer.start()
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline and writer.is_alive(), "writer never started"
        time.sleep(0.01)
    time.sleep(0.3)  # a few chunks on disk, far from complete
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    assert writer.exitcode == -signal.SIGKILL

    forget_verified()
    target = cache_dir / info.checksum[:2] / info.checksum
    assert not target.exists()
    leftovers = list(target.parent.iterdir())
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    assert all(p.stat().st_size < len(data) for p in leftovers)
    assert check_file(target, info) is not None
    with pytest.raises(OfflineError):
        PayloadCache(cache_dir, offline=True).get(info, slow)

    # a later job gets the lock at once (the OS dropped the dead writer's flock), fetches,
    # verifies, and cleans up the partial file
    fast = FileBlobSource(tmp_path / "blobs", counter=tmp_path / "fetches")
    t0 = time.monotonic()
    path = PayloadCache(cache_dir, lock_timeout=5).get(info, fast)
    assert time.monotonic() - t0 < 5
    assert path == target and path.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == [info.checksum]
