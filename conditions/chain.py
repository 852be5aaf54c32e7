"""A chain of metadata sources behind one ``resolve`` call.

Typical order, highest priority first: a testing-payloads file (local overrides), a
snapshot, a store, a server. The chain is source-first: each source resolves the whole tag
list its own way (tags in priority order, highest revision within a tag), and the first
source that gives an answer decides.

What lets the next source answer ("falls through"):

* NoPayloadFoundError -- the source knows the tags but has no IoV for the point;
* UnknownTagError -- the source does not hold (all of) the tags. Sources check every tag
  of the list before answering, so a snapshot holding only some of the tags passes the
  whole question on.

What stops the chain (raised at once, no later source is asked):

* UnusableTagError -- a source holds a tag whose state forbids processing (INVALID, or
  OPEN without ``allow_open``). An INVALID tag was invalidated for a reason: a later
  source still holding an older, usable copy of the same tag must not silently take over.
* anything else (InvalidNameError, a broken file, a server that cannot be reached, ...):
  falling back to another source would hide the failure and could give different
  conditions than intended.

When no source answers, the error names every source and why it passed: an
UnknownTagError when every source that holds tags said it does not know them (override
layers such as testing payloads, marked ``holds_tags = False``, do not count), else a
NoPayloadFoundError. Both carry ``reasons``: a list of (source description, error).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Sequence

from .exceptions import ConditionsError, NoPayloadFoundError, UnknownPayloadError, UnknownTagError
from .payload import IoVRecord, PayloadInfo, ResolvedPayload
from .source import MetadataSource
from .tags import GlobalTagState

#: Errors after which the next source in the chain is asked.
FALL_THROUGH = (NoPayloadFoundError, UnknownTagError)


def _payload_key(payload: PayloadInfo) -> tuple[str, int, str]:
    return (payload.name, payload.revision, (payload.checksum or "").lower())


class MetadataChain(MetadataSource):
    """Sources in priority order, answering as one source."""

    def __init__(self, sources: Sequence[MetadataSource], *, description: str | None = None):
        self.sources = list(sources)
        if not self.sources:
            raise ValueError("a metadata chain needs at least one source")
        self.description = description or "chain(" + " -> ".join(s.description for s in self.sources) + ")"
        # which source answered for a payload, so its bytes are taken from there
        self._owners: dict[tuple[str, int, str], MetadataSource] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MetadataChain({self.sources!r})"

    def _remember(self, payload: PayloadInfo, source: MetadataSource) -> None:
        with self._lock:
            self._owners.setdefault(_payload_key(payload), source)

    def owner_of(self, payload: PayloadInfo) -> MetadataSource | None:
        """The source that answered for ``payload`` in this chain, if any did yet."""
        return self._owners.get(_payload_key(payload))

    # -- resolution ---------------------------------------------------------------------
    def resolve(self, tags: Sequence[str] | str, name: str, exp: int, run: int, *,
                allow_open: bool = False) -> ResolvedPayload:
        reasons: list[tuple[str, ConditionsError]] = []
        for source in self.sources:
            try:
                answer = source.resolve(tags, name, exp, run, allow_open=allow_open)
            except FALL_THROUGH as error:
                reasons.append((source.description, error, getattr(source, "holds_tags", True)))
                continue
            self._remember(answer.payload, source)
            if answer.source is None:
                answer = dataclasses.replace(answer, source=source.description)
            return answer
        tag_list = [tags] if isinstance(tags, str) else list(tags)
        raise self._aggregate(
            f"payload {name!r} at experiment {exp}, run {run} with global tag(s) {', '.join(tag_list)}",
            reasons)

    @staticmethod
    def _aggregate(what: str, reasons: list[tuple[str, ConditionsError, bool]]) -> ConditionsError:
        """One error for "nobody answered". Override layers without tags (``holds_tags =
        False``) cannot vouch for a tag name: if every source that holds tags said
        UnknownTag, the tag list itself is wrong (a typo), and that is what is reported."""
        lines = "\n".join(f"  - {where}: {type(err).__name__}: {err}" for where, err, _ in reasons)
        tag_holders = [err for _, err, holds in reasons if holds]
        if tag_holders and all(isinstance(err, UnknownTagError) for err in tag_holders):
            error: ConditionsError = UnknownTagError(f"no source knows the global tag(s) for {what}:\n{lines}")
        else:
            error = NoPayloadFoundError(f"no source has {what}:\n{lines}")
        error.reasons = [(where, err) for where, err, _ in reasons]  # type: ignore[attr-defined]
        return error

    def tag_state(self, tag: str) -> GlobalTagState:
        """The state in the first source that holds ``tag``."""
        reasons = []
        for source in self.sources:
            try:
                return source.tag_state(tag)
            except UnknownTagError as error:
                reasons.append((source.description, error, getattr(source, "holds_tags", True)))
        raise self._aggregate(f"global tag {tag!r}", reasons)

    def iovs(self, tag: str, *, name: str | None = None, exp: int | None = None,
             run: int | None = None) -> list[IoVRecord]:
        """The IoVs of ``tag`` in the first source that holds the tag (override layers
        without tags, such as testing payloads, are not consulted)."""
        reasons = []
        for source in self.sources:
            try:
                source.tag_state(tag)
            except UnknownTagError as error:
                reasons.append((source.description, error, getattr(source, "holds_tags", True)))
                continue
            records = source.iovs(tag, name=name, exp=exp, run=run)
            for record in records:
                self._remember(record.payload, source)
            return records
        raise self._aggregate(f"global tag {tag!r}", reasons)

    # -- bytes ------------------------------------------------------------------------------
    def _ordered_for(self, payload: PayloadInfo) -> list[MetadataSource]:
        owner = self.owner_of(payload)
        if owner is None:
            return list(self.sources)
        return [owner] + [s for s in self.sources if s is not owner]

    def local_path(self, payload: PayloadInfo) -> Path | None:
        owner = self.owner_of(payload)
        if owner is not None:
            return owner.local_path(payload)
        for source in self.sources:
            # The bytes are verified against the MD5 anyway, so any source's local file
            # with this payload will do; a source that cannot even name one is skipped.
            try:
                path = source.local_path(payload)
            except ConditionsError:
                continue
            if path is not None:
                return path
        return None

    def fetch_payload(self, payload: PayloadInfo, destination: Path) -> None:
        """From the source that answered for the payload; if it has lost the bytes, from
        the next source that has them (the cache verifies whatever arrives)."""
        reasons = []
        for source in self._ordered_for(payload):
            try:
                source.fetch_payload(payload, destination)
                return
            except UnknownPayloadError as error:
                reasons.append((source.description, error))
        lines = "\n".join(f"  - {where}: {err}" for where, err in reasons)
        raise UnknownPayloadError(f"no source has the bytes of payload {payload.name} "
                                  f"r{payload.revision}:\n{lines}")

    def close(self) -> None:
        for source in self.sources:
            source.close()
