"""Load test of the conditions REST service: resolve requests/s and latency.

For each backend (SQLite file, PostgreSQL cluster), each server worker count and each
number of concurrent clients, a real server (``python -m conditions.server``) serves a
store holding a few payload names with many IoVs, and a load generator in a second
process keeps N keep-alive HTTP connections busy with ``GET /api/v1/resolve`` for a fixed
time, at random (exp, run) points. Two kinds of tag are measured:

* ``PUBLISHED`` (reprocessing) and ``RUNNING`` (prompt processing): answers that cannot
  change, served from the server's in-process cache after the first request;
* ``TESTING``: the tag may go back to OPEN and be edited, so its answers are cached pinned
  to the tag's change serial (see conditions/server/resolve_cache.py) and served from the
  same cache while the serial is unchanged; a miss goes through FastAPI and the threadpool
  to the store (which has its own index cache).

Goal (issue 3): >= 1,000 resolves/s with p99 < 50 ms on the 2-core CI machine.

    python benchmarks/bench_server.py --duration 3         # everything, ~3 minutes
    python benchmarks/bench_server.py --duration 2 --backends sqlite --clients 1 8

The load generator shares the machine with the server: its CPU use is part of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_NAMES = 5
N_EXPS = 4
RUNS_PER_IOV = 100
IOVS_PER_EXP = 10  # -> 5 names x 40 IoVs per tag


# -- load generator (runs in its own process) ----------------------------------------------

async def _client(host: str, port: int, targets: list[bytes], stop_at: float, latencies: list[float],
                  errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rng = random.Random(id(latencies) ^ os.getpid())
    try:
        while time.perf_counter() < stop_at:
            request = rng.choice(targets)
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != b"200":
                errors.append(status.decode())
    finally:
        writer.close()


async def _load(url: str, tag: str, concurrency: int, duration: float) -> dict:
    host, port = url.split("//", 1)[1].split(":")
    rng = random.Random(1)
    targets = []
    for _ in range(2000):
        name = f"Payload{rng.randrange(N_NAMES)}"
        exp = rng.randrange(N_EXPS)
        run = rng.randrange(IOVS_PER_EXP * RUNS_PER_IOV)
        path = f"/api/v1/resolve?tag={tag}&name={name}&exp={exp}&run={run}"
        targets.append(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode())
    latencies: list[float] = []
    errors: list[str] = []
    # Warm-up: connections, first queries, caches.
    await asyncio.gather(*[_client(host, int(port), targets, time.perf_counter() + 0.5, [], [])
                           for _ in range(min(concurrency, 8))])
    start = time.perf_counter()
    stop_at = start + duration
    await asyncio.gather(*[_client(host, int(port), targets, stop_at, latencies, errors)
                           for _ in range(concurrency)])
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "errors": len(errors), "error_statuses": sorted(set(errors))}


def load_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_load(args.url, args.tag, args.concurrency, args.duration))))


# -- orchestration ------------------------------------------------------------------------

def populate(url: str, payload_dir: Path) -> None:
    from conditions.iov import IntervalOfValidity as IoV
    from conditions.store import open_store

    store = open_store(url, payload_dir)
    try:
        for tag, final in (("bench_published", "PUBLISHED"), ("bench_running", "RUNNING"),
                           ("bench_testing", "TESTING")):
            store.create_tag(tag, "load test")
            for n in range(N_NAMES):
                payload = store.add_payload(f"Payload{n}", f"payload {n} for {tag}".encode())
                for exp in range(N_EXPS):
                    for k in range(IOVS_PER_EXP):
                        first = k * RUNS_PER_IOV
                        store.add_iov(tag, payload.name, payload.revision,
                                      IoV(exp, first, exp, first + RUNS_PER_IOV - 1))
            path = {"PUBLISHED": ["TESTING", "VALIDATED", "PUBLISHED"], "RUNNING": ["RUNNING"],
                    "TESTING": ["TESTING"]}[final]
            for state in path:
                store.set_tag_state(tag, state)
    finally:
        store.close()


def start_server(url: str, payload_dir: Path, workers: int, log: Path):
    sys.path.insert(0, str(REPO / "tests" / "conditions" / "server"))
    from conftest import start_server as start  # the test suite's launcher: waits for health

    return start(url, payload_dir, log, workers=workers)


def run_load(server_url: str, tag: str, concurrency: int, duration: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--load", "--url", server_url, "--tag", tag,
                          "--concurrency", str(concurrency), "--duration", str(duration)],
                         capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def backend_urls(backends: list[str], workdir: Path):
    for backend in backends:
        if backend == "sqlite":
            yield backend, f"sqlite:///{workdir / 'bench.db'}", None
        else:
            sys.path.insert(0, str(REPO))
            from tests.conftest import _Cluster, _postgres_bindir

            bindir = _postgres_bindir()
            if bindir is None:
                print("# postgresql: server binaries not found, skipped")
                continue
            cluster = _Cluster(bindir)
            try:
                yield backend, cluster.start(), cluster
            finally:
                cluster.stop()


def main() -> None:
    if "--load" in sys.argv:
        argv = [a for a in sys.argv[1:] if a != "--load"]
        load_main(argv)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of load per configuration")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--tags", nargs="+", default=["bench_published", "bench_running", "bench_testing"])
    args = parser.parse_args()

    print(f"# machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
          f"python {sys.version.split()[0]}; {args.duration:g} s per configuration")
    # load1: the machine's 1-minute load average after each configuration (a shared
    # 2-core machine: other jobs' CPU use shows up in the latencies).
    print(f"{'backend':<10} {'tag':<16} {'workers':>7} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'load1':>5} errors")
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        workdir = Path(tmp)
        for backend, url, _cluster in backend_urls(args.backends, workdir):
            payload_dir = workdir / f"payloads-{backend}"
            populate(url, payload_dir)
            for workers in args.workers:
                server = start_server(url, payload_dir, workers, workdir / f"server-{backend}-{workers}.log")
                try:
                    for tag in args.tags:
                        for clients in args.clients:
                            r = run_load(server.url, tag, clients, args.duration)
                            print(f"{backend:<10} {tag.removeprefix('bench_'):<16} {workers:>7} {clients:>7} "
                                  f"{r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                                  f"{os.getloadavg()[0]:>5.1f} "
                                  f"{r['errors']}{' ' + ','.join(r['error_statuses']) if r['errors'] else ''}",
                                  flush=True)
                finally:
                    server.stop()
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
