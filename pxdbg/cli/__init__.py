"""The ``pxdbg`` command: one module per command group, registered on ``main`` below."""

from __future__ import annotations

import logging

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="pxdbg")
def main(verbose: int) -> None:
    """PXD background generation for Belle II, with checkpoints served as conditions payloads."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# Command groups register themselves here, one line each.
from .checkpoint import checkpoint as _checkpoint  # noqa: E402
from .campaign import campaign as _campaign  # noqa: E402
from .dataset import dataset as _dataset  # noqa: E402
from .validate import validate as _validate  # noqa: E402
from .generate import generate as _generate  # noqa: E402
from .overlay import overlay as _overlay  # noqa: E402
from .train import train as _train  # noqa: E402
from .beam import beam as _beam  # noqa: E402

main.add_command(_checkpoint)
main.add_command(_campaign)
main.add_command(_dataset)
main.add_command(_validate)
main.add_command(_generate)
main.add_command(_overlay)
main.add_command(_train)
main.add_command(_beam)
