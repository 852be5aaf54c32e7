"""Latency of the web pages for a large global tag (10,000 IoVs), from a warm server.

A real server (``python -m conditions.server``, one worker) serves a SQLite store holding
two 10,000-IoV tags of different shapes:

* ``wide``: 20 payload names x 5 experiments x 100 IoVs, every tenth IoV overridden by a
  higher revision (the timeline of one experiment has 20 rows of ~110 segments);
* ``deep``: one payload name with 10,000 one-run IoVs in one experiment (one timeline row
  of 10,000 segments, drawn merged to a few hundred marks).

For each page the first request (cold: the server reads the tag's IoVs) is timed, then
``--repeat`` requests on one keep-alive connection (warm: the IoVs are cached by the tag's
change serial). The goal (issue 15): a 10,000-IoV tag page served in under 200 ms warm.

    python benchmarks/bench_ui.py                  # about a minute
    python benchmarks/bench_ui.py --repeat 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conditions.iov import IntervalOfValidity as IoV  # noqa: E402
from conditions.store import open_store  # noqa: E402
from tests.conditions.server.conftest import start_server  # noqa: E402


def build(url: str, payloads: Path) -> None:
    store = open_store(url, payloads)
    try:
        store.create_tag("wide", "20 payload names x 5 experiments x 100 IoVs")
        items = []
        for n in range(20):
            name = f"Calibration{n:02d}"
            for revision in range(1, 4):
                store.add_payload(name, f"{name} {revision}".encode())
            for exp in range(5):
                for i in range(100):
                    if i % 10 == 9:  # an override of the previous IoVs by a higher revision
                        items.append((name, 3, IoV(exp, (i - 2) * 10, exp, i * 10 + 9)))
                    else:
                        items.append((name, 1 + (i % 2), IoV(exp, i * 10, exp, i * 10 + 9)))
        store.add_iovs("wide", items)
        store.create_tag("deep", "one payload name, 10,000 one-run IoVs")
        for revision in range(1, 6):
            store.add_payload("RunByRun", f"run by run {revision}".encode())
        store.add_iovs("deep", [("RunByRun", 1 + run % 5, IoV(0, run, 0, run)) for run in range(10_000)])
        assert len(store.iovs("wide")) == 10_000 and len(store.iovs("deep")) == 10_000
    finally:
        store.close()


def measure(session: requests.Session, url: str, repeat: int) -> dict:
    start = time.perf_counter()
    first = session.get(url, timeout=60)
    cold = time.perf_counter() - start
    first.raise_for_status()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = session.get(url, timeout=60)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
    times.sort()
    return {"cold": cold, "p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))],
            "max": times[-1], "bytes": len(first.content)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50, help="warm requests per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        tmp = Path(tmp)
        url = f"sqlite:///{tmp / 'conditions.db'}"
        start = time.perf_counter()
        build(url, tmp / "payloads")
        print(f"built two 10,000-IoV tags in {time.perf_counter() - start:.1f} s")
        server = start_server(url, tmp / "payloads", tmp / "server.log")
        pages = [
            ("/ui/tags", "tag list"),
            ("/ui/tags/wide", "wide: tag page (exp 0, IoV page 1)"),
            ("/ui/tags/wide?exp=3&run=455", "wide: exp 3, winners at run 455"),
            ("/ui/tags/wide?exp=0&page=100", "wide: IoV page 100 of 100"),
            ("/api/v1/browse/tags/wide?exp=0", "wide: JSON twin"),
            ("/ui/tags/deep", "deep: tag page (10,000 segments)"),
            ("/ui/tags/deep?exp=0&run=5000", "deep: winners at run 5000"),
            ("/api/v1/browse/tags/deep", "deep: JSON twin"),
        ]
        try:
            with requests.Session() as session:
                print(f"{'page':42s} {'cold ms':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s} {'kB':>7s}")
                for path, label in pages:
                    m = measure(session, server.url + path, args.repeat)
                    print(f"{label:42s} {m['cold'] * 1e3:8.1f} {m['p50'] * 1e3:8.1f} {m['p95'] * 1e3:8.1f} "
                          f"{m['max'] * 1e3:8.1f} {m['bytes'] / 1e3:7.1f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
