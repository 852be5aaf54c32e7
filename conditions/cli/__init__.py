"""``conditionsdb``: drive a conditions store from the shell.

Global options come before the command: ``conditionsdb --db conditions.db tag list``.
Each command group lives in its own module and registers below with one line. Heavy
imports (SQLAlchemy, requests, FastAPI, tqdm) happen inside the commands, so ``--help``
stays quick.
"""

from __future__ import annotations

import logging

import click

from .context import CliContext, ConditionsGroup, pass_cli  # noqa: F401  (re-exported for command modules)


@click.group(cls=ConditionsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db", envvar="CONDITIONSDB_URL", metavar="URL",
              help="The store: a file path or sqlite:///PATH, postgresql://..., or an http(s):// server "
                   "(several, comma separated, for failover); a basf2 snapshot directory for reading "
                   "(env CONDITIONSDB_URL).")
@click.option("--payload-dir", envvar="CONDITIONSDB_PAYLOAD_DIR", metavar="DIR",
              help="Payload directory of an SQL store (default: derived from --db; env CONDITIONSDB_PAYLOAD_DIR).")
@click.option("--token", envvar="CONDITIONSDB_TOKEN", metavar="SECRET",
              help="API token for writing to a server (env CONDITIONSDB_TOKEN).")
@click.option("--token-file", envvar="CONDITIONSDB_TOKEN_FILE", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="File holding the API token (env CONDITIONSDB_TOKEN_FILE; default "
                   "~/.config/conditionsdb/token when it exists).")
@click.option("--cache-dir", envvar="CONDITIONS_CACHE_DIR", metavar="DIR",
              help="Payload cache for files fetched from servers (env CONDITIONS_CACHE_DIR; "
                   "default: the user's cache directory).")
@click.option("--json", "json_output", is_flag=True, help="Print machine-readable JSON.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug); tracebacks on errors.")
@click.version_option(package_name="pxdbg", prog_name="conditionsdb")
@click.pass_context
def main(ctx: click.Context, db, payload_dir, token, token_file, cache_dir, json_output, verbose):
    """Manage a conditions database: global tags, payloads and intervals of validity.

    Exit status: 0 success, 1 failure (the message says what went wrong and what to do),
    2 usage error."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = CliContext(db, token=token, json_output=json_output, verbose=verbose, payload_dir=payload_dir,
                         token_file=token_file, cache_dir=cache_dir)


# Command groups, one line each.
from . import check as _check  # noqa: E402
from . import diff as _diff  # noqa: E402
from . import download as _download  # noqa: E402
from . import iov as _iov  # noqa: E402
from . import resolve as _resolve  # noqa: E402
from . import serve as _serve  # noqa: E402
from . import tag as _tag  # noqa: E402
from . import token as _token  # noqa: E402
from . import upload as _upload  # noqa: E402
from . import verify as _verify  # noqa: E402

main.add_command(_tag.tag)
main.add_command(_diff.diff)
main.add_command(_iov.iov)
main.add_command(_upload.upload)
main.add_command(_resolve.resolve)
main.add_command(_download.download)
main.add_command(_verify.verify)
main.add_command(_check.check)
main.add_command(_serve.serve)
main.add_command(_token.token)
