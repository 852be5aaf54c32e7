"""Resolve latency of the SQL conditions store.

Builds an SQLite store with 100 global tags x 1,000 IoVs each (one payload name, 10
revisions, 10 experiments x 100 run ranges per tag), then times ``store.resolve`` at
random (tag, exp, run) points:

* warm: tags PUBLISHED, the in-process index already filled (dict look-ups + one bisect);
* cold: ``cache=False``, every call asks SQLite (tag row + one indexed point query);
* index fill: the first resolve of a (tag, name) in a fresh process (loads 1,000 IoVs);
* local payload: ``local_path`` (path only) and ``verified_path`` (re-hash 64 KiB).

Run on one core, as recorded in BENCHMARKS.md:

    taskset -c 0 python benchmarks/bench_resolve.py
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conditions import IntervalOfValidity  # noqa: E402
from conditions.store import open_store  # noqa: E402

NAME = "BenchPayload"


def build(db: Path, tags: int, iovs_per_tag: int) -> None:
    store = open_store(db)
    try:
        revisions = 10
        for rev in range(1, revisions + 1):
            store.add_payload(NAME, os.urandom(64 * 1024) if rev == 1 else f"revision {rev}".encode())
        per_exp = 100
        for t in range(tags):
            tag = f"bench_{t:03d}"
            store.create_tag(tag)
            items = []
            for k in range(iovs_per_tag):
                exp, slot = divmod(k, per_exp)
                iov = IntervalOfValidity(exp, slot * 10, exp, slot * 10 + 9)
                items.append((NAME, k % revisions + 1, iov))
            store.add_iovs(tag, items)
            store.set_tag_state(tag, "TESTING")
            store.set_tag_state(tag, "VALIDATED")
            store.set_tag_state(tag, "PUBLISHED")
    finally:
        store.close()


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 / 1000.0, p99 / 1000.0  # microseconds


def points(rng: random.Random, tags: int, iovs_per_tag: int, n: int):
    exps = iovs_per_tag // 100
    return [(f"bench_{rng.randrange(tags):03d}", rng.randrange(exps), rng.randrange(1000)) for _ in range(n)]


def time_resolves(store, queries) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for tag, exp, run in queries:
        start = clock()
        store.resolve(tag, NAME, exp, run)
        samples.append(clock() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--iovs", type=int, default=1000, help="IoVs per tag (multiple of 100)")
    parser.add_argument("--warm", type=int, default=200_000, help="number of warm resolves")
    parser.add_argument("--cold", type=int, default=5_000, help="number of cold resolves")
    parser.add_argument("--db", type=Path, help="keep the store here (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.db"
        if not db.exists():
            start = time.perf_counter()
            build(db, args.tags, args.iovs)
            print(f"built {args.tags} tags x {args.iovs} IoVs in {time.perf_counter() - start:.1f} s ({db})")
        rng = random.Random(42)

        store = open_store(db)
        try:
            # index fill: the first resolve per tag in this process
            fill = []
            for t in range(args.tags):
                start = time.perf_counter_ns()
                store.resolve(f"bench_{t:03d}", NAME, 3, 55)
                fill.append(time.perf_counter_ns() - start)
            queries = points(rng, args.tags, args.iovs, args.warm)
            time_resolves(store, queries)  # first pass builds the answer objects
            warm = time_resolves(store, queries)
        finally:
            store.close()

        cold_store = open_store(db, cache=False)
        try:
            time_resolves(cold_store, points(rng, args.tags, args.iovs, 200))  # settle the pool
            cold = time_resolves(cold_store, points(rng, args.tags, args.iovs, args.cold))
            payload = cold_store.get_payload(NAME, 1)
            local, verified = [], []
            for _ in range(2000):
                start = time.perf_counter_ns()
                cold_store.local_path(payload)
                local.append(time.perf_counter_ns() - start)
            for _ in range(500):
                start = time.perf_counter_ns()
                cold_store.verified_path(payload)
                verified.append(time.perf_counter_ns() - start)
        finally:
            cold_store.close()

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"python {platform.python_version()}, {cpu}, {affinity} core(s) usable, "
          f"load average {os.getloadavg()[0]:.2f}")
    rows = [
        ("resolve, warm (in-process index)", warm),
        ("resolve, cold (SQLite query per call)", cold),
        ("first resolve of a tag (index fill, 1,000 IoVs)", fill),
        ("local_path of a stored payload", local),
        ("verified_path (re-hash 64 KiB)", verified),
    ]
    print(f"{'measurement':<50} {'n':>8} {'p50 us':>10} {'p99 us':>10} {'mean us':>10}")
    for label, samples in rows:
        p50, p99 = percentiles(samples)
        print(f"{label:<50} {len(samples):>8} {p50:>10.1f} {p99:>10.1f} {statistics.fmean(samples) / 1000:>10.1f}")


if __name__ == "__main__":
    main()
