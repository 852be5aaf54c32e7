"""``conditionsdb resolve``: which payload file applies to one run."""

from __future__ import annotations

import click

from ..exceptions import ChecksumMismatchError, UnknownPayloadError
from ..payload import hash_file
from .context import CliContext, pass_cli


@click.command()
@click.argument("tags")
@click.argument("name")
@click.argument("exp", type=click.IntRange(min=0))
@click.argument("run", type=click.IntRange(min=0))
@click.option("--allow-open", is_flag=True, help="Also use tags that are still OPEN.")
@pass_cli
def resolve(cli: CliContext, tags: str, name: str, exp: int, run: int, allow_open: bool):
    """Print the local file of payload NAME valid for experiment EXP, run RUN.

    TAGS is one global tag or a comma-separated list, highest priority first. The file is
    checked against the stored size, MD5 and SHA-256 before its path is printed.
    """
    tag_list = [t.strip() for t in tags.split(",") if t.strip()]
    store = cli.store
    resolved = store.resolve(tag_list, name, exp, run, allow_open=allow_open)
    payload = resolved.payload
    path = store.local_path(payload)
    if path is None:
        raise UnknownPayloadError(
            f"payload {payload.name} r{payload.revision} has no local file in {store.description}"
        )
    actual = hash_file(path)
    if (actual.md5 != payload.checksum or (payload.sha256 and actual.sha256 != payload.sha256)
            or (payload.size is not None and actual.size != payload.size)):
        raise ChecksumMismatchError(
            f"payload file {path} does not match {payload.name} r{payload.revision} "
            f"(md5 {actual.md5}, expected {payload.checksum})"
        )
    cli.emit({"path": path, "resolved": resolved}, str(path))
