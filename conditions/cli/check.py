"""``conditionsdb check``: the store itself (database rows against payload files)."""

from __future__ import annotations

import click

from .context import CliContext, is_http, pass_cli, table


@click.command(short_help="Check a store's payload files against its database (--repair fixes what it can).")
@click.option("--repair", is_flag=True,
              help="Quarantine damaged blobs, delete orphan blobs and stale upload temp files (older than 1 h).")
@pass_cli
def check(cli: CliContext, repair: bool):
    """Re-hash every payload file of the store --db (SQLite or PostgreSQL with its payload
    directory; run it where the files are, e.g. on the server) and compare with the
    database: missing and damaged payload files, orphan files no payload uses, upload
    temp files left by killed processes.

    Exit status 1 when payload bytes are missing or damaged (repaired or not: restore them
    from a backup or upload them again) or unexpected files are found; orphans and stale
    temp files alone only ask for --repair."""
    if cli.db and is_http(cli.db):
        raise click.UsageError("check runs on the store itself: give --db the server's database "
                               "(sqlite or postgresql URL) and --payload-dir, on the machine holding the files")
    store = cli.store
    if not hasattr(store, "blobs"):
        raise click.UsageError(f"{store.description} is not a store with a payload directory "
                               "(for a basf2 snapshot, use `conditionsdb verify DIR`)")
    from ..store.check import check_store

    bar = cli.progress(None, "checking", unit="file")

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    with bar:
        report = check_store(store, repair=repair, progress=progress)
    statuses = ("missing", "corrupt", "orphan", "stale-temp", "unexpected")
    counts = {status: report.count(status) for status in statuses}
    summary = (f"{store.description}: {report.payloads} payloads, {report.blobs} payload files, "
               f"{report.verified} verified" + "".join(f", {n} {s}" for s, n in counts.items() if n))
    lines = [summary]
    if report.problems:
        lines.append(table(("STATUS", "WHAT", "DETAIL"),
                           [(p.status + (" (repaired)" if p.repaired else ""), p.what, p.detail)
                            for p in report.problems], indent="  "))
        if any(p.status in ("corrupt", "orphan", "stale-temp") for p in report.unrepaired):
            lines.append("run `conditionsdb check --repair` to quarantine damaged files and remove "
                         "orphans and stale temp files")
        if counts["missing"] or counts["corrupt"]:
            lines.append("restore missing or damaged payload bytes from a backup of the payload directory, "
                         "or upload the same files again")
    cli.emit({"payloads": report.payloads, "blobs": report.blobs, "verified": report.verified,
              "counts": counts, "ok": not report.problems, "problems": report.problems}, "\n".join(lines))
    if report.damaged:
        click.get_current_context().exit(1)
