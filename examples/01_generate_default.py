#!/usr/bin/env python3
"""Example 1: generate PXD background with the default checkpoint.

No server, no configuration, no network: the checkpoint registry resolves the model's
default checkpoint (global tag ``PXDBackgroundGenerator``) from the configured sources
(``PXDBG_CONDITIONS``, if set) and otherwise from the embedded default store shipped with
pxdbg. The script says which source answered, what the checkpoint is (its manifest), then
generates a few events for one run, prints the occupancy a PXD expert looks at first, and
writes a pxd-digits file that ``pxdbg overlay`` can merge into signal.

    python examples/01_generate_default.py                      # 3 convnet events
    python examples/01_generate_default.py --events 10 --model resnet -o bg.h5

The same from the command line: ``pxdbg -v generate --events 3 --model convnet -o bg.h5``.
Full-size models on a CPU take seconds per event (BENCHMARKS.md); use --threads to use
more cores.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

# Run from a source checkout without installing: use the checkout's packages.
REPO = Path(__file__).resolve().parents[1]
if (REPO / "registry" / "resolve.py").is_file() and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=3, help="events to generate (default 3)")
    parser.add_argument("--model", default="convnet", choices=["convnet", "resnet", "ieagan"],
                        help="generator model (default convnet)")
    parser.add_argument("--exp", type=int, default=0, help="experiment number (default 0)")
    parser.add_argument("--run", type=int, default=0, help="run number (default 0)")
    parser.add_argument("--seed", type=int, default=12345, help="random seed (default 12345)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("-o", "--output", type=Path, default=Path("pxd_background_default.h5"),
                        help="output pxd-digits file (default pxd_background_default.h5)")
    args = parser.parse_args(argv)
    if args.events < 1 or args.threads < 1 or args.exp < 0 or args.run < 0:
        parser.error("--events and --threads must be >= 1, --exp and --run >= 0")
    return args


def layer_occupancy(digits) -> tuple[float, float]:
    """Fraction of fired pixels in layer 1 (16 sensors) and layer 2 (24 sensors)."""
    from pxdbg.sensors import N_UCELLS, N_VCELLS, SENSOR_LAYER

    pixels = N_UCELLS * N_VCELLS
    layers = SENSOR_LAYER[digits.sensor]
    return (float(np.count_nonzero(layers == 1)) / (16 * pixels),
            float(np.count_nonzero(layers == 2)) / (24 * pixels))


def describe_checkpoint(found) -> None:
    m = found.manifest
    print("Checkpoint")
    print(f"  answered by   : {found.source}")
    print(f"  payload       : {found.payload.name} revision {found.payload.revision} "
          f"(md5 {found.payload.checksum}, verified)")
    print(f"  global tag    : {found.tag}, IoV {found.iov}")
    print(f"  local file    : {found.path}")
    print(f"  model         : {m.model}, architecture version {m.architecture_version}")
    print(f"  campaign      : {m.campaign or '-'}   training dataset: {m.training_dataset or '-'}")
    print(f"  training steps: {m.training_steps if m.training_steps is not None else '-'}")
    if m.metrics:
        print("  metrics       : " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(m.metrics.items())))
    if m.description:
        print(f"  note          : {m.description}")
    if m.training_steps == 0 or "UNTRAINED" in (m.description or ""):
        print("  WARNING: this is an UNTRAINED placeholder checkpoint. The events have a realistic")
        print("  size but no physics content; replace the embedded store with trained checkpoints.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    # Show the registry's own log: which sources it tried and why one was skipped.
    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(levelname)s %(message)s", stream=sys.stdout)

    from pxdbg.digits import DigitsWriter
    from pxdbg.models import get_model
    from pxdbg.module import PXDBackgroundGenerator
    from registry.resolve import configured_specs, get_registry, resolve_checkpoint

    print(f"pxdbg example 1: {args.events} event(s) of {args.model} background for exp {args.exp} run {args.run}")
    sources = get_registry().source_descriptions
    print("Conditions sources, in the order they are asked:")
    for i, where in enumerate(sources, 1):
        print(f"  {i}. {where}")
    if not configured_specs():
        print("  (PXDBG_CONDITIONS is not set, so the embedded default store answers)")

    t0 = time.perf_counter()
    found = resolve_checkpoint(args.model, args.exp, args.run,
                               architecture_version=get_model(args.model).ARCHITECTURE_VERSION)
    resolve_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    resolve_checkpoint(args.model, args.exp, args.run)  # what every later event of the run costs
    cached_us = (time.perf_counter() - t0) * 1e6
    print()
    describe_checkpoint(found)
    print(f"  lookup        : {resolve_ms:.1f} ms first, {cached_us:.0f} us from the in-process cache")

    # The module resolves the checkpoint itself at begin_run (from the same cache) and
    # checks its manifest against the model before the first event.
    generator = PXDBackgroundGenerator(model=args.model, seed=args.seed, nintra=args.threads)
    generator.initialize()
    generator.begin_run(args.exp, args.run)

    print()
    print(f"{'event':>5} {'digits':>8} {'occ. L1':>8} {'occ. L2':>8} {'mean ADU':>8} {'seconds':>8}")
    occupancies = []
    attrs = {"generator_model": args.model, "generator_seed": args.seed,
             "generator_campaign": "", "generator_globaltag": "PXDBackgroundGenerator"}
    with DigitsWriter(args.output, attrs=attrs) as writer:
        for evt in range(1, args.events + 1):
            t0 = time.perf_counter()
            digits = generator.event()
            seconds = time.perf_counter() - t0
            writer.append(digits, exp=args.exp, run=args.run, evt=evt)
            l1, l2 = layer_occupancy(digits)
            occupancies.append((l1, l2))
            mean_adu = float(digits.charge.mean()) if len(digits) else 0.0
            print(f"{evt:>5} {len(digits):>8} {l1:>7.3%} {l2:>7.3%} {mean_adu:>8.1f} {seconds:>8.2f}")
        writer.set_attrs(generator_checkpoints="\n".join(generator.stats.checkpoints))
    generator.terminate()

    stats = generator.stats
    l1, l2 = np.mean(occupancies, axis=0)
    print()
    print("Summary")
    print(f"  events            : {stats.events} (seed {args.seed})")
    print(f"  digits per event  : {stats.digits / stats.events:.0f}")
    print(f"  mean occupancy    : layer 1 {l1:.3%}, layer 2 {l2:.3%}")
    print(f"  time per event    : {stats.generate_seconds / stats.events:.2f} s on {args.threads} thread(s)")
    print(f"  output            : {args.output} (pxd-digits, {args.output.stat().st_size / 1e6:.1f} MB)")
    print(f"Next: pxdbg overlay --signal SIGNAL.h5 --background {args.output} -o merged.h5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
