"""Open any metadata source from one string, chain several, and get a verified payload file.

>>> source = open_source("conditions.db")                   # SQLite store (+ conditions.db.payloads/)
>>> source = open_source("postgresql://db.example/conditions")
>>> source = open_source("snapshots/conditions")            # basf2 snapshot directory (metadata.sqlite)
>>> source = open_source("local/database.txt")              # basf2 testing-payloads file
>>> source = open_source("https://conditions.example/")     # REST server (several: comma separated)
>>> chain = open_chain(["local/database.txt", "snapshots/conditions", "conditions.db"])
>>> found = chain.resolve(["PXDBackgroundGenerator"], "PXDBackgroundGenerator_resnet", 0, 1)
>>> path = get_payload_file(chain, found)

How a spec is recognised:

* ``http://`` / ``https://``: the REST client (conditions.client);
* ``postgresql://`` (also ``postgresql+psycopg://``, ``postgres://``): an SQL store;
* ``sqlite:///PATH``, ``file://PATH`` or a plain path to a file: by its first bytes -- an
  SQLite file with application id 0xb2cdb is a basf2 snapshot (read-only), any other
  SQLite file a store; a UTF-8 text file (or an empty ``.txt``) a testing-payloads file;
  an empty file becomes a new store only with ``writable=True``; anything else is
  NotAStoreError;
* a directory: a basf2 snapshot if it holds ``metadata.sqlite``, else a testing-payloads
  directory if it holds ``database.txt`` (what ``b2conditionsdb legacydownload -c``
  writes);
* a path that does not exist: a new SQLite store when ``writable=True``, else NotAStoreError.

``writable=True`` on a snapshot or a testing-payloads file raises ReadOnlyStoreError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .cache import PayloadCache
from .chain import MetadataChain
from .exceptions import NotAStoreError, ReadOnlyStoreError
from .payload import ResolvedPayload
from .snapshot import METADATA_FILE, SnapshotSource, is_snapshot_file
from .source import MetadataSource
from .testing_payloads import TestingPayloadsSource

_SQLITE_MAGIC = b"SQLite format 3\x00"
TESTING_PAYLOADS_FILE = "database.txt"


def open_source(spec: str | Path | MetadataSource, *, payload_dir: str | Path | None = None,
                writable: bool = False, cache: PayloadCache | None = None, offline: bool = False,
                **options: Any) -> MetadataSource:
    """Open the metadata source that ``spec`` names (see the module docstring).

    ``payload_dir``: a store's payload directory (default: derived from the database).
    ``cache``/``offline``: for the REST client, which downloads into the cache.
    ``options``: passed to the store (``cache_ttl``, ...) or the client (``token``,
    ``timeout``, ``retries``, ...).
    """
    if isinstance(spec, MetadataSource):
        if writable and getattr(spec, "read_only", True):
            raise ReadOnlyStoreError(f"{spec.description} cannot be written")
        return spec
    text = str(spec).strip()
    lower = text.lower()
    if lower.startswith(("http://", "https://")):
        return _open_http(text, writable=writable, cache=cache, offline=offline, **options)
    if lower.startswith(("postgresql:", "postgresql+", "postgres:")):
        from .store import open_store

        return open_store(text, payload_dir, **options)
    if lower.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(text).database
        if not database or database == ":memory:":
            raise NotAStoreError(f"{text}: an in-memory SQLite database cannot hold a conditions store")
        return _open_path(Path(database), text, payload_dir, writable, options)
    if lower.startswith("file://"):
        return _open_path(Path(text[len("file://"):]), text, payload_dir, writable, options)
    if "://" in text:
        raise NotAStoreError(f"{text}: unknown kind of source (use a path, sqlite:///, postgresql:// or http(s)://)")
    return _open_path(Path(text).expanduser(), text, payload_dir, writable, options)


def _open_path(path: Path, spec: str, payload_dir, writable: bool, options: dict) -> MetadataSource:
    from .store import open_store

    if path.is_dir():
        if is_snapshot_file(path / METADATA_FILE):
            return _read_only(SnapshotSource(path), writable)
        if (path / TESTING_PAYLOADS_FILE).is_file():
            return _read_only(TestingPayloadsSource(path / TESTING_PAYLOADS_FILE), writable)
        raise NotAStoreError(
            f"{path} is a directory without a basf2 snapshot ({METADATA_FILE}) or a testing-payloads "
            f"file ({TESTING_PAYLOADS_FILE})"
        )
    if not path.exists():
        if writable:
            return open_store(spec if spec.lower().startswith("sqlite:") else path, payload_dir, **options)
        raise NotAStoreError(f"{path}: no such file (pass writable=True to create a new store)")
    try:
        with open(path, "rb") as stream:
            head = stream.read(4096)
    except OSError as error:
        raise NotAStoreError(f"cannot read {path}: {error}") from None
    if not head:
        # An empty file: an empty testing-payloads list, or (only when asked to write) the
        # start of a new store. Reading must never turn a file into a database.
        if path.suffix == ".txt":
            return _read_only(TestingPayloadsSource(path), writable)
        if writable:
            return open_store(spec if spec.lower().startswith("sqlite:") else path, payload_dir, **options)
        raise NotAStoreError(f"{path} is an empty file, not a conditions store")
    if head.startswith(_SQLITE_MAGIC):
        if is_snapshot_file(path):
            return _read_only(SnapshotSource(path), writable)
        return open_store(spec if spec.lower().startswith("sqlite:") else path, payload_dir, **options)
    if _looks_like_text(head):
        return _read_only(TestingPayloadsSource(path), writable)
    raise NotAStoreError(
        f"{path} is neither a conditions store, a basf2 snapshot, nor a testing-payloads file"
    )


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # a multi-byte character cut by the 4096-byte read is still text
        return error.start >= len(head) - 3
    return True


def _read_only(source: MetadataSource, writable: bool) -> MetadataSource:
    if writable:
        source.close()
        raise ReadOnlyStoreError(f"{source.description} is read-only and cannot be opened for writing")
    return source


def _open_http(url: str, *, writable: bool, cache: PayloadCache | None, offline: bool,
               **options: Any) -> MetadataSource:
    # --- HTTP(S): the REST client of conditions.client (owned by the "rest" part) --------
    try:
        from .client import client_from_environment
    except ImportError:
        raise NotAStoreError(f"{url}: HTTP support not installed (conditions.client is missing)") from None
    return client_from_environment(url, cache=cache, offline=offline, **options)


def open_chain(specs: Sequence[str | Path | MetadataSource], **options: Any) -> MetadataChain:
    """Open each spec with :func:`open_source` (same options for all) and chain them in the
    given order (highest priority first). If one fails, those already opened are closed."""
    opened: list[MetadataSource] = []
    try:
        for spec in specs:
            opened.append(open_source(spec, **options))
    except BaseException:
        for source in opened:
            source.close()
        raise
    return MetadataChain(opened)


def get_payload_file(source: MetadataSource, resolved: ResolvedPayload,
                     cache: PayloadCache | None = None) -> Path:
    """The verified local file of a resolved payload (default cache: the user's)."""
    return (cache if cache is not None else PayloadCache()).get(resolved.payload, source)


__all__ = ["get_payload_file", "open_chain", "open_source"]
