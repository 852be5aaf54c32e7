"""The writable store interface. One SQLAlchemy implementation (``sql.SqlStore``) backs it
on SQLite and PostgreSQL; the REST client implements it over HTTP.

Every write is one transaction and records an audit entry (who, when, what)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Sequence

from ..iov import IntervalOfValidity
from ..payload import IoVRecord, PayloadInfo, ResolvedPayload
from ..source import MetadataSource
from ..tags import GlobalTagState


@dataclass(frozen=True)
class GlobalTagInfo:
    name: str
    state: GlobalTagState
    description: str = ""
    tag_id: int | None = None
    created: datetime | None = None
    modified: datetime | None = None
    created_by: str | None = None
    modified_by: str | None = None


@dataclass(frozen=True)
class TagDiff:
    """IoVs in one tag and not the other (compared by payload name, revision and IoV)."""

    tag_a: str
    tag_b: str
    only_a: list[IoVRecord] = field(default_factory=list)
    only_b: list[IoVRecord] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.only_a and not self.only_b


@dataclass(frozen=True)
class AuditEntry:
    entry_id: int
    when: datetime
    who: str
    action: str  # e.g. "tag.create", "tag.state", "payload.add", "iov.add", "iov.delete"
    tag: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class TokenInfo:
    """An API token. Only a hash of the secret is stored; the secret is shown once."""

    token_id: int
    name: str  # who the token is for (goes into audit entries)
    scopes: tuple[str, ...]  # "admin", or "iov:<tag glob>" (create IoVs/payloads in matching tags)
    created: datetime | None = None
    revoked: bool = False


class TagCounts(NamedTuple):
    iovs: int
    payload_names: int


class TagVersion(NamedTuple):
    """What a global tag is at one moment: its state and, where the store keeps one, its
    change serial (bumped by every IoV change and every state change). ``tag_id`` and
    ``serial`` are None for stores without serials; equal versions of a tag with a serial
    hold the same IoVs."""

    tag_id: int | None
    state: GlobalTagState
    serial: int | None


class Store(MetadataSource):
    """A conditions store: global tags, payloads, IoVs, audit log and API tokens."""

    read_only: bool = False

    # -- tags -------------------------------------------------------------------------
    @abc.abstractmethod
    def list_tags(self, *, state: GlobalTagState | str | None = None,
                  pattern: str | None = None) -> list[GlobalTagInfo]:
        """All tags, optionally filtered by state and an fnmatch-style name pattern."""

    @abc.abstractmethod
    def get_tag(self, name: str) -> GlobalTagInfo: ...

    @abc.abstractmethod
    def create_tag(self, name: str, description: str = "", *, user: str | None = None) -> GlobalTagInfo:
        """A new OPEN tag. TagExistsError if the name is taken."""

    @abc.abstractmethod
    def modify_tag(self, name: str, *, description: str, user: str | None = None) -> GlobalTagInfo: ...

    @abc.abstractmethod
    def clone_tag(self, source: str, destination: str, *, description: str | None = None,
                  user: str | None = None) -> GlobalTagInfo:
        """A new OPEN tag holding copies of every IoV of ``source``."""

    @abc.abstractmethod
    def set_tag_state(self, name: str, state: GlobalTagState | str, *, user: str | None = None) -> GlobalTagInfo:
        """Move along the lifecycle; TagStateError outside the allowed transitions."""

    # -- versions (for caches in front of the store) -----------------------------------------
    def tag_version(self, tag: str) -> TagVersion:
        """The tag's current version, read from the source now (not from a cache).
        This default has no serial; SqlStore reads state and serial in one query."""
        return TagVersion(None, self.tag_state(tag), None)

    def resolve_versioned(self, tags: Sequence[str] | str, name: str, exp: int, run: int, *,
                          allow_open: bool = False) -> tuple[ResolvedPayload, tuple[TagVersion, ...] | None]:
        """:meth:`resolve`, plus the version of each tag the answer was computed from (in
        the order given), or None where the store cannot tell (this default)."""
        return self.resolve(tags, name, exp, run, allow_open=allow_open), None

    # -- payloads -----------------------------------------------------------------------
    @abc.abstractmethod
    def add_payload(self, name: str, data: str | Path | BinaryIO, *, metadata: dict[str, Any] | None = None,
                    user: str | None = None) -> PayloadInfo:
        """Store bytes as payload ``name``. Identical bytes under the same name return the
        existing revision; new bytes get the next revision."""

    @abc.abstractmethod
    def get_payload(self, name: str, revision: int | None = None) -> PayloadInfo:
        """One revision (the highest when ``revision`` is None); UnknownPayloadError."""

    @abc.abstractmethod
    def list_payloads(self, name: str | None = None) -> list[PayloadInfo]: ...

    # -- IoVs ---------------------------------------------------------------------------
    @abc.abstractmethod
    def add_iov(self, tag: str, name: str, revision: int, iov: IntervalOfValidity, *,
                user: str | None = None) -> IoVRecord:
        """FrozenTagError unless the tag is OPEN, or RUNNING and ``iov`` starts after the last
        run the tag already covers for that payload name."""

    @abc.abstractmethod
    def modify_iov(self, iov_id: int, iov: IntervalOfValidity, *, user: str | None = None) -> IoVRecord: ...

    @abc.abstractmethod
    def delete_iov(self, iov_id: int, *, user: str | None = None) -> IoVRecord: ...

    @abc.abstractmethod
    def diff(self, tag_a: str, tag_b: str, *, exp: int | None = None, run: int | None = None) -> TagDiff: ...

    # -- overviews (for browsing; SqlStore answers each with one query) --------------------
    def tag_counts(self) -> dict[str, TagCounts]:
        """Per tag name: how many IoVs and distinct payload names it holds."""
        counts = {}
        for tag in self.list_tags():
            records = self.iovs(tag.name)
            counts[tag.name] = TagCounts(len(records), len({r.payload.name for r in records}))
        return counts

    def iovs_of_payload(self, name: str, revision: int) -> list[IoVRecord]:
        """Every IoV, in any tag, that uses payload ``name`` revision ``revision``."""
        return [r for tag in self.list_tags() for r in self.iovs(tag.name, name=name)
                if r.payload.revision == revision]

    # -- audit and tokens ----------------------------------------------------------------
    @abc.abstractmethod
    def audit(self, *, tag: str | None = None, limit: int = 100, who: str | None = None) -> list[AuditEntry]:
        """The newest entries first, optionally only those about ``tag`` or made by ``who``."""

    @abc.abstractmethod
    def create_token(self, name: str, scopes: Sequence[str], *, user: str | None = None) -> tuple[TokenInfo, str]:
        """A new token and its secret (returned once, stored only hashed)."""

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenInfo]: ...

    @abc.abstractmethod
    def revoke_token(self, token_id: int, *, user: str | None = None) -> TokenInfo: ...

    @abc.abstractmethod
    def authenticate(self, secret: str) -> TokenInfo | None:
        """The live token whose secret this is, or None."""
