"""What a payload is, as seen by readers: immutable metadata plus where to get the bytes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from .iov import IntervalOfValidity

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileHashes:
    md5: str
    sha256: str
    size: int


def hash_stream(stream: BinaryIO) -> FileHashes:
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        md5.update(chunk)
        sha.update(chunk)
        size += len(chunk)
    return FileHashes(md5.hexdigest(), sha.hexdigest(), size)


def hash_file(path: str | Path) -> FileHashes:
    with open(path, "rb") as stream:
        return hash_stream(stream)


@dataclass(frozen=True)
class PayloadInfo:
    """One immutable payload revision.

    ``checksum`` is the MD5 hex digest (the Belle II convention, and all a basf2 snapshot
    knows); ``sha256`` is None only for payloads read from sources that do not record it.
    ``url`` is the payload's location relative to its source's base URL (basf2's
    ``payloadUrl``), or None where the source keeps bytes by content; ``base_url`` that
    base URL (basf2's ``baseUrl``) where the source knows one from which the bytes can be
    downloaded again (a server, or a snapshot that recorded where its payloads came from).
    """

    name: str
    revision: int
    checksum: str
    sha256: str | None = None
    size: int | None = None
    created: datetime | None = None
    creator: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    payload_id: int | None = None
    url: str | None = None
    base_url: str | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """A stable, filesystem-safe identity: name, revision and checksum."""
        return f"{self.name}_r{self.revision}_{self.checksum}"


@dataclass(frozen=True)
class ResolvedPayload:
    """The answer of a resolve: the payload, the IoV that matched, and the tag that decided."""

    payload: PayloadInfo
    iov: IntervalOfValidity
    tag: str
    iov_id: int | None = None
    source: str | None = None  # human-readable name of the metadata source that answered


@dataclass(frozen=True)
class IoVRecord:
    """One IoV row of a tag: which payload revision is valid where (and, where the store
    records it, when and by whom the row was made)."""

    iov_id: int | None
    tag: str
    payload: PayloadInfo
    iov: IntervalOfValidity
    created: datetime | None = field(default=None, compare=False)
    created_by: str | None = field(default=None, compare=False)
