"""``conditionsdb download``: a basf2-compatible snapshot of global tags (the metadata
SQLite file plus the payload files), like ``b2conditionsdb download``."""

from __future__ import annotations

from pathlib import Path

import click

from .context import CliContext, pass_cli


@click.command(short_help="Global tags as a basf2 snapshot (metadata + payload files).")
@click.argument("tags", nargs=-1, required=True)
@click.option("-o", "--output", "output", required=True, metavar="DIR|FILE",
              type=click.Path(path_type=Path),
              help="Snapshot directory (created if missing), or the metadata file to write, as basf2's "
                   "-o takes it (e.g. conditions/metadata.sqlite): a path ending in .sqlite or .db, or "
                   "an existing file. Payload files go beside the metadata file.")
@click.option("--no-payloads", is_flag=True, help="Write only the metadata file, no payload files.")
@click.option("--append", is_flag=True,
              help="Keep the other tags of an existing snapshot in DIR (a tag downloaded again is replaced).")
@pass_cli
def download(cli: CliContext, tags: tuple[str, ...], output: Path, no_payloads: bool, append: bool):
    """Download global TAGS into DIR as a basf2 snapshot: DIR/metadata.sqlite and the
    payload files in basf2's hashed layout ({md5[:2]}/{name}_r{revision}.root). Use it in
    basf2 with ``conditions.metadata_providers = ["DIR/metadata.sqlite"]`` and
    ``conditions.payload_locations = ["DIR"]``, or here as ``--db DIR``. With -o FILE
    (say ``-o conditions/tags.sqlite``) the metadata file gets that name and the payload
    files go into its directory, as with ``b2conditionsdb download -o``.

    Every file is verified (MD5, and SHA-256 where known) before it is put in place, and
    the metadata file is written last: an interrupted download leaves no unverified file
    and is resumed by running the command again (files already there are checked and
    kept). Without --append, the metadata file is rewritten with just TAGS.
    """
    from ..snapshot import export_snapshot

    directory, metadata_name = snapshot_target(output)
    store = cli.store
    bar = cli.progress(None, "downloading", unit="payload")

    def progress(done: int, total: int, payload) -> None:
        if bar.total != total:
            bar.total = total
        bar.set_postfix_str(f"{payload.name} r{payload.revision}", refresh=False)
        bar.update(done - bar.n)

    with bar:
        report = export_snapshot(store, list(tags), directory, payloads=not no_payloads, progress=progress,
                                 append=append, metadata_name=metadata_name)
    files = "no payload files (--no-payloads)" if no_payloads else (
        f"{report.copied} payload files written, {report.present} already there and verified")
    text = (f"snapshot {report.metadata_file}: {len(report.tags)} tag{'s' if len(report.tags) != 1 else ''} "
            f"({', '.join(report.tags)}), {report.iovs} IoVs, {report.payloads} payloads; {files}")
    cli.emit({"metadata_file": report.metadata_file, "directory": directory, "tags": report.tags,
              "iovs": report.iovs, "payloads": report.payloads, "copied": report.copied,
              "present": report.present, "with_payloads": not no_payloads}, text)


#: Suffixes that make ``-o PATH`` name the metadata file rather than a directory.
METADATA_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def snapshot_target(output: Path) -> tuple[Path, str]:
    """(directory, metadata file name) for ``-o output``: an existing directory, or a path
    without a metadata suffix, is the directory (metadata.sqlite inside); an existing
    file, or a path ending in .sqlite/.sqlite3/.db, is the metadata file itself."""
    from ..snapshot import METADATA_FILE, is_snapshot_file

    if output.is_dir():
        return output, METADATA_FILE
    if output.exists() or output.suffix.lower() in METADATA_SUFFIXES:
        if output.exists() and output.stat().st_size and not is_snapshot_file(output):
            raise click.BadParameter(f"{output} exists and is not a basf2 snapshot metadata file; "
                                     "refusing to overwrite it", param_hint="-o")
        if output.name.startswith("."):
            raise click.BadParameter(f"{output}: the metadata file name must not start with a dot",
                                     param_hint="-o")
        return output.parent if str(output.parent) else Path("."), output.name
    return output, METADATA_FILE
