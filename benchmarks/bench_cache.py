"""How long does it take to open a payload that is already cached?

Measures ``PayloadCache.get`` for a payload of a few MB that is already on disk:

* ``cache, memo warm``: the entry was verified earlier by this process (the usual case in a
  job that asks for the same payload at every run boundary): a stat() and a dict lookup;
* ``cache, memo cold``: the first open in a fresh process: size + MD5 + SHA-256 of the file;
* ``store blob, memo warm``: an SqlStore's own blob, verified and used in place;
* ``snapshot file, memo warm``: a basf2 snapshot's payload file (MD5 only);
* ``snapshot resolve``: SnapshotSource.resolve in a tag of 1,000 IoVs (precomputed index).

Usage: python benchmarks/bench_cache.py [--size-mb 4] [--repeat 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conditions.cache import PayloadCache, forget_verified  # noqa: E402
from conditions.iov import IntervalOfValidity  # noqa: E402
from conditions.payload import PayloadInfo  # noqa: E402
from conditions.snapshot import SnapshotSource, export_snapshot  # noqa: E402
from conditions.source import MetadataSource  # noqa: E402
from conditions.store import open_store  # noqa: E402


class RemoteLikeSource(MetadataSource):
    """A source without local files, like a server: bytes only through fetch_payload."""

    description = "remote-like"

    def __init__(self, data: bytes):
        self.data = data

    def tag_state(self, tag):
        raise NotImplementedError

    def resolve(self, tags, name, exp, run, *, allow_open=False):
        raise NotImplementedError

    def iovs(self, tag, *, name=None, exp=None, run=None):
        raise NotImplementedError

    def fetch_payload(self, payload, destination):
        Path(destination).write_bytes(self.data)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return p50, p99, ordered[-1]


def timed(call, repeat: int, before=None) -> list[float]:
    samples = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t0) / 1e3)  # microseconds
    return samples


def report(label: str, samples: list[float]) -> None:
    p50, p99, worst = percentiles(samples)
    unit = "us"
    print(f"{label:34s} n={len(samples):5d}  p50 {p50:10.1f} {unit}  p99 {p99:10.1f} {unit}  max {worst:10.1f} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--cold-repeat", type=int, default=30)
    args = parser.parse_args()

    data = os.urandom(int(args.size_mb * (1 << 20)))
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        print(f"python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} cpus), "
              f"payload {len(data) / (1 << 20):.1f} MiB, work dir {work}")
        info = PayloadInfo(name="PXDBackgroundGenerator_bench", revision=1,
                           checksum=hashlib.md5(data).hexdigest(),
                           sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        source = RemoteLikeSource(data)
        cache = PayloadCache(work / "cache")
        cache.get(info, source)  # fill once

        report("cache, memo warm", timed(lambda: cache.get(info, source), args.repeat))
        report("cache, memo cold (MD5+SHA-256)", timed(lambda: cache.get(info, source), args.cold_repeat,
                                                       before=forget_verified))

        store = open_store(work / "conditions.db")
        stored = store.add_payload("PXDBackgroundGenerator_bench", data, filename="bench.safetensors")
        store.create_tag("bench")
        store.add_iov("bench", stored.name, stored.revision, IntervalOfValidity.always())
        store.set_tag_state("bench", "RUNNING")
        resolved = store.resolve("bench", stored.name, 0, 1).payload
        cache.get(resolved, store)
        report("store blob, memo warm", timed(lambda: cache.get(resolved, store), args.repeat))
        report("resolve + get (store), warm",
               timed(lambda: cache.get(store.resolve("bench", stored.name, 0, 1).payload, store), args.repeat))

        # a second tag with 1,000 IoVs for the snapshot's resolve timing
        store.create_tag("runs")
        for i in range(1000):
            store.add_iov("runs", stored.name, stored.revision, IntervalOfValidity(1, 10 * i, 1, 10 * i + 9))
        store.set_tag_state("runs", "RUNNING")
        export_snapshot(store, ["bench", "runs"], work / "snap")
        with SnapshotSource(work / "snap") as snap:
            in_snap = snap.resolve("bench", stored.name, 0, 1).payload
            cache.get(in_snap, snap)
            report("snapshot file, memo warm", timed(lambda: cache.get(in_snap, snap), args.repeat))
            counter = iter(range(10**9))
            report("snapshot resolve, 1000 IoVs, warm",
                   timed(lambda: snap.resolve("runs", stored.name, 1, (next(counter) * 7) % 10000), args.repeat))
            report("snapshot file, memo cold (MD5)", timed(lambda: cache.get(in_snap, snap), args.cold_repeat,
                                                           before=forget_verified))
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
