#!/usr/bin/env python
"""Seconds per training step of ``pxdbg train`` on CPU, per model, width, batch and thread
count, on a synthetic training sample.

    python benchmarks/bench_train.py                         # the default grid
    python benchmarks/bench_train.py --models ieagan --widths 0.0625 0.125 --threads 1 2
    python benchmarks/bench_train.py --models resnet --widths 1 --batch 8 --n-critic 5 --steps 1

A step is one generator update: for convnet/resnet (WGAN-GP) it includes ``n_critic``
critic updates on ``batch`` images each; for ieagan one real and one generated event (40
images each). The first step of each configuration is a warm-up and is not timed. Mind the
memory: a full-size ieagan step (``--models ieagan --widths 1``) holds 40 images of
256 x 768 through generator and discriminator with autograd and was OOM-killed at ~21 GB
resident on a 23 GB machine; width 0.125 needs ~4.4 GB. Prints a
Markdown table (for BENCHMARKS.md) with the machine's load average, which matters on a
shared machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pxdbg.datasets.synthetic import write_synthetic  # noqa: E402
from pxdbg.training.trainer import TrainConfig, Trainer  # noqa: E402


def time_config(data: Path, workdir: Path, model: str, width: float, batch: int, n_critic: int, threads: int,
                steps: int, onednn: bool | None) -> tuple[float, float, bool]:
    """(mean, min) seconds per step over ``steps`` timed steps after one warm-up step."""
    torch.set_num_threads(threads)
    cfg = TrainConfig(model=model, steps=steps + 1, width=width, batch=batch, n_critic=n_critic,
                      validate_events=0, onednn=onednn)
    run = Path(tempfile.mkdtemp(dir=workdir))
    with Trainer(cfg, data, run, progress=False) as tr:
        tr.train_step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            tr.train_step()
            times.append(time.perf_counter() - t0)
        used_onednn = bool(tr.config.onednn)
    return sum(times) / len(times), min(times), used_onednn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["convnet", "resnet", "ieagan"])
    parser.add_argument("--widths", nargs="+", type=float, default=[0.0625, 0.125])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=8, help="images per batch (convnet/resnet)")
    parser.add_argument("--n-critic", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--onednn", choices=["auto", "on", "off", "both"], default="auto")
    parser.add_argument("--events", type=int, default=16, help="events in the synthetic training sample")
    args = parser.parse_args()

    onednn_modes = {"auto": [None], "on": [True], "off": [False], "both": [True, False]}[args.onednn]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = workdir / "train.h5"
        write_synthetic(data, args.events, seed=1)
        print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"torch {torch.__version__}, load average before {os.getloadavg()[0]:.1f}")
        print("| model | width | batch | n_critic | threads | oneDNN | s/step (mean) | s/step (min) | load |")
        print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
        for model in args.models:
            for width in args.widths:
                for threads in args.threads:
                    for onednn in onednn_modes:
                        mean, best, used = time_config(data, workdir, model, width, args.batch, args.n_critic,
                                                       threads, args.steps, onednn)
                        wgan = model != "ieagan"
                        print(f"| {model} | {width:g} | {args.batch if wgan else 40} | "
                              f"{args.n_critic if wgan else '-'} | {threads} | {'on' if used else 'off'} | "
                              f"{mean:.2f} | {best:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
