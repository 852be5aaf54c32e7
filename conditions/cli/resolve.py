"""``conditionsdb resolve``: which payload file applies to one run."""

from __future__ import annotations

import click

from ..exceptions import ChecksumMismatchError
from ..payload import hash_file
from .context import CliContext, pass_cli


@click.command(short_help="The verified local file of a payload for one run.")
@click.argument("tags")
@click.argument("name")
@click.argument("exp", type=click.IntRange(min=0))
@click.argument("run", type=click.IntRange(min=0))
@click.option("--allow-open", is_flag=True, help="Also use tags that are still OPEN.")
@pass_cli
def resolve(cli: CliContext, tags: str, name: str, exp: int, run: int, allow_open: bool):
    """Print the local file of payload NAME valid for experiment EXP, run RUN.

    TAGS is one global tag or a comma-separated list, highest priority first. A store on
    this machine (or a snapshot) gives its own file; a server's payload is downloaded into
    the payload cache (--cache-dir). Either way the file is checked against the stored size,
    MD5 and SHA-256 before its path is printed.
    """
    tag_list = [t.strip() for t in tags.split(",") if t.strip()]
    if not tag_list:
        raise click.BadParameter("give at least one global tag", param_hint="TAGS")
    store = cli.store
    resolved = store.resolve(tag_list, name, exp, run, allow_open=allow_open)
    payload = resolved.payload
    path = store.local_path(payload)
    if path is not None:
        # Always re-hash here (no per-process memo): this is the command people run to check.
        actual = hash_file(path)
        if (actual.md5 != payload.checksum.lower() or (payload.sha256 and actual.sha256 != payload.sha256)
                or (payload.size is not None and actual.size != payload.size)):
            raise ChecksumMismatchError(
                f"payload file {path} does not match {payload.name} r{payload.revision} "
                f"(md5 {actual.md5}, expected {payload.checksum})"
            )
    else:
        path = cli.cache.get(payload, store)  # downloaded once, verified, then reused
    cli.emit({"path": path, "resolved": resolved}, str(path))
