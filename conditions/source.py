"""The read interface every metadata source offers: stores, snapshots, testing-payload
files, REST clients and chains of them. Resolution goes through one call everywhere."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Sequence

from .payload import IoVRecord, PayloadInfo, ResolvedPayload
from .tags import GlobalTagState


class MetadataSource(abc.ABC):
    """Read-only access to tags, IoVs and payload bytes."""

    #: Human-readable description used in logs ("sqlite:///...", "http://...").
    description: str = "?"

    @abc.abstractmethod
    def tag_state(self, tag: str) -> GlobalTagState:
        """The state of ``tag``; UnknownTagError when there is none."""

    @abc.abstractmethod
    def resolve(
        self,
        tags: Sequence[str] | str,
        name: str,
        exp: int,
        run: int,
        *,
        allow_open: bool = False,
    ) -> ResolvedPayload:
        """The payload ``name`` valid at (exp, run).

        Tags are tried in order (highest priority first); the first tag holding an IoV
        that contains the point decides, and within it the highest revision wins.
        Raises UnknownTagError, UnusableTagError or NoPayloadFoundError, each distinct.
        """

    @abc.abstractmethod
    def iovs(self, tag: str, *, name: str | None = None, exp: int | None = None,
             run: int | None = None) -> list[IoVRecord]:
        """IoVs of ``tag``, optionally only for one payload name and/or one run."""

    @abc.abstractmethod
    def fetch_payload(self, payload: PayloadInfo, destination: Path) -> None:
        """Write the payload's bytes to ``destination`` (unverified; the cache verifies)."""

    def local_path(self, payload: PayloadInfo) -> Path | None:
        """A file already on this machine holding the payload's bytes, if the source has one.

        Returned files are not yet verified: callers go through PayloadCache.
        """
        return None

    def close(self) -> None:
        """Release connections; the source must not be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
