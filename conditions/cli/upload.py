"""``conditionsdb upload``: add a file as a payload and give it an IoV in a tag."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..exceptions import InvalidValueError
from ..iov import IntervalOfValidity
from .context import CliContext, pass_cli


def parse_metadata(items: tuple[str, ...]) -> dict:
    """``key=value`` pairs; values are JSON when they parse as JSON (numbers, true, lists),
    plain strings otherwise."""
    metadata = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidValueError(f"--meta expects key=value, got {item!r}")
        try:
            metadata[key.strip()] = json.loads(value)
        except ValueError:
            metadata[key.strip()] = value
    return metadata


@click.command()
@click.argument("tag")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", "name", required=True, help="Payload name, e.g. BeamSpot.")
@click.option("--iov", "iov_text", required=True, metavar="FE,FR,LE,LR",
              help="Interval of validity; -1 as final run = every run, -1,-1 = open-ended.")
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE", help="Payload metadata (repeatable).")
@pass_cli
def upload(cli: CliContext, tag: str, file: Path, name: str, iov_text: str, meta: tuple[str, ...]):
    """Store FILE as a new revision of payload NAME and add an IoV for it to TAG.

    Identical bytes already stored under NAME are reused, not stored twice. Payload and
    IoV are written in one transaction: if the tag refuses the IoV, nothing is stored.
    """
    iov = IntervalOfValidity.parse(iov_text)
    metadata = parse_metadata(meta)
    store = cli.store
    if hasattr(store, "upload"):
        record = store.upload(tag, name, file, iov, metadata=metadata)
    else:  # stores without a combined call (e.g. remote ones): payload, then IoV
        store.get_tag(tag)
        payload = store.add_payload(name, file, metadata=metadata)
        record = store.add_iov(tag, name, payload.revision, iov)
    p = record.payload
    cli.emit(record, f"{p.name} r{p.revision} ({p.size} bytes, md5 {p.checksum}) valid for {record.iov} "
                     f"in {record.tag} (IoV id {record.iov_id})")
