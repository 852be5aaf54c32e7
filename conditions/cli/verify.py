"""``conditionsdb verify``: re-hash payload files and report the damaged ones."""

from __future__ import annotations

from pathlib import Path

import click

from .context import CliContext, pass_cli, table


@click.command(short_help="Re-hash the payload files of a snapshot or the cache.")
@click.argument("directory", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--cache", "cache", is_flag=True,
              help="Check the payload cache (--cache-dir / CONDITIONS_CACHE_DIR) instead of a snapshot.")
@click.option("--repair", is_flag=True, help="With --cache: delete damaged files (they are fetched again when needed).")
@pass_cli
def verify(cli: CliContext, directory: Path | None, cache: bool, repair: bool):
    """Re-hash every payload file of the basf2 snapshot DIRECTORY (or, with --cache, of the
    payload cache) and report missing or damaged ones. Exit status 1 if any."""
    if bool(directory) == bool(cache):
        raise click.UsageError("give a snapshot DIRECTORY, or --cache to check the payload cache")
    if repair and not cache:
        raise click.UsageError("--repair only applies to --cache (a snapshot is repaired by downloading again)")
    bar = cli.progress(None, "verifying", unit="file")
    with bar:
        if cache:
            report = cli.cache.verify_all(repair=repair, progress=lambda path: bar.update(1))
            what = f"payload cache {report.directory}"
        else:
            from ..snapshot import verify_snapshot

            report = verify_snapshot(directory)
            what = f"snapshot {directory}"
    bad = [e for e in report.entries if e.status not in ("ok", "stale-temp")]
    counts = {status: report.count(status) for status in ("ok", "missing", "corrupt", "unexpected", "stale-temp")}
    summary = f"{what}: {len(report.entries)} files, " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [summary if report.entries else f"{what}: no payload files"]
    if bad:
        lines.append(table(("STATUS", "FILE", "DETAIL"), [(e.status, e.path, e.detail) for e in bad], indent="  "))
        hint = ("run `conditionsdb verify --cache --repair` to drop them" if cache and not repair
                else "download the snapshot again to replace them" if not cache else "")
        if hint:
            lines.append(hint)
    cli.emit({"directory": report.directory, "ok": not bad, "counts": counts, "problems": bad}, "\n".join(lines))
    if bad:
        click.get_current_context().exit(1)
