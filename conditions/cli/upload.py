"""``conditionsdb upload``: add payload files and give them IoVs in a tag.

Two forms:

* ``upload TAG FILE --name NAME --iov FE,FR,LE,LR``: one file;
* ``upload TAG database.txt``: a basf2 testing-payloads file (what basf2 writes for local
  payloads: ``dbstore/<name> <revision> FE,FR,LE,LR`` per line, the payload files beside
  it). Files are deduplicated by checksum, each distinct payload is uploaded once, and
  only the IoVs the tag does not have yet are created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from ..exceptions import FrozenTagError
from ..iov import IntervalOfValidity
from ..tags import GlobalTagState
from .context import IOV, CliContext, parse_metadata, pass_cli, table

#: States whose IoVs may still grow.
WRITABLE_STATES = (GlobalTagState.OPEN, GlobalTagState.RUNNING)


@dataclass
class _Item:
    """One distinct payload (name + bytes)."""

    name: str
    file: Path
    md5: str
    sha256: str
    size: int
    revision: int | None = None  # known when already stored, or once uploaded
    stored_before: bool = False


@click.command(short_help="Upload a payload file, or a testing-payloads file's payloads.")
@click.argument("tag")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", "name", default=None, help="Payload name, e.g. BeamSpot (one file).")
@click.option("--iov", "interval", type=IOV, default=None,
              help="Interval of validity of the file; -1 as final run = every run, -1,-1 = open-ended.")
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE", help="Payload metadata (repeatable).")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be uploaded and added; change nothing.")
@pass_cli
def upload(cli: CliContext, tag: str, file: Path, name: str | None, interval: IntervalOfValidity | None,
           meta: tuple[str, ...], dry_run: bool):
    """Upload FILE as payload NAME valid for --iov in TAG, or, without --name and --iov,
    every payload listed in the testing-payloads file FILE (e.g. localdb/database.txt).

    Identical bytes already stored under a name are reused, not stored twice; IoVs the tag
    already has are not added again, so after a failure the same command can simply be run
    again. One file: payload and IoV are written in one transaction on a database (on a
    server, the payload first). A testing-payloads file: the payloads first, then the IoVs,
    in file order (on a database in one transaction, all or none).
    """
    metadata = parse_metadata(meta)
    if (name is None) != (interval is None):
        raise click.UsageError("give both --name and --iov to upload one payload file, or neither to upload "
                               "the payloads listed in a testing-payloads file (database.txt)")
    if name is not None:
        items = [_hashed(name, file)]
        lines = [(items[0], interval)]
    else:
        items, lines = _read_testing_payloads(file)
    store = cli.store if dry_run else cli.writable_store
    state = store.get_tag(tag).state  # an unknown tag fails here, before anything is written
    if state not in WRITABLE_STATES and not dry_run:
        raise FrozenTagError(f"global tag {tag!r} is {state.value}: only OPEN and RUNNING tags take new IoVs; "
                             "nothing was uploaded")
    if not dry_run:
        cli.check_can_write(tag, "upload payloads and add IoVs")
    _find_stored(store, items)
    existing = {(r.payload.name, r.payload.sha256 or r.payload.checksum, r.iov.as_tuple())
                for r in store.iovs(tag)}

    def is_new(item: _Item, iov: IntervalOfValidity) -> bool:
        return ((item.name, item.sha256, iov.as_tuple()) not in existing
                and (item.name, item.md5, iov.as_tuple()) not in existing)

    # in file order (a RUNNING tag takes each name's IoVs only in increasing order), once each
    unique: dict[tuple[int, IntervalOfValidity], tuple[_Item, IntervalOfValidity]] = {}
    for item, iov in lines:
        unique.setdefault((id(item), iov), (item, iov))
    new_iovs = [pair for pair in unique.values() if is_new(*pair)]
    to_upload = [item for item in items if not item.stored_before]
    records = []
    if not dry_run:
        if name is not None and new_iovs and hasattr(store, "upload"):
            # one file on a database: payload and IoV in one transaction
            record = store.upload(tag, name, file, interval, metadata=metadata)
            items[0].revision = record.payload.revision
            records.append(record)
        else:
            with cli.progress(len(to_upload), "uploading", unit="payload") as bar:
                for item in to_upload:
                    bar.set_postfix_str(item.name, refresh=False)
                    info = store.add_payload(item.name, item.file, metadata=metadata)
                    item.revision = info.revision
                    bar.update(1)
            wanted = [(item.name, item.revision, iov) for item, iov in new_iovs]
            if wanted and hasattr(store, "add_iovs"):
                records = store.add_iovs(tag, wanted)
            else:
                records = [store.add_iov(tag, n, r, iov) for n, r, iov in wanted]
    if not dry_run:
        _warn_if_resolution_differs(lines)
    _report(cli, tag, items, to_upload, new_iovs, records, dry_run, single=name is not None)
    if dry_run and new_iovs and state not in WRITABLE_STATES and not cli.json_output:
        click.echo(f"note: {tag} is {state.value}: only OPEN and RUNNING tags take new IoVs, so this upload "
                   "would be refused", err=True)


def _hashed(name: str, file: Path) -> _Item:
    from ..cache import file_hashes
    from ..tags import validate_payload_name

    validate_payload_name(name)
    md5, sha256, size = file_hashes(file)
    return _Item(name, file, md5, sha256, size)


def _read_testing_payloads(file: Path) -> tuple[list[_Item], list[tuple[_Item, IntervalOfValidity]]]:
    """One item per distinct (name, bytes), in file order; and the lines to upload as
    (item, iov), in file order.

    As basf2's ``b2conditionsdb upload`` does, of several lines with the same payload
    name and interval only the LAST one is kept. Lines whose interval never matches
    (empty or reversed: a basf2 job ignores them) are skipped with a warning; a line that
    cannot be used (missing file, refused name or revision) stops the upload before
    anything is written.
    """
    from ..exceptions import UnknownPayloadError
    from ..testing_payloads import parse_testing_payloads

    entries = parse_testing_payloads(file)
    unusable = [e for e in entries if e.problem is not None and e.iov is not None]
    if unusable:
        lines = "\n".join(f"  {file}:{e.line}: {e.problem}" for e in unusable)
        raise UnknownPayloadError(f"{len(unusable)} line(s) of {file} cannot be uploaded; nothing was uploaded:\n{lines}")
    for entry in entries:
        if entry.iov is None:
            click.echo(f"warning: {file}:{entry.line}: skipped, its interval never matches", err=True)
    last: dict[tuple[str, IntervalOfValidity], int] = {}
    usable = [e for e in entries if e.iov is not None]
    for index, entry in enumerate(usable):
        key = (entry.name, entry.iov)
        if key in last:
            earlier = usable[last[key]]
            click.echo(f"warning: {file}:{earlier.line}: replaced by line {entry.line} (same payload name and "
                       f"interval {entry.iov}: the last line is kept, as basf2 does)", err=True)
        last[key] = index
    items: dict[tuple[str, str], _Item] = {}
    lines = []
    for index in sorted(last.values()):
        entry = usable[index]
        item = _hashed(entry.name, entry.file)
        item = items.setdefault((item.name, item.sha256), item)
        lines.append((item, entry.iov))
    return list(items.values()), lines


def _warn_if_resolution_differs(lines: list[tuple[_Item, IntervalOfValidity]]) -> None:
    """In a testing-payloads file the later line wins where IoVs overlap; in a global tag
    the higher revision does. Reused payloads can turn that order around: say where."""
    for j, (later, later_iov) in enumerate(lines):
        for earlier, earlier_iov in lines[:j]:
            if (earlier.name == later.name and earlier is not later and later_iov.overlaps(earlier_iov)
                    and (later.revision or 0) < (earlier.revision or 0)):
                click.echo(f"warning: {later.name}: where {later_iov} overlaps {earlier_iov}, basf2 used the "
                           f"later line (now r{later.revision}) but the tag resolves to the higher revision "
                           f"r{earlier.revision}; check with `conditionsdb iov list`", err=True)


def _find_stored(store, items: list[_Item]) -> None:
    """Mark the items whose bytes are already stored under their name."""
    for name in dict.fromkeys(item.name for item in items):
        stored = store.list_payloads(name)
        # match by SHA-256 where the store records it, else by MD5 (basf2 snapshots)
        by_hash = {p.sha256 or p.checksum: p for p in stored}
        for item in items:
            if item.name == name:
                found = by_hash.get(item.sha256) or by_hash.get(item.md5)
                if found is not None:
                    item.revision, item.stored_before = found.revision, True


def _report(cli: CliContext, tag: str, items, to_upload, new_iovs, records, dry_run: bool, *, single: bool):
    def rev(item: _Item) -> str:
        return str(item.revision) if item.revision is not None else "new"

    if single and not dry_run and records:
        r = records[0]
        p = r.payload
        text = (f"{p.name} r{p.revision} ({p.size} bytes, md5 {p.checksum}) valid for {r.iov} "
                f"in {r.tag} (IoV id {r.iov_id})")
        cli.emit(r, text)
        return
    verb_up, verb_add = ("would upload", "would add") if dry_run else ("uploaded", "added")
    lines = [f"{verb_up} {len(to_upload)} of {len(items)} distinct payload{'s' if len(items) != 1 else ''} "
             f"({len(items) - len(to_upload)} already stored), {verb_add} {len(new_iovs)} IoV"
             f"{'s' if len(new_iovs) != 1 else ''} to {tag}"]
    if items:
        rows = [(item.name, rev(item), "stored" if item.stored_before else ("upload" if dry_run else "uploaded"),
                 item.size, item.md5, item.file.name) for item in items]
        lines.append(table(("PAYLOAD", "REV", "ACTION", "BYTES", "MD5", "FILE"), rows, right=(1, 3), indent="  "))
    if new_iovs:
        lines.append(f"IoVs {'to add' if dry_run else 'added'}:")
        lines.append(table(("PAYLOAD", "REV", "IOV (FE,FR,LE,LR)"),
                           [(item.name, rev(item), iov) for item, iov in new_iovs], right=(1,), indent="  "))
    data = {
        "dry_run": dry_run,
        "tag": tag,
        "payloads": [{"name": i.name, "revision": i.revision, "file": i.file, "md5": i.md5,
                      "sha256": i.sha256, "size": i.size, "stored_before": i.stored_before} for i in items],
        "new_iovs": [{"name": i.name, "revision": i.revision, "iov": iov} for i, iov in new_iovs],
        "iov_ids": [r.iov_id for r in records],
    }
    cli.emit(data, "\n".join(lines))
