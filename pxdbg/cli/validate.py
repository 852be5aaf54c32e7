"""``pxdbg validate``: compare a generated sample with a reference sample (any two
pxd-digits files) and write report.json plus PNG plots."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("validate")
@click.option("-g", "--generated", "generated", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="pxd-digits file of generated events.")
@click.option("-r", "--reference", "reference", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="pxd-digits file of the reference sample (e.g. imported from basf2).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for report.json and the plots (created if missing).")
@click.option("-n", "--max-events", type=click.IntRange(min=1), default=None,
              help="Use at most this many events of each file.")
@click.option("--no-plots", is_flag=True, help="Write report.json only.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def validate(generated: Path, reference: Path, out_dir: Path, max_events: int | None, no_plots: bool,
             progress: bool) -> None:
    """Compare GENERATED events with a REFERENCE sample.

    Reports per-sensor occupancy (and relative error), occupancy distributions, the pixel
    charge spectrum, cluster size and charge, the 40x40 inter-sensor Spearman matrices and a
    Frechet distance on per-event features; report.json lists every definition.
    """
    from ..digits import DigitsFormatError
    from ..validation.metrics import validate_files

    for path in (generated, reference):
        if not path.is_file():
            raise click.UsageError(f"no such file: {path}")
    try:
        report = validate_files(generated, reference, out_dir, max_events=max_events, progress=progress,
                                plots=not no_plots)
    except DigitsFormatError as error:
        raise click.ClickException(str(error)) from error
    for line in report.summary_lines():
        click.echo(line)
    click.echo(f"report: {out_dir / 'report.json'}" + ("" if no_plots else f" (plots in {out_dir})"))
