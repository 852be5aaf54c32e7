"""Wall time of ``conditionsdb`` commands as an operator runs them (each a fresh process).

Measures, on an SQLite store and on a live server (uvicorn on a loopback port, SQLite
behind it):

* start-up: ``--help``, ``tag list``, ``resolve`` (median of ``--repeat`` runs);
* a batch upload of a testing-payloads file (``--payloads`` files of ``--size`` bytes,
  every line a distinct payload), then the same upload again (nothing new to do);
* ``download`` of that tag into a basf2 snapshot, then again (resume: all files present),
  then ``verify`` of the snapshot.

    python benchmarks/bench_cli.py --payloads 200 --size 65536
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "conditions" / "server"))


def timed(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "conditions.cli", *args], capture_output=True, text=True,
                            env=env, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"conditionsdb {' '.join(args)} failed: {result.stderr}")
    return elapsed


def median(args: list[str], env: dict, repeat: int) -> float:
    return statistics.median(timed(args, env) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payloads", type=int, default=200)
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()

    from conditions.store import open_store
    from conftest import start_server  # tests/conditions/server/conftest.py

    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDITIONSDB_")}
    env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(work / "config"), CONDITIONS_CACHE_DIR=str(work / "cache"))
    local = work / "localdb"
    local.mkdir()
    lines = []
    for i in range(options.payloads):
        (local / f"dbstore_Bench{i}_rev_1.root").write_bytes(os.urandom(options.size))
        lines.append(f"dbstore/Bench{i} 1 0,{i},0,{i}\n")
    (local / "database.txt").write_text("".join(lines))

    served_url = f"sqlite:///{work / 'served.db'}"
    with open_store(served_url, work / "served-payloads") as store:
        _, secret = store.create_token("bench", ["admin"])
    server = start_server(served_url, work / "served-payloads", work / "server.log")
    results: list[tuple[str, str, float]] = []
    try:
        results.append(("-", "`conditionsdb --help`", median(["--help"], env, options.repeat)))
        for kind, db in (("sqlite", str(work / "c.db")), ("server", server.url)):
            g = ["--db", db, "--token", secret]
            timed([*g, "tag", "create", "bench"], env)
            first = timed([*g, "upload", "bench", str(local / "database.txt")], env)
            again = timed([*g, "upload", "bench", str(local / "database.txt")], env)
            timed([*g, "tag", "state", "bench", "TESTING"], env)
            results.append((kind, "`tag list`", median([*g, "tag", "list"], env, options.repeat)))
            results.append((kind, "`resolve` (file already local / in the cache)",
                            median([*g, "resolve", "bench", "Bench7", "0", "7"], env, options.repeat)))
            results.append((kind, f"`upload` batch, {options.payloads} new payloads", first))
            results.append((kind, "`upload` batch again (nothing new)", again))
            snap = work / f"snap-{kind}"
            results.append((kind, f"`download` -> snapshot, {options.payloads} files",
                            timed([*g, "download", "bench", "-o", str(snap)], env)))
            results.append((kind, "`download` again (resume: all present, re-verified)",
                            timed([*g, "download", "bench", "-o", str(snap)], env)))
            results.append((kind, f"`verify` snapshot ({options.payloads} files)",
                            timed(["verify", str(snap)], env)))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}, {options.payloads} payloads x {options.size} bytes")
    print("| --db | command | wall time |")
    print("|---|---|---:|")
    for kind, what, seconds in results:
        print(f"| {kind} | {what} | {seconds:.2f} s |")


if __name__ == "__main__":
    main()
