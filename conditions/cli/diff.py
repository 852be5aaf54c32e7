"""``conditionsdb diff``: which IoVs two global tags do not share."""

from __future__ import annotations

import click

from .context import IOV_HEADERS, CliContext, iov_rows, pass_cli, run_option, table


@click.command(short_help="IoVs in one global tag and not in the other.")
@click.argument("tag_a")
@click.argument("tag_b")
@run_option("Only IoVs valid for this experiment and run.")
@click.option("--exit-code", is_flag=True, help="Exit with status 1 when the tags differ (like `diff`).")
@pass_cli
def diff(cli: CliContext, tag_a: str, tag_b: str, run: tuple[int, int] | None, exit_code: bool):
    """Show the IoVs only in TAG_A (-) and only in TAG_B (+), compared by payload name,
    revision and interval."""
    exp, run_number = run if run else (None, None)
    result = cli.store.diff(tag_a, tag_b, exp=exp, run=run_number)
    where = f" at experiment {exp}, run {run_number}" if run else ""
    if result.identical:
        text = f"{tag_a} and {tag_b} have the same IoVs{where}"
    else:
        rows = [("-", *row) for row in iov_rows(result.only_a)] + [("+", *row) for row in iov_rows(result.only_b)]
        text = (f"--- {tag_a} ({len(result.only_a)} IoVs only here)\n+++ {tag_b} ({len(result.only_b)} IoVs only here)"
                f"{where}\n" + table(("", *IOV_HEADERS), rows, right=(1, 3)))
    cli.emit({"tag_a": tag_a, "tag_b": tag_b, "identical": result.identical,
              "only_a": result.only_a, "only_b": result.only_b}, text)
    if exit_code and not result.identical:
        click.get_current_context().exit(1)
