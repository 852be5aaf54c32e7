"""What hostile or broken clients cost a conditions server (issue 11, items 3 and 5).

Three measurements against a real server (``python -m conditions.server``, one worker, an
SQLite store in a temp dir), each from a separate client process on loopback:

* ``body``: one chunked ``POST /api/v1/tags`` with no token and a body of ``--body-mb``
  MB sent as fast as possible. Printed: whether and when the server answered (and with
  what), the bytes it let the client send, the server's peak RSS (VmHWM) during the
  request and its RSS afterwards.
* ``slow``: ``--sockets`` connections that send a partial request line and then nothing.
  Printed: how many the server still holds after 2 s and after ``--hold`` s, and whether a
  normal request is answered meanwhile.
* ``listing``: a tag with ``--iovs`` IoVs, listed by ``--readers`` concurrent clients, as
  one answer each and in pages of 500. Printed: wall time for all readers.

    python benchmarks/bench_server_abuse.py                         # all three
    python benchmarks/bench_server_abuse.py --only body --body-mb 1500

The server runs with its default limits. To measure a checkout from before issue 11,
run this file from that checkout.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def start(workdir: Path):
    sys.path.insert(0, str(REPO / "tests" / "conditions" / "server"))
    from conftest import start_server  # the test suite's launcher: waits for health

    from conditions.store import open_store

    url = f"sqlite:///{workdir / 'c.db'}"
    with open_store(url, workdir / "payloads") as store:
        _, secret = store.create_token("bench", ["admin"])
    return start_server(url, workdir / "payloads", workdir / "server.log"), url, secret


def bench_body(server, megabytes: int) -> None:
    pid = server.process.pid
    before, _ = rss_kib(pid)
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /api/v1/tags HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"[" * (1 << 20))
    answer = bytearray()

    def reader():
        sock.settimeout(None)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                answer.extend(data)
        except OSError:
            return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    peak = 0
    sent = 0
    started = time.perf_counter()
    answered_at = None
    try:
        for _ in range(megabytes):
            sock.sendall(chunk)
            sent += 1
            if answer and answered_at is None:
                answered_at = time.perf_counter() - started
            if sent % 64 == 0:
                peak = max(peak, rss_kib(pid)[1])
        sock.sendall(b"0\r\n\r\n")
    except OSError as error:
        stopped = f"client stopped by the server after {sent} MB ({type(error).__name__})"
    else:
        stopped = f"client sent all {sent} MB"
    thread.join(timeout=60)
    if answered_at is None and answer:
        answered_at = time.perf_counter() - started
    sock.close()
    time.sleep(1.0)
    after, hwm = rss_kib(pid)
    status = bytes(answer[:12]).decode(errors="replace").strip() or "(no answer)"
    print(f"body: {megabytes} MB chunked POST without token: answer {status!r} after "
          f"{answered_at if answered_at is not None else float('nan'):.2f} s; {stopped}; "
          f"server RSS {before / 1024:.0f} MB before, peak {max(peak, hwm) / 1024:.0f} MB, "
          f"{after / 1024:.0f} MB 1 s after")


def bench_slow(server, sockets: int, hold: float) -> None:
    import requests

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, sockets + 256)), hard))
    port = int(server.url.rsplit(":", 1)[1])
    held = []
    for _ in range(sockets):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(s)

    def open_count() -> int:
        alive = 0
        for s in held:
            s.setblocking(False)
            try:
                data = s.recv(65536)
                alive += 0 if data == b"" or data.startswith(b"HTTP/1.1 408") else 1
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    t0 = time.perf_counter()
    normal = requests.get(server.url + "/api/v1/health", timeout=30)
    latency = time.perf_counter() - t0
    time.sleep(max(0.0, 2.0 - (time.perf_counter() - t0)))
    at_2 = open_count()
    time.sleep(max(0.0, hold - (time.perf_counter() - t0)))
    at_hold = open_count()
    for s in held:
        s.close()
    print(f"slow: {sockets} sockets with partial headers: {at_2} still held after 2 s, {at_hold} after "
          f"{hold:g} s; a normal request meanwhile: HTTP {normal.status_code} in {latency * 1000:.0f} ms")


def bench_listing(server, secret: str, iovs: int, readers: int) -> None:
    import requests

    from conditions.client import ConditionsClient
    from conditions.iov import IntervalOfValidity as IoV

    client = ConditionsClient(server.url, token=secret)
    client.create_tag("big")
    payload = client.add_payload("Big", b"big")
    # Many IoVs in one go through the store API of the server's database would be faster;
    # through the API it is what an administrator does.
    for run in range(iovs):
        client.add_iov("big", "Big", payload.revision, IoV(1, run, 1, run))
    client.set_tag_state("big", "RUNNING")

    def whole(_):
        answer = requests.get(server.url + "/api/v1/tags/big/iovs", timeout=300)
        return len(answer.json())

    def paged(_):
        url, total = server.url + "/api/v1/tags/big/iovs?limit=500", 0
        while url:
            answer = requests.get(url, timeout=300)
            total += len(answer.json())
            nxt = answer.links.get("next", {}).get("url")
            url = server.url + nxt if nxt else None
        return total

    for label, fetch in (("one answer", whole), ("pages of 500", paged)):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(readers) as pool:
            counts = list(pool.map(fetch, range(readers)))
        assert set(counts) == {iovs}, counts
        print(f"listing: {readers} concurrent readers of a {iovs}-IoV tag, {label}: "
              f"{time.perf_counter() - t0:.1f} s for all")
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["body", "slow", "listing"], action="append")
    parser.add_argument("--body-mb", type=int, default=1500)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=15.0)
    parser.add_argument("--iovs", type=int, default=3000)
    parser.add_argument("--readers", type=int, default=200)
    args = parser.parse_args()
    parts = args.only or ["body", "slow", "listing"]
    print(f"# machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; checkout {REPO}")
    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp:
        for part in parts:
            workdir = Path(tmp) / part
            workdir.mkdir()
            server, _url, secret = start(workdir)
            try:
                if part == "body":
                    bench_body(server, args.body_mb)
                elif part == "slow":
                    bench_slow(server, args.sockets, args.hold)
                else:
                    bench_listing(server, secret, args.iovs, args.readers)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
