"""``pxdbg campaign``: background campaigns (each one a global tag in the conditions store)."""

from __future__ import annotations

import json

import click

from .checkpoint import friendly_errors, open_writable_store, store_options


def _parse_condition(text: str) -> tuple[str, object]:
    """``KEY=VALUE``; VALUE is read as JSON when it parses (numbers, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


@click.group()
def campaign() -> None:
    """Background campaigns: named beam/background conditions, each with its own global tag."""


@campaign.command("list")
@store_options
@friendly_errors
def list_command(db: str | None, payload_dir: str | None, token: str | None) -> None:
    """List the campaigns in the store with the state of their tags."""
    from registry.campaigns import list_campaigns

    store = open_writable_store(db, payload_dir, token)
    try:
        found = list_campaigns(store)
    finally:
        store.close()
    if not found:
        click.echo("no campaigns")
    for status in found:
        c = status.campaign
        click.echo(f"{c.name:24s} {status.tag.state.value:10s} {status.tag.name}  {c.description}")


@campaign.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@store_options
@friendly_errors
def show(name: str, as_json: bool, db: str | None, payload_dir: str | None, token: str | None) -> None:
    """Show campaign NAME: its record, its tag's state, and its checkpoints' IoVs."""
    from registry.campaigns import CAMPAIGN_PAYLOAD, campaign_status

    store = open_writable_store(db, payload_dir, token)
    try:
        status = campaign_status(store, name)
        records = [r for r in store.iovs(status.tag.name) if r.payload.name != CAMPAIGN_PAYLOAD]
    finally:
        store.close()
    c = status.campaign
    if as_json:
        record = json.loads(c.to_json())
        record["globaltag"] = {"name": status.tag.name, "state": status.tag.state.value}
        record["checkpoints"] = [{"payload": r.payload.name, "revision": r.payload.revision,
                                  "iov": list(r.iov.as_tuple())} for r in records]
        click.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    click.echo(f"campaign {c.name}: {c.description}")
    click.echo(f"  global tag: {status.tag.name} ({status.tag.state.value})")
    if c.luminosity is not None:
        click.echo(f"  luminosity: {c.luminosity:g} cm^-2 s^-1")
    for label, value in (("simulation release", c.simulation_release), ("training dataset", c.training_dataset)):
        if value:
            click.echo(f"  {label}: {value}")
    for key, value in sorted(c.beam_conditions.items()):
        click.echo(f"  {key}: {value}")
    click.echo(f"  checkpoints: {len(records)}")
    for r in sorted(records, key=lambda r: (r.payload.name, r.iov.lower)):
        click.echo(f"    {r.payload.name} r{r.payload.revision}  IoV {r.iov}")


@campaign.command()
@click.argument("name")
@click.option("--description", default="", help="One line saying what the conditions are.")
@click.option("--condition", "conditions", multiple=True, metavar="KEY=VALUE",
              help="A beam or background condition (repeatable), e.g. her_current_mA=1040.")
@click.option("--luminosity", type=float, help="Instantaneous luminosity in cm^-2 s^-1.")
@click.option("--simulation-release", help="basf2 release that simulated the training sample.")
@click.option("--training-dataset", help="Reference (LFN, path, DOI) of the training sample.")
@store_options
@friendly_errors
def create(name: str, description: str, conditions: tuple[str, ...], luminosity: float | None,
           simulation_release: str | None, training_dataset: str | None,
           db: str | None, payload_dir: str | None, token: str | None) -> None:
    """Create campaign NAME: an OPEN global tag PXDBackgroundGenerator_NAME with its record."""
    from registry.campaigns import Campaign, create_campaign

    record = Campaign(name=name, description=description,
                      beam_conditions=dict(_parse_condition(c) for c in conditions),
                      luminosity=luminosity, simulation_release=simulation_release,
                      training_dataset=training_dataset)
    store = open_writable_store(db, payload_dir, token)
    try:
        status = create_campaign(store, record)
    finally:
        store.close()
    click.echo(f"created campaign {name}: global tag {status.tag.name} ({status.tag.state.value})")


@campaign.command()
@click.argument("name")
@click.option("--to", "target", default="PUBLISHED", show_default=True,
              type=click.Choice(["TESTING", "VALIDATED", "PUBLISHED"], case_sensitive=False),
              help="Where to stop along OPEN -> TESTING -> VALIDATED -> PUBLISHED.")
@store_options
@friendly_errors
def publish(name: str, target: str, db: str | None, payload_dir: str | None, token: str | None) -> None:
    """Move campaign NAME's tag along its lifecycle so production jobs can use it."""
    from registry.admin import publish_tag
    from registry.campaigns import campaign_status

    store = open_writable_store(db, payload_dir, token)
    try:
        status = campaign_status(store, name)
        state = publish_tag(store, status.tag.name, target=target)
    finally:
        store.close()
    click.echo(f"campaign {name}: global tag {status.tag.name} is {state.value}")
