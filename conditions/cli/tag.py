"""``conditionsdb tag ...``: create global tags, move them along their lifecycle, look at them."""

from __future__ import annotations

import click

from .context import CliContext, pass_cli


@click.group()
def tag():
    """Global tags: create, change state, list, show."""


@tag.command("create")
@click.argument("name")
@click.option("-d", "--description", default="", help="What the tag is for.")
@pass_cli
def create(cli: CliContext, name: str, description: str):
    """Create the OPEN global tag NAME."""
    info = cli.store.create_tag(name, description)
    cli.emit(info, f"created global tag {info.name} ({info.state.value})")


@tag.command("state")
@click.argument("name")
@click.argument("state")
@pass_cli
def state(cli: CliContext, name: str, state: str):
    """Move tag NAME to STATE (OPEN, TESTING, VALIDATED, PUBLISHED, RUNNING, INVALID)."""
    before = cli.store.get_tag(name).state
    info = cli.store.set_tag_state(name, state)
    cli.emit(info, f"global tag {info.name}: {before.value} -> {info.state.value}")


@tag.command("list")
@click.option("--state", "state", default=None, help="Only tags in this state.")
@click.option("--pattern", default=None, help="Only names matching this glob, e.g. 'data_*'.")
@pass_cli
def list_(cli: CliContext, state: str | None, pattern: str | None):
    """List global tags."""
    tags = cli.store.list_tags(state=state, pattern=pattern)
    width = max([len(t.name) for t in tags] + [4])
    lines = [f"{'NAME':<{width}}  {'STATE':<9}  DESCRIPTION"]
    lines += [f"{t.name:<{width}}  {t.state.value:<9}  {t.description}" for t in tags]
    cli.emit(tags, "\n".join(lines))


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
        lines.append(f"  {'ID':>6}  {'PAYLOAD':<30} {'REV':>4}  IOV (FE,FR,LE,LR)")
        lines += [f"  {r.iov_id:>6}  {r.payload.name:<30} {r.payload.revision:>4}  {r.iov}" for r in records]
    cli.emit({"tag": info, "iovs": records}, "\n".join(lines))
