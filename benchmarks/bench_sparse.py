#!/usr/bin/env python
"""The sparse model against its goals: fidelity (against the statistical floor, on every
synthetic preset), speed (end to end into a pxd-digits file, beside the basf2-equivalent
resnet in the same run), training time and memory.

    taskset -c 0 python benchmarks/bench_sparse.py                  # everything, 3 repetitions
    python benchmarks/bench_sparse.py --only fidelity --presets nominal quiet --reps 5
    python benchmarks/bench_sparse.py --only speed --events 2000 --resnet-events 1
    python benchmarks/bench_sparse.py --only fidelity --gans 20     # + the embedded GAN defaults

**Fidelity.** For each preset and repetition r: a training sample (``--train`` events, 600),
a reference and a floor sample (``--compare`` events each, 200), all from the preset with
fresh seeds; the model is fitted on the training sample and ``--compare`` events are
generated. Each ``pxdbg validate`` scalar is computed for generated-vs-reference and for
floor-vs-reference, the floor being the mean over ``--floors`` (3) independent floor samples. The table shows, per scalar, the mean over repetitions of both and the
ratio of the means (the goal: at most 1.5), and the largest single-repetition ratio. The
floor of one pair of 200-event samples is itself noisy (on the injection preset it varies
by 3x between pairs; on the quiet preset the charge W1 of 200-event pairs has a standard
deviation of 28% of its mean), which is why floors and repetitions are averaged.

**GAN defaults** (``--gans N``): the embedded convnet and resnet checkpoints generate N
events on the nominal preset, compared with N-event reference and floor samples (the GANs
cost seconds per event, so N is small and their floors larger).

**Speed.** The generator module with the sparse checkpoint (one thread, batches of 64)
writes ``--events`` events to a pxd-digits file; the time per event includes the file
writing. In the same run the basf2-equivalent resnet (random full-size weights, NCHW,
``torch.no_grad``, one event per forward, one thread, as basf2 runs it) makes
``--resnet-events`` events; the ratio of the two is the speed-up. **Memory**: the peak
resident set of a separate process that loads the checkpoint and generates 1000 events.
**Training**: the fit time of each fidelity repetition (one core when run under taskset).
Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pxdbg.datasets.synthetic import PRESETS, SyntheticBackground, preset, write_synthetic  # noqa: E402
from pxdbg.training.sparse import fit_sparse  # noqa: E402
from pxdbg.validation.metrics import SummaryAccumulator, compare, summarize  # noqa: E402

#: The scalars the issue sets the 1.5x-floor goal on, then the rest of `pxdbg validate`.
GOAL_SCALARS = ("occupancy_mean_abs_relative_error", "charge_ks", "cluster_size_w1", "cluster_charge_w1",
                "spearman_mean_abs_difference", "frechet_distance")
SHORT = {"occupancy_mean_abs_relative_error": "occ. |rel|", "occupancy_w1_mean": "occ. W1",
         "charge_w1": "charge W1", "charge_ks": "charge KS", "cluster_size_w1": "size W1",
         "cluster_charge_w1": "cl.charge W1", "cluster_extent_u_w1": "ext.u W1", "cluster_extent_v_w1": "ext.v W1",
         "hit_u_ks": "u KS", "hit_v_ks": "v KS", "spearman_mean_abs_difference": "Spearman",
         "frechet_distance": "Frechet"}


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, load {load[0]:.1f}/{load[1]:.1f}")


def summarize_generated(model, n: int, key: tuple[int, ...]):
    acc = SummaryAccumulator()
    for b0 in range(0, n, 64):
        offsets, digits = model.generate([key + (i,) for i in range(b0, min(n, b0 + 64))])
        acc.add_block(offsets, digits.pixel_key, digits.charge)
    return acc.summary()


def fidelity(presets: list[str], reps: int, n_train: int, n_compare: int, workdir: Path, floors: int = 3) -> dict:
    results = {}
    for name in presets:
        rows, fits = [], []
        for r in range(reps):
            base = 7919 * (r + 1)
            train = write_synthetic(workdir / f"{name}-train-{r}.h5", n_train, seed=base, campaign=name)
            ref = summarize(SyntheticBackground(preset(name), seed=base + 1).generate(n_compare))
            flo = [summarize(SyntheticBackground(preset(name), seed=base + 100 + j).generate(n_compare))
                   for j in range(floors)]
            t0 = time.perf_counter()
            model = fit_sparse([train], seed=r)
            fits.append(time.perf_counter() - t0)
            gen = summarize_generated(model, n_compare, (base + 3,))
            report = compare(gen, ref, flo)
            rows.append((report.scalars(), report.floor_scalars))
            train.unlink()
        keys = list(rows[0][0])
        value = {k: float(np.mean([row[0][k] for row in rows])) for k in keys}
        floor = {k: float(np.mean([row[1][k] for row in rows])) for k in keys}
        worst = {k: float(max(row[0][k] / row[1][k] for row in rows)) for k in keys}
        results[name] = {"value": value, "floor": floor, "ratio": {k: value[k] / floor[k] for k in keys},
                         "worst_ratio": worst, "fit_seconds": fits}
        print(f"  {name}: fitted in {np.mean(fits):.1f} s (mean of {reps}); ratios "
              + ", ".join(f"{SHORT[k]} {value[k] / floor[k]:.2f}" for k in GOAL_SCALARS), file=sys.stderr)
    return results


def gan_fidelity(n: int, workdir: Path) -> dict:
    """The embedded GAN defaults on the nominal preset (n events each)."""
    import torch

    from pxdbg.module import PXDBackgroundGenerator

    ref = summarize(SyntheticBackground(preset("nominal"), seed=501).generate(n))
    flo = summarize(SyntheticBackground(preset("nominal"), seed=502).generate(n))
    out = {}
    for model in ("convnet", "resnet"):
        torch.set_num_threads(1)
        gen = PXDBackgroundGenerator(model=model, seed=11)
        gen.initialize()
        gen.begin_run(0, 0)
        t0 = time.perf_counter()
        events = [gen.event() for _ in range(n)]  # one at a time, as basf2 (a batch of 20 needs GBs)
        seconds = (time.perf_counter() - t0) / n
        report = compare(summarize(events), ref, flo)
        out[model] = {"value": report.scalars(), "floor": report.floor_scalars, "ratio": report.floor_ratios(),
                      "seconds_per_event": seconds, "events": n}
        print(f"  {model}: {seconds:.1f} s/event", file=sys.stderr)
    return out


def speed(events: int, resnet_events: int, workdir: Path, checkpoint: Path) -> dict:
    import torch

    from pxdbg.digits import DigitsWriter, dense_to_digits
    from pxdbg.models import get_model
    from pxdbg.module import PXDBackgroundGenerator

    torch.set_num_threads(1)
    gen = PXDBackgroundGenerator(model="sparse", checkpoint=checkpoint, seed=3)
    gen.initialize()
    gen.events(64)  # warm-up: first-touch of the library pages
    out = workdir / "speed.h5"
    t0 = time.perf_counter()
    with DigitsWriter(out) as writer:
        done = 0
        while done < events:
            k = min(64, events - done)
            writer.append_many(gen.events(k), exp=[0] * k, run=[0] * k, evt=range(done + 1, done + k + 1))
            done += k
    sparse_s = (time.perf_counter() - t0) / events
    digits = gen.stats.digits / gen.stats.events
    out.unlink()

    resnet_s = math.nan
    if resnet_events:
        module = get_model("resnet")
        model = module.Model().eval()  # random full-size weights: speed does not depend on their values
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            module.generate(model, generator, 1)  # warm-up
            t0 = time.perf_counter()
            for _ in range(resnet_events):
                dense = module.generate(model, generator, 1)
                dense_to_digits(dense[0].numpy())
            resnet_s = (time.perf_counter() - t0) / resnet_events
    return {"sparse_seconds_per_event": sparse_s, "sparse_digits_per_event": digits, "events": events,
            "resnet_seconds_per_event": resnet_s, "resnet_events": resnet_events,
            "speedup": resnet_s / sparse_s if resnet_events else math.nan}


def peak_memory(checkpoint: Path) -> float:
    """Peak RSS (MB) of a fresh process that loads the checkpoint and generates 1000 events.

    Read from VmHWM, which starts afresh at exec; ru_maxrss would include the (large)
    benchmark process the child was forked from."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from pxdbg.models import sparse\n"
            "m = sparse.load(%r)\n"
            "for b in range(0, 1000, 64): m.generate([(1, i) for i in range(b, min(1000, b + 64))])\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])\n") % (
        str(Path(__file__).resolve().parents[1]), str(checkpoint))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["fidelity", "speed"], default=None)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--compare", type=int, default=200)
    parser.add_argument("--floors", type=int, default=3, help="floor samples per repetition (their mean is the floor)")
    parser.add_argument("--gans", type=int, default=0, help="also validate the embedded GAN defaults on N events")
    parser.add_argument("--events", type=int, default=2000, help="sparse events in the speed test")
    parser.add_argument("--resnet-events", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    args = parser.parse_args(argv)

    report: dict = {"machine": machine(), "command": " ".join(sys.argv)}
    print(f"machine: {report['machine']}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-sparse-") as tmp:
        work = Path(tmp)
        if args.only in (None, "fidelity"):
            report["fidelity"] = fidelity(args.presets, args.reps, args.train, args.compare, work, args.floors)
            if args.json:  # keep what is measured even if a later part fails
                args.json.write_text(json.dumps(report, indent=2))
            if args.gans:
                report["gans"] = gan_fidelity(args.gans, work)
        if args.only in (None, "speed"):
            from pxdbg.models import sparse as sparse_model
            from registry.manifest import Manifest

            train = write_synthetic(work / "speed-train.h5", args.train, seed=1, campaign="nominal")
            t0 = time.perf_counter()
            model = fit_sparse([train])
            fit_s = time.perf_counter() - t0
            ckpt = sparse_model.save(model, work / "sparse.safetensors",
                                     Manifest(model="sparse", architecture_version=sparse_model.ARCHITECTURE_VERSION))
            report["speed"] = speed(args.events, args.resnet_events, work, ckpt)
            report["speed"]["fit_seconds"] = fit_s
            report["speed"]["checkpoint_mb"] = ckpt.stat().st_size / 1e6
            report["speed"]["peak_rss_mb"] = peak_memory(ckpt)
        report["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print_tables(report, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def print_tables(report: dict, args) -> None:
    print(f"\nMachine: {report['machine']}  \nCommand: `{report['command']}`\n")
    if "fidelity" in report:
        keys = list(next(iter(report["fidelity"].values()))["value"])
        print(f"Ratio to the floor (mean over {args.reps} repetitions of {args.train} training / {args.compare} "
              f"compared events; goal <= 1.5 on the first six; largest single repetition in brackets):\n")
        print("| preset | " + " | ".join(SHORT[k] for k in keys) + " | fit s |")
        print("|---|" + "---|" * (len(keys) + 1))
        for name, res in report["fidelity"].items():
            cells = [f"{res['ratio'][k]:.2f} ({res['worst_ratio'][k]:.2f})" for k in keys]
            print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(res['fit_seconds']):.1f} |")
        for name, res in report.get("gans", {}).items():
            cells = [f"{res['ratio'][k]:.2f}" for k in keys]
            print(f"| {name} default, nominal ({res['events']} ev.) | " + " | ".join(cells) + " | - |")
    if "speed" in report:
        s = report["speed"]
        print(f"\n| sparse ms/event (into a file, 1 thread) | digits/event | resnet basf2-equivalent s/event | "
              f"speed-up | fit s (600 events) | checkpoint MB | peak RSS MB (1000 events) |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {s['sparse_seconds_per_event'] * 1e3:.2f} | {s['sparse_digits_per_event']:.0f} | "
              f"{s['resnet_seconds_per_event']:.2f} | {s['speedup']:.0f}x | {s['fit_seconds']:.1f} | "
              f"{s['checkpoint_mb']:.1f} | {s['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
