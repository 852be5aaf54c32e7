"""``conditionsdb iov ...``: list, add, modify and delete the intervals of validity of a tag."""

from __future__ import annotations

import click

from ..exceptions import InvalidValueError, UnknownIoVError
from ..iov import IntervalOfValidity
from ..tags import GlobalTagState
from .context import IOV, IOV_HEADERS, CliContext, iov_rows, pass_cli, run_option, table


@click.group()
def iov():
    """Intervals of validity: list, add, modify, delete."""


@iov.command("list")
@click.argument("tag")
@run_option("Only IoVs valid for this experiment and run.")
@click.option("--name", "name", default=None, help="Only IoVs of this payload name.")
@pass_cli
def list_(cli: CliContext, tag: str, run: tuple[int, int] | None, name: str | None):
    """List the IoVs of TAG (with the ids that `iov modify` and `iov delete` take)."""
    exp, run_number = run if run else (None, None)
    records = cli.store.iovs(tag, name=name, exp=exp, run=run_number)
    if not records and not cli.json_output:
        cli.emit(records, f"no IoVs in {tag}" + (" matching" if run or name else ""))
        return
    cli.emit(records, table(IOV_HEADERS, iov_rows(records), right=(0, 2)))


@iov.command("add")
@click.argument("tag")
@click.argument("name")
@click.argument("revision", type=click.IntRange(min=1))
@click.option("--iov", "interval", type=IOV, required=True, help="Interval of validity FE,FR,LE,LR.")
@pass_cli
def add(cli: CliContext, tag: str, name: str, revision: int, interval: IntervalOfValidity):
    """Make the stored payload NAME revision REVISION valid for --iov in TAG."""
    cli.check_can_write(tag, "add IoVs")
    record = cli.writable_store.add_iov(tag, name, revision, interval)
    cli.emit(record, f"added IoV {record.iov_id}: {name} r{revision} valid for {record.iov} in {tag}")


@iov.command("modify")
@click.argument("iov_id", type=click.IntRange(min=1))
@click.option("--iov", "interval", type=IOV, required=True, help="The new interval FE,FR,LE,LR.")
@pass_cli
def modify(cli: CliContext, iov_id: int, interval: IntervalOfValidity):
    """Give IoV IOV_ID (see `iov list`) a new interval. Only OPEN tags allow this."""
    cli.check_can_write(None, "modify IoVs")
    record = cli.writable_store.modify_iov(iov_id, interval)
    cli.emit(record, f"IoV {record.iov_id} ({record.payload.name} r{record.payload.revision} in {record.tag}) "
                     f"is now valid for {record.iov}")


@iov.command("delete")
@click.argument("tag")
@click.argument("iov_ids", nargs=-1, type=click.IntRange(min=1))
@click.option("--runs", "runs", type=IOV, default=None, metavar="FE,FR,LE,LR",
              help="Delete every IoV of TAG that lies entirely inside this run range.")
@click.option("--name", "name", default=None, help="With --runs: only IoVs of this payload name.")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@pass_cli
def delete(cli: CliContext, tag: str, iov_ids: tuple[int, ...], runs: IntervalOfValidity | None,
           name: str | None, dry_run: bool):
    """Delete IoVs of TAG: the ones with the given IOV_IDS, or (--runs) all inside a run range.

    IoVs that only partly overlap --runs are kept (and listed): shorten them with
    `iov modify`. Only OPEN tags allow deletions.
    """
    if bool(iov_ids) == bool(runs):
        raise click.UsageError("give either IoV ids or --runs FE,FR,LE,LR (see `conditionsdb iov list TAG`)")
    if name and not runs:
        raise click.UsageError("--name only applies together with --runs")
    store = cli.store if dry_run else cli.writable_store
    records = store.iovs(tag, name=name)
    partial = []
    if iov_ids:
        by_id = {r.iov_id: r for r in records}
        missing = [i for i in iov_ids if i not in by_id]
        if missing:
            raise UnknownIoVError(f"global tag {tag!r} has no IoV with id {', '.join(map(str, missing))}; "
                                  "nothing was deleted")
        chosen = [by_id[i] for i in dict.fromkeys(iov_ids)]
    else:
        chosen = [r for r in records if runs.covers(r.iov)]
        partial = [r for r in records if r.iov.overlaps(runs) and not runs.covers(r.iov)]
    if not dry_run:
        cli.check_can_write(tag, "delete IoVs")
        if any(r.iov_id is None for r in chosen):
            raise InvalidValueError(f"{store.description} gives no IoV ids; it cannot delete IoVs")
    deleted = []
    for record in chosen:
        if not dry_run:
            store.delete_iov(record.iov_id)
        deleted.append(record)
    verb = "would delete" if dry_run else "deleted"
    lines = [f"{verb} {len(deleted)} IoV{'s' if len(deleted) != 1 else ''} of {tag}"]
    if deleted:
        lines.append(table(IOV_HEADERS, iov_rows(deleted), right=(0, 2), indent="  "))
    if partial:
        lines.append(f"kept {len(partial)} IoV{'s' if len(partial) != 1 else ''} reaching beyond {runs} "
                     "(shorten them with `conditionsdb iov modify ID --iov ...`):")
        lines.append(table(IOV_HEADERS, iov_rows(partial), right=(0, 2), indent="  "))
    if dry_run and deleted:
        state = store.get_tag(tag).state
        if state is not GlobalTagState.OPEN:
            lines.append(f"note: {tag} is {state.value}: only OPEN tags allow deletions, so this would be refused")
    cli.emit({"dry_run": dry_run, "deleted": deleted, "kept_partial": partial}, "\n".join(lines))
