"""``conditionsdb``: drive a conditions store from the shell.

Global options come before the command: ``conditionsdb --db conditions.db tag list``.
Each command group lives in its own module and registers below with one line.
"""

from __future__ import annotations

import logging

import click

from .context import CliContext, ConditionsGroup, pass_cli  # noqa: F401  (re-exported for command modules)


@click.group(cls=ConditionsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db", envvar="CONDITIONSDB_URL", metavar="URL",
              help="The store: a file path, sqlite:///PATH or postgresql://... (env CONDITIONSDB_URL).")
@click.option("--payload-dir", envvar="CONDITIONSDB_PAYLOAD_DIR", metavar="DIR",
              help="Payload directory of the store (default: derived from --db; env CONDITIONSDB_PAYLOAD_DIR).")
@click.option("--token", envvar="CONDITIONSDB_TOKEN", metavar="SECRET",
              help="API token for REST servers (env CONDITIONSDB_TOKEN).")
@click.option("--json", "json_output", is_flag=True, help="Print machine-readable JSON.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug); tracebacks on errors.")
@click.version_option(package_name="pxdbg", prog_name="conditionsdb")
@click.pass_context
def main(ctx: click.Context, db, payload_dir, token, json_output, verbose):
    """Manage a conditions database: global tags, payloads and intervals of validity."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = CliContext(db, token=token, json_output=json_output, verbose=verbose, payload_dir=payload_dir)


# Command groups, one line each.
from . import tag as _tag  # noqa: E402
from . import upload as _upload  # noqa: E402
from . import resolve as _resolve  # noqa: E402

main.add_command(_tag.tag)
main.add_command(_upload.upload)
main.add_command(_resolve.resolve)
from . import serve as _serve  # noqa: E402
from . import token as _token  # noqa: E402

main.add_command(_serve.serve)
main.add_command(_token.token)
