#!/usr/bin/env python3
"""Example 2: a production-style job over a run list that spans two campaigns.

A Monte Carlo production job is given a list of runs. For every run the checkpoint
registry resolves the generator checkpoint valid for that (exp, run) in the job's
campaigns, and the generator module switches weights only when a run needs another
payload (another IoV); runs inside one IoV reuse the loaded model.

Without ``--db`` the script first builds a small DEMO conditions store in ``--workdir``:

    campaign demo-early  exp 1 runs 0-9      -> checkpoint A  (about 0.5% occupancy)
                         exp 1 runs 10-end   -> checkpoint B  (about 1% occupancy)
    campaign demo-late   exp 2 (all runs)    -> checkpoint C  (about 2% occupancy)

The demo checkpoints are UNTRAINED, narrow (``--width``, default 1/16 of the channels)
models made with ``pxdbg.placeholders.untrained_checkpoint``: cheap to run, with
different occupancies so that each switch shows in the output. They are not physics.
With ``--db`` (a store path, ``sqlite:///``, ``postgresql://``, ``http://server`` or a
basf2 snapshot directory) and ``--campaign`` the same job runs on real campaigns.

    python examples/02_production_run_list.py                        # demo store, 6 runs
    python examples/02_production_run_list.py --events 5 --runs 1:5-12,2:1-3
    python examples/02_production_run_list.py --db http://conditions:8080 \\
        --campaign early2024 --campaign late2024 --runs 26:100-120 --events 100

The CLI equivalent for one campaign: ``pxdbg generate --campaign C --runs 1:8-11 --events 2``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

#: The demo campaigns: (name, description, beam conditions, luminosity, [(IoV, seed, target
#: occupancy)]). Untrained narrow networks vary a lot from seed to seed; these seeds give
#: occupancies close to their targets.
DEMO_CAMPAIGNS = [
    ("demo-early", "DEMO campaign: early running conditions (invented numbers)",
     {"her_current_mA": 800, "ler_current_mA": 1000, "injection": "continuous",
      "background_sources": ["Touschek", "Coulomb", "RBB", "twoPhoton"]}, 2.6e34,
     [((1, 0, 1, 9), 0, 0.005), ((1, 10, 1, -1), 2, 0.010)]),
    ("demo-late", "DEMO campaign: high-current running conditions (invented numbers)",
     {"her_current_mA": 1200, "ler_current_mA": 1600, "injection": "continuous",
      "background_sources": ["Touschek", "Coulomb", "RBB", "twoPhoton", "injection"]}, 4.7e34,
     [((2, 0, 2, -1), 3, 0.020)]),
]

# Run from a source checkout without installing: use the checkout's packages.
REPO = Path(__file__).resolve().parents[1]
if (REPO / "registry" / "resolve.py").is_file() and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=2, help="events per run (default 2)")
    parser.add_argument("--runs", default="1:8-11,2:1-2",
                        help="run list EXP:RUN or EXP:FIRST-LAST, comma-separated (default 1:8-11,2:1-2)")
    parser.add_argument("--model", default="convnet", choices=["convnet", "resnet"],
                        help="generator model (default convnet)")
    parser.add_argument("--db", help="conditions source with real campaigns (default: build the demo store)")
    parser.add_argument("--campaign", action="append", default=[],
                        help="campaign, repeatable, highest priority first (default: the demo campaigns)")
    parser.add_argument("--width", type=float, default=1 / 16,
                        help="channel width of the demo checkpoints (default 0.0625)")
    parser.add_argument("--workdir", type=Path, default=Path("pxdbg_example_02"),
                        help="where the demo store goes (default ./pxdbg_example_02)")
    parser.add_argument("--seed", type=int, default=2026, help="random seed of the job (default 2026)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("-o", "--output", type=Path, help="pxd-digits output (default WORKDIR/background.h5)")
    args = parser.parse_args(argv)
    if args.events < 1 or args.threads < 1 or not 0 < args.width <= 1:
        parser.error("--events and --threads must be >= 1, and 0 < --width <= 1")
    if args.db and not args.campaign:
        parser.error("--db needs at least one --campaign")
    return args


def build_demo_store(workdir: Path, model: str, width: float) -> Path:
    """An SQLite conditions store holding the two demo campaigns with published tags."""
    from conditions.iov import IntervalOfValidity
    from conditions.store import open_store
    from pxdbg.placeholders import untrained_checkpoint
    from pxdbg.models import get_model
    from registry.admin import publish_tag, upload_checkpoint
    from registry.campaigns import Campaign, create_campaign

    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "demo_conditions.db"
    if db.exists():
        db.unlink()  # rebuilt from scratch, so a changed --width or --model takes effect
    version = get_model(model).ARCHITECTURE_VERSION
    print(f"Building the demo conditions store {db}")
    with open_store(db) as store:
        for name, description, beam, luminosity, checkpoints in DEMO_CAMPAIGNS:
            create_campaign(store, Campaign(name=name, description=description, beam_conditions=beam,
                                            luminosity=luminosity, simulation_release="demo (none)",
                                            training_dataset="demo: untrained, no training sample"))
            for iov, seed, occupancy in checkpoints:
                t0 = time.perf_counter()
                file = untrained_checkpoint(
                    model, workdir / f"demo_{name}_{seed}.safetensors", seed=seed, occupancy=occupancy,
                    config={"width": width}, campaign=name, training_dataset="none (demo)",
                    description=f"DEMO checkpoint for examples/02: UNTRAINED {model} at width {width:g}, "
                                f"{occupancy:.1%} occupancy; not a physics model")
                result = upload_checkpoint(store, file, model=model, campaign=name,
                                           iov=IntervalOfValidity(*iov), architecture_version=version)
                print(f"  {name:11s} {result.payload.name} r{result.payload.revision}  IoV {result.iov.iov}  "
                      f"(demo, target occupancy {occupancy:.1%}, made in {time.perf_counter() - t0:.1f} s)")
            publish_tag(store, result.tag)
    return db


def parse_runs(text: str) -> list[tuple[int, int]]:
    from pxdbg.cli.generate import parse_run_spec

    return parse_run_spec(text)


def occupancy(events) -> tuple[float, float]:
    """Mean fraction of fired pixels in layer 1 (16 sensors) and layer 2 (24 sensors)."""
    from pxdbg.sensors import N_UCELLS, N_VCELLS, SENSOR_LAYER

    pixels = N_UCELLS * N_VCELLS
    l1 = [np.count_nonzero(SENSOR_LAYER[d.sensor] == 1) / (16 * pixels) for d in events]
    l2 = [np.count_nonzero(SENSOR_LAYER[d.sensor] == 2) / (24 * pixels) for d in events]
    return float(np.mean(l1)), float(np.mean(l2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(levelname)s %(message)s", stream=sys.stdout)

    from conditions.api import open_source
    from pxdbg.digits import DigitsWriter
    from pxdbg.module import PXDBackgroundGenerator
    from registry.campaigns import get_campaign
    from registry.resolve import CheckpointRegistry

    runs = parse_runs(args.runs)
    if args.db:
        source, campaigns = args.db, args.campaign
    else:
        source = str(build_demo_store(args.workdir, args.model, args.width))
        # Highest priority first. The demo campaigns' IoVs do not overlap, so the order
        # only matters where they would (there the first campaign wins).
        campaigns = args.campaign or [name for name, *_ in reversed(DEMO_CAMPAIGNS)]
    output = args.output or (args.workdir / "background.h5")
    output.parent.mkdir(parents=True, exist_ok=True)

    # One registry for the whole job: every run after the first in an IoV is a cache hit.
    registry = CheckpointRegistry([source])
    print()
    print(f"Job: {len(runs)} run(s) x {args.events} event(s), model {args.model}, seed {args.seed}")
    print(f"  conditions: {' -> '.join(registry.source_descriptions)}")
    with open_source(source) as records:
        described = [get_campaign(records, name) for name in campaigns]
    for name, record in zip(campaigns, described):
        beam = ", ".join(f"{k}={v}" for k, v in sorted(record.beam_conditions.items()) if k != "background_sources")
        lumi = f", L={record.luminosity:.2g}/cm2/s" if record.luminosity else ""
        print(f"  campaign {name}: {record.description}")
        print(f"      {beam}{lumi}; trained on: {record.training_dataset or '-'}")

    # The plan: which checkpoint each run gets. Resolution is microseconds per run once
    # an IoV is known, so a job can print this before generating anything.
    print()
    print("Checkpoint plan")
    print(f"  {'exp':>4} {'run':>5}  {'campaign':11s} {'payload':34s} {'IoV':14s}")
    plan = []
    for exp, run in runs:
        found = registry.resolve(args.model, exp, run, campaign=campaigns)
        plan.append(found)
        payload = f"{found.payload.name} r{found.payload.revision}"
        print(f"  {exp:>4} {run:>5}  {found.manifest.campaign or '-':11s} {payload:34s} {str(found.iov):14s}")

    generator = PXDBackgroundGenerator(model=args.model, seed=args.seed, nintra=args.threads,
                                       resolver=registry.as_resolver(campaign=campaigns))
    generator.initialize()
    print()
    print("Generation")
    print(f"  {'exp':>4} {'run':>5}  {'checkpoint':24s} {'events':>6} {'digits/evt':>10} "
          f"{'occ. L1':>8} {'occ. L2':>8} {'s/evt':>6}")
    events_per_campaign: Counter[str] = Counter()
    attrs = {"generator_model": args.model, "generator_seed": args.seed,
             "generator_campaign": ",".join(campaigns), "generator_globaltag": ""}
    with DigitsWriter(output, attrs=attrs) as writer:
        for (exp, run), found in zip(runs, plan):
            loads = generator.stats.loads
            generator.begin_run(exp, run)
            action = "loaded" if generator.stats.loads > loads else "same"
            t0 = time.perf_counter()
            events = generator.events(args.events)
            seconds = (time.perf_counter() - t0) / args.events
            writer.append_many(events, exp=[exp] * len(events), run=[run] * len(events),
                               evt=range(1, len(events) + 1))
            l1, l2 = occupancy(events)
            digits = np.mean([len(d) for d in events])
            label = f"r{found.payload.revision} {action}"
            print(f"  {exp:>4} {run:>5}  {label:24s} {len(events):>6} {digits:>10.0f} "
                  f"{l1:>7.2%} {l2:>7.2%} {seconds:>6.2f}")
            events_per_campaign[generator.manifest.campaign or "-"] += len(events)
        writer.set_attrs(generator_checkpoints="\n".join(generator.stats.checkpoints),
                         generator_loads=generator.stats.loads)
    generator.terminate()
    registry.close()

    stats = generator.stats
    distinct = len({found.payload.key for found in plan})
    print()
    print("Summary")
    print(f"  runs: {len(runs)}, events: {stats.events}, checkpoints: {distinct} distinct, "
          f"{stats.loads} load(s) (a load only where a run needs another payload)")
    print("  events per campaign: " + ", ".join(f"{c} {n}" for c, n in sorted(events_per_campaign.items())))
    print(f"  output: {output} (pxd-digits with exp/run/evt of every event)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
