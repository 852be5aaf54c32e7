#!/usr/bin/env python
"""Throughput of the data side of pxdbg on one core: the synthetic sample generator (goal
of issue 7: at least 50 events/s), writing and streaming pxd-digits files, conversion of
digits to dense (40, 250, 768) events for training, and the validation summary.

    taskset -c 0 python benchmarks/bench_datasets.py            # 400 events
    python benchmarks/bench_datasets.py --events 2000 --reps 5

Each figure is the best (least disturbed) of ``--reps`` passes and the median, in events
per second; the machine's load average is printed because the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pxdbg.datasets import SyntheticBackground, iter_dense_events, write_synthetic  # noqa: E402
from pxdbg.digits import DigitsReader, DigitsWriter  # noqa: E402
from pxdbg.validation import summarize_file  # noqa: E402


def timed(work, reps: int) -> list[float]:
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n = args.events

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"affinity {len(os.sched_getaffinity(0))} core(s), load average {os.getloadavg()[0]:.1f}, "
          f"python {platform.python_version()}, numpy {np.__version__}; {n} events, best/median of {args.reps}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pxdbg-bench-") as tmp:
        sample = Path(tmp) / "synthetic.h5"
        generator = SyntheticBackground(seed=1)
        rows.append(("synthetic events in memory", timed(lambda: generator.generate(n), args.reps)))
        rows.append(("synthetic events written to a file",
                     timed(lambda: write_synthetic(sample, n, seed=1), args.reps)))
        with DigitsReader(sample) as reader:
            digits_per_event = reader.offsets[-1] / reader.n_events
            events = list(reader.iter_events())

        def stream():
            with DigitsReader(sample) as reader:
                for _ in reader.iter_events():
                    pass

        def rewrite():
            with DigitsWriter(Path(tmp) / "copy.h5") as writer:
                writer.append_many(events, exp=[0] * n, run=[0] * n)

        rows.append(("pxd-digits file streamed (DigitsReader.iter_events)", timed(stream, args.reps)))
        rows.append(("pxd-digits file written (DigitsWriter.append_many)", timed(rewrite, args.reps)))
        rows.append(("digits -> dense batches of 8 (training input)",
                     timed(lambda: sum(1 for _ in iter_dense_events(sample, batch=8)), args.reps)))
        rows.append(("validation summary of a file (summarize_file)",
                     timed(lambda: summarize_file(sample), args.reps)))

    print(f"# mean digits per event: {digits_per_event:.0f} "
          f"(occupancy {digits_per_event / (40 * 250 * 768):.3%})\n")
    print("| stage | events/s (best) | events/s (median) |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {n / min(seconds):,.0f} | {n / statistics.median(seconds):,.0f} |")


if __name__ == "__main__":
    main()
