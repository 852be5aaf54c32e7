"""``pxdbg overlay``: merge a background pxd-digits file into a signal one."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .generate import handle_errors


@click.command()
@click.option("--signal", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Signal pxd-digits file (its event ids are kept).")
@click.option("--background", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Background pxd-digits file, at least as many events as the signal.")
@click.option("--reuse-background", is_flag=True,
              help="Cycle the background when it has fewer events (correlates events).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when on a terminal).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Merged pxd-digits file.")
@handle_errors
def overlay(signal: Path, background: Path, reuse_background: bool, progress: bool | None, output: Path) -> None:
    """Overlay background digits onto signal digits event by event (charges add, max 255)."""
    from tqdm import tqdm

    from ..digits import DigitsReader
    from ..overlay import overlay_files

    with DigitsReader(signal) as reader:
        total = len(reader)
    with tqdm(total=total, unit="evt", disable=(not progress) if progress is not None else None,
              file=sys.stderr, desc="pxdbg overlay") as bar:
        n = overlay_files(signal, background, output, reuse_background=reuse_background, progress=bar.update)
    click.echo(f"wrote {n} merged events to {output}", err=True)
