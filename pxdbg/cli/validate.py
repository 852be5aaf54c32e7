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
@click.option("--floor", "floor", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              help="A second, independent sample from the reference's source, of the same size as the generated "
                   "one: each metric is reported beside its floor (this sample against the reference) and the "
                   "ratio. A ratio near 1 or below: as good as the sample statistics allow. Repeat for several "
                   "floor samples: their mean is a steadier floor.")
@click.option("-n", "--max-events", type=click.IntRange(min=1), default=None,
              help="Use at most this many events of each file.")
@click.option("--no-plots", is_flag=True, help="Write report.json only.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def validate(generated: Path, reference: Path, out_dir: Path, floor: tuple[Path, ...], max_events: int | None,
             no_plots: bool, progress: bool) -> None:
    """Compare GENERATED events with a REFERENCE sample (and, with --floor, against the
    statistical floor).

    Reports per-sensor occupancy (and relative error), occupancy distributions, the pixel
    charge spectrum, cluster size and charge, the 40x40 inter-sensor Spearman matrices and a
    Frechet distance on per-event features; report.json lists every definition.
    """
    from ..digits import DigitsFormatError
    from ..validation.metrics import validate_files

    for path in (generated, reference) + tuple(floor):
        if not path.is_file():
            raise click.UsageError(f"no such file: {path}")
    try:
        report = validate_files(generated, reference, out_dir, max_events=max_events, progress=progress,
                                plots=not no_plots, floor_path=list(floor) or None)
    except DigitsFormatError as error:
        raise click.ClickException(str(error)) from error
    except OSError as error:
        raise click.ClickException(f"{error.strerror or error} ({error.filename or out_dir})") from error
    for line in report.summary_lines():
        click.echo(line)
    if report.n_floor is not None and report.n_floor != report.n_generated:
        click.echo(f"warning: the floor sample has {report.n_floor} events and the generated one "
                   f"{report.n_generated}: floors compare fairly only at equal sizes (use -n)", err=True)
    click.echo(f"report: {out_dir / 'report.json'}" + ("" if no_plots else f" (plots in {out_dir})"))
