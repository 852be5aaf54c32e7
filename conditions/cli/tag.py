"""``conditionsdb tag ...``: create global tags, move them along their lifecycle, clone
and look at them."""

from __future__ import annotations

import click

from ..tags import GlobalTagState, check_transition
from .context import IOV_HEADERS, STATE, CliContext, CliFailure, iov_rows, pass_cli, table

#: States after which a tag can never be edited again (or never be used again): the
#: operator retypes the tag name before the change, unless --yes.
CONFIRM_STATES = frozenset({GlobalTagState.PUBLISHED, GlobalTagState.INVALID})


@click.group()
def tag():
    """Global tags: list, show, create, change state, clone."""


@tag.command("create")
@click.argument("name")
@click.option("-d", "--description", default="", help="What the tag is for.")
@pass_cli
def create(cli: CliContext, name: str, description: str):
    """Create the OPEN global tag NAME."""
    cli.check_can_write(None, "create a global tag")
    info = cli.creating_store.create_tag(name, description)
    cli.emit(info, f"created global tag {info.name} ({info.state.value})")


@tag.command("state")
@click.argument("name")
@click.argument("state", type=STATE)
@click.option("-y", "--yes", is_flag=True, help="Do not ask to retype the tag name for PUBLISHED and INVALID.")
@pass_cli
def state(cli: CliContext, name: str, state: GlobalTagState, yes: bool):
    """Move tag NAME to STATE (OPEN, TESTING, VALIDATED, PUBLISHED, RUNNING, INVALID).

    PUBLISHED and INVALID cannot be undone: the command asks to retype the tag name
    first, unless --yes is given.
    """
    cli.check_can_write(None, "change the state of a global tag")
    store = cli.writable_store
    before = store.get_tag(name).state
    check_transition(name, before, state)  # refuse before asking anything
    if state in CONFIRM_STATES and not yes:
        if not cli.json_output:
            click.echo(f"Moving global tag {name} from {before.value} to {state.value} cannot be undone.", err=True)
        try:
            typed = click.prompt("Retype the tag name to confirm", default="", show_default=False, err=True)
        except click.Abort:
            raise CliFailure(
                f"no confirmation for {state.value} (no input); nothing changed. Retype the tag name "
                "when asked, or pass --yes") from None
        if typed.strip() != name:
            raise CliFailure(f"{typed.strip()!r} is not {name!r}: nothing changed")
    info = store.set_tag_state(name, state)
    cli.emit(info, f"global tag {info.name}: {before.value} -> {info.state.value}")


@tag.command("clone")
@click.argument("source")
@click.argument("destination")
@click.option("-d", "--description", default=None, help="Description of the new tag (default: the source's).")
@pass_cli
def clone(cli: CliContext, source: str, destination: str, description: str | None):
    """Copy every IoV of tag SOURCE into a new OPEN tag DESTINATION (to edit a frozen tag)."""
    cli.check_can_write(None, "clone a global tag")
    store = cli.writable_store
    info = store.clone_tag(source, destination, description=description)
    count = len(store.iovs(destination))
    cli.emit({"tag": info, "iovs": count},
             f"cloned {source} into {info.name} ({info.state.value}, {count} IoVs)")


@tag.command("list")
@click.option("--state", "state", type=STATE, default=None, help="Only tags in this state.")
@click.option("--pattern", default=None, help="Only names matching this glob, e.g. 'data_*'.")
@pass_cli
def list_(cli: CliContext, state: GlobalTagState | None, pattern: str | None):
    """List global tags."""
    tags = cli.store.list_tags(state=state, pattern=pattern)
    if not tags and not cli.json_output:
        what = " matching" if state or pattern else ""
        cli.emit(tags, f"no{what} global tags in {cli.store.description}")
        return
    cli.emit(tags, table(("NAME", "STATE", "DESCRIPTION"), [(t.name, t.state.value, t.description) for t in tags]))


@tag.command("show")
@click.argument("name")
@click.option("--payload", "payload_name", default=None, help="Only IoVs of this payload name.")
@pass_cli
def show(cli: CliContext, name: str, payload_name: str | None):
    """Show tag NAME and its IoVs."""
    info = cli.store.get_tag(name)
    records = cli.store.iovs(name, name=payload_name)
    lines = [
        f"name:        {info.name}",
        f"state:       {info.state.value}",
        f"description: {info.description}",
        f"created:     {info.created:%Y-%m-%d %H:%M:%S} UTC by {info.created_by}" if info.created else "",
        f"modified:    {info.modified:%Y-%m-%d %H:%M:%S} UTC by {info.modified_by}" if info.modified else "",
        f"IoVs:        {len(records)}",
    ]
    lines = [line for line in lines if line]
    if records:
        lines.append(table(IOV_HEADERS, iov_rows(records), right=(0, 2), indent="  "))
    cli.emit({"tag": info, "iovs": records}, "\n".join(lines))
