"""``pxdbg dataset``: make pxd-digits samples (synthetic stand-in, basf2 ROOT import) and
describe them."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..datasets.synthetic import PRESETS
from .beam import conditions_options
from .generate import handle_errors


@click.group("dataset")
def dataset() -> None:
    """Create and inspect pxd-digits background samples."""


@dataset.command("synth")
@click.option("-n", "--events", "n_events", required=True, type=click.IntRange(min=1), help="Number of events.")
@click.option("-s", "--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same file).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="pxd-digits file to write.")
@click.option("--exp", default=0, show_default=True, type=int, help="Experiment number of the events.")
@click.option("--run", default=0, show_default=True, type=int, help="Run number of the events.")
@click.option("--campaign", default="nominal", show_default=True,
              type=click.Choice(list(PRESETS)),
              help="Preset of beam conditions; they differ in kind, not only in scale (see pxdbg.datasets.synthetic).")
@click.option("--luminosity", type=click.FloatRange(min=0), default=None,
              help="Scale of the luminosity term (= luminosity in 1e34 cm^-2 s^-1) [the preset's].")
@click.option("--beam-loss", type=click.FloatRange(min=0), default=None,
              help="Scale of the beam-loss term (both currents times its square root) [the preset's].")
@click.option("--injection-fraction", type=click.FloatRange(0, 1), default=None,
              help="Fraction of frames in injection bursts [the preset's].")
@click.option("--conditions", "conditions_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, metavar="FILE.json",
              help="Beam conditions as a BeamConditions record, mapped onto the synthetic terms (instead of "
                   "--luminosity/--beam-loss/--injection-fraction).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@handle_errors
def synth(n_events: int, seed: int, output: Path, exp: int, run: int, campaign: str, luminosity: float | None,
          beam_loss: float | None, injection_fraction: float | None, conditions_file: Path | None,
          progress: bool) -> None:
    """Write a synthetic PXD background sample (a stand-in for demos and tests, not physics).

    Presets: nominal; high-lumi (the smooth luminosity term dominates); injection (a quarter
    of the frames in injection bursts); beam-loss (many long grazing tracks); quiet. The beam
    conditions (the preset's, or those given) label the file (attribute beam_conditions), so
    samples for conditioned models (pxdbg train --model sparse-beam) can be made."""
    import time
    from dataclasses import replace

    from ..datasets.synthetic import beam_conditions_of, config_for_conditions, preset, write_synthetic

    config = preset(campaign)
    scales = {k: v for k, v in (("luminosity", luminosity), ("beam_loss", beam_loss),
                                ("injection_fraction", injection_fraction)) if v is not None}
    if conditions_file is not None:
        if scales:
            raise click.UsageError("give --conditions or --luminosity/--beam-loss/--injection-fraction, not both")
        from registry.beam import BeamConditions

        config = config_for_conditions(BeamConditions.from_file(conditions_file), config)
    elif scales:
        config = replace(config, **scales)
    t0 = time.perf_counter()
    write_synthetic(output, n_events, seed, exp=exp, run=run, progress=progress, config=config, campaign=campaign)
    dt = time.perf_counter() - t0
    click.echo(f"wrote {n_events} synthetic events ({campaign}; beam conditions {beam_conditions_of(config).summary()}) "
               f"to {output} in {dt:.1f} s ({n_events / dt:.0f} events/s)")


@dataset.command("import-root")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="pxd-digits file to write.")
@click.option("--tree", default="tree", show_default=True, help="TTree name.")
@click.option("--branch", default="PXDDigits", show_default=True, help="Name of the PXDDigits array.")
@click.option("--exp", default=0, show_default=True, type=int, help="Experiment, where a file has no EventMetaData.")
@click.option("--run", default=0, show_default=True, type=int, help="Run, where a file has no EventMetaData.")
@click.option("--threshold", default=1, show_default=True, type=click.IntRange(1, 255),
              help="Drop digits below this charge (ADU).")
@click.option("-n", "--max-events", type=click.IntRange(min=1), default=None, help="Stop after this many events.")
@click.option("--step", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Events read per chunk (bounds memory).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@conditions_options
@handle_errors
def import_root_cmd(files: tuple[Path, ...], output: Path, tree: str, branch: str, exp: int, run: int,
                    threshold: int, max_events: int | None, step: int, progress: bool, conditions) -> None:
    """Import basf2 ROOT files (PXDDigits branches) into one pxd-digits file.

    With --conditions FILE.json (or --luminosity, --her-current, --ler-current and
    --injection-fraction) the output is labelled with the beam conditions the overlay files
    were taken under, for training a conditioned model (pxdbg train --model sparse-beam)."""
    from ..datasets.root_import import RootImportError, import_root

    try:
        stats = import_root(list(files), output, tree=tree, branch=branch, exp=exp, run=run, step=step,
                            threshold=threshold, max_events=max_events, progress=progress, conditions=conditions)
    except RootImportError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"imported {stats.events} events, {stats.digits_written} digits from {len(stats.files)} file(s) "
               f"into {output}" + (f", labelled with beam conditions {conditions.summary()}" if conditions else ""))
    if stats.merged_duplicates or stats.saturated or stats.below_threshold:
        click.echo(f"  merged duplicate pixels: {stats.merged_duplicates}, saturated at 255: {stats.saturated}, "
                   f"dropped below threshold: {stats.below_threshold}")


@dataset.command("info")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-n", "--max-events", type=click.IntRange(min=1), default=None,
              help="Summarize at most this many events (default: all).")
@click.option("--provenance", "as_json", is_flag=True,
              help="Print only the provenance record, as JSON (checkpoints, sources, runs).")
def info(file: Path, max_events: int | None, as_json: bool) -> None:
    """Describe a pxd-digits file: events, runs, digits, occupancy per layer, charge, and
    the provenance of generated events (checkpoint payload, hashes, tag, IoV, source)."""
    import json

    from .. import provenance
    from ..datasets.beam_labels import LABEL_ATTR, read_label
    from ..digits import DigitsFormatError, DigitsReader
    from ..sensors import SENSOR_LAYER
    from ..validation.metrics import summarize_file

    try:
        with DigitsReader(file) as reader:
            n = reader.n_events
            n_digits = int(reader.offsets[-1])
            runs = sorted({(int(e), int(r)) for e, r in zip(reader.exp, reader.run)})
            attrs = {k: v for k, v in reader.attrs.items() if k not in ("format", "version", "n_events")}
            record = provenance.read(reader)
        if as_json:
            click.echo(json.dumps(record, indent=2, sort_keys=True))
            return
        summary = summarize_file(file, max_events=max_events) if n else None
    except DigitsFormatError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{file}: pxd-digits v1, {n} events, {n_digits} digits"
               + (f" ({n_digits / n:.0f} per event)" if n else ""))
    shown = ", ".join(f"{e}/{r}" for e, r in runs[:5]) + (" ..." if len(runs) > 5 else "")
    click.echo(f"  exp/run: {shown}")
    for key in sorted(attrs):
        value = attrs[key]
        if key == LABEL_ATTR:
            try:
                label = read_label(file)
                click.echo(f"  beam conditions: {label.summary()}")
                continue
            except ValueError as error:
                click.echo(f"  beam conditions: INVALID label ({error})")
                continue
        text = value.decode() if isinstance(value, bytes) else str(value)
        click.echo(f"  {key}: {text if len(text) < 100 else text[:97] + '...'}")
    if record is not None:
        click.echo("  provenance:")
        for line in provenance.describe(record, indent="    "):
            click.echo(line)
    else:
        click.echo("  provenance: none recorded (not made by pxdbg generate or overlay)")
    if summary is not None:
        occ = summary.mean_occupancy
        hist = summary.charge_hist
        mean_charge = float((hist * np.arange(256)).sum() / hist.sum()) if hist.sum() else float("nan")
        sizes = summary.cluster_size_hist
        click.echo(f"  summarized events: {summary.n_events}")
        click.echo(f"  mean occupancy: layer 1 {occ[SENSOR_LAYER == 1].mean():.3%}, "
                   f"layer 2 {occ[SENSOR_LAYER == 2].mean():.3%}")
        click.echo(f"  mean pixel charge {mean_charge:.1f} ADU, mean cluster size "
                   f"{(sizes * np.arange(len(sizes))).sum() / max(sizes.sum(), 1):.2f} pixels")
