"""Per-run checkpoint lookup cost in the registry (``registry.resolve``).

A production job calls the registry at every begin_run. Builds an SQLite store with one
campaign holding 200 checkpoints (exp 1, IoVs of 10 runs each; small safetensors files
with manifests), then times:

* cache hit: ``CheckpointRegistry.resolve`` for a run inside an IoV already resolved
  (what every further run of the same IoV costs), at random runs and in ascending order
  (entries are scanned newest first, so a job walking runs forwards hits the first one);
* module ``begin_run`` on such a run (resolver call + "same payload, no reload");
* cache miss: the first run of a new IoV (store resolve, payload hash check, manifest
  read, IoV list for the validity range);
* first lookup of the embedded default store in a fresh registry (opens the snapshot and
  MD5-verifies the full-size checkpoint file).

Run on one core, as recorded in BENCHMARKS.md:

    taskset -c 0 python benchmarks/bench_registry.py
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from conditions.cache import PayloadCache  # noqa: E402
from conditions.iov import IntervalOfValidity  # noqa: E402
from conditions.store import open_store  # noqa: E402
from registry.admin import publish_tag, upload_checkpoint  # noqa: E402
from registry.campaigns import Campaign, campaign_tag, create_campaign  # noqa: E402
from registry.checkpoint import write_checkpoint  # noqa: E402
from registry.manifest import Manifest  # noqa: E402
from registry.resolve import CheckpointRegistry  # noqa: E402

N_IOVS = 200


def build(workdir: Path) -> Path:
    db = workdir / "bench.db"
    with open_store(db) as store:
        create_campaign(store, Campaign(name="bench"))
        items = []
        for k in range(N_IOVS):
            path = workdir / f"c{k}.safetensors"
            write_checkpoint(path, {"w": torch.full((1024,), float(k))},
                             Manifest(model="convnet", architecture_version=1, campaign="bench"))
            items.append((path, IntervalOfValidity(1, 10 * k, 1, 10 * k + 9)))
        for path, iov in items:
            upload_checkpoint(store, path, model="convnet", campaign="bench", iov=iov)
        publish_tag(store, campaign_tag("bench"))
    return db


def stats_us(samples_ns: list[int]) -> str:
    samples = sorted(samples_ns)
    p50 = samples[len(samples) // 2] / 1e3
    p99 = samples[int(len(samples) * 0.99)] / 1e3
    return f"p50 {p50:9.2f} us   p99 {p99:9.2f} us   mean {statistics.fmean(samples) / 1e3:9.2f} us   (n={len(samples)})"


def main() -> None:
    torch.set_num_threads(1)
    rng = random.Random(1)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs visible, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        tmp = Path(tmp)
        db = build(tmp)
        cache = PayloadCache(tmp / "cache")
        with CheckpointRegistry([db], use_embedded=False, cache=cache) as registry:
            misses = []
            for k in range(N_IOVS):
                run = 10 * k + rng.randrange(10)
                t0 = time.perf_counter_ns()
                registry.resolve("convnet", 1, run, campaign="bench")
                misses.append(time.perf_counter_ns() - t0)
            hits = []
            for _ in range(100_000):
                run = rng.randrange(10 * N_IOVS)
                t0 = time.perf_counter_ns()
                registry.resolve("convnet", 1, run, campaign="bench")
                hits.append(time.perf_counter_ns() - t0)
            walk = []
            for run in range(10 * N_IOVS):  # production order: runs ascending
                t0 = time.perf_counter_ns()
                registry.resolve("convnet", 1, run, campaign="bench")
                walk.append(time.perf_counter_ns() - t0)
            print(f"cache miss (first run of an IoV) : {stats_us(misses)}")
            print(f"cache hit, random run of {N_IOVS} IoVs : {stats_us(hits)}")
            print(f"cache hit, runs in ascending order: {stats_us(walk)}")

            from pxdbg.module import PXDBackgroundGenerator

            module = PXDBackgroundGenerator("convnet", seed=1, resolver=registry.as_resolver(campaign="bench"))
            module.initialize()
            module._payload_key = registry.resolve("convnet", 1, 0, campaign="bench").payload_key
            module._model = torch.nn.Identity()  # skip loading weights: only the lookup is timed
            begin = []
            for run in range(1, 10):
                for _ in range(2000):
                    t0 = time.perf_counter_ns()
                    module.begin_run(1, run)
                    begin.append(time.perf_counter_ns() - t0)
            assert module.stats.loads == 0
            print(f"module begin_run, same IoV      : {stats_us(begin)}")

        firsts = []
        for _ in range(5):
            with CheckpointRegistry([], cache=cache) as registry:
                t0 = time.perf_counter_ns()
                registry.resolve("convnet", 0, 1)
                firsts.append(time.perf_counter_ns() - t0)
        print(f"embedded store, first lookup    : {stats_us(firsts)}")


if __name__ == "__main__":
    main()
