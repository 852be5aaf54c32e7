"""Writable conditions stores: the :class:`Store` interface and its SQL implementation.

>>> store = open_store("conditions.db")                 # SQLite file, payloads in conditions.db.payloads/
>>> store = open_store("postgresql://host/conditions")  # PostgreSQL (psycopg 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import AuditEntry, GlobalTagInfo, Store, TagDiff, TokenInfo
from .blobs import BlobStorage
from .sql import SqlStore, default_payload_dir, normalize_url


def open_store(url: str | Path, payload_dir: str | Path | None = None, *, create: bool = True,
               **options: Any) -> SqlStore:
    """Open the conditions store at ``url`` (a file path, ``sqlite:///PATH`` or
    ``postgresql://...``), creating it and applying schema migrations when ``create``.

    ``payload_dir`` defaults to :func:`default_payload_dir` of the URL. Extra options go
    to :class:`SqlStore` (``cache``, ``cache_ttl``, ``max_payload_size``, ``lock_timeout``
    in seconds: how long a writer waits for another one before ConcurrentModificationError).
    Raises NotAStoreError for anything that is not a store, ReadOnlyStoreError for a basf2
    snapshot file.
    """
    return SqlStore.open(url, payload_dir, create=create, **options)


__all__ = [
    "AuditEntry",
    "BlobStorage",
    "GlobalTagInfo",
    "SqlStore",
    "Store",
    "TagDiff",
    "TokenInfo",
    "default_payload_dir",
    "normalize_url",
    "open_store",
]
