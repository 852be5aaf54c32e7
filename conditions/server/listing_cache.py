"""Answers of IoV listings, kept per worker while the tag is unchanged.

Listing a big tag costs the database query, one object per IoV and the JSON encoding;
hundreds of jobs starting together ask for the same listing. A tag's IoVs change only
together with its change serial (every IoV change and every state change bumps it), so an
answer computed at version (tag id, state, serial) stays right while a fresh read of the
version (one small query) gives the same. Versions only grow: an answer computed just
after a concurrent change is stored under the version read before it, and is then merely
newer than what that version promised.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable

from ..store.base import TagVersion


class ListingCache:
    """At most ``max_entries`` answers and ``max_bytes`` of them, least recently used out."""

    def __init__(self, *, max_entries: int = 256, max_bytes: int = 256 * 1024**2):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._answers: OrderedDict[Hashable, tuple[TagVersion, bytes, dict[str, str]]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: TagVersion) -> tuple[bytes, dict[str, str]] | None:
        with self._lock:
            found = self._answers.get(key)
            if found is None or found[0] != version:
                return None
            self._answers.move_to_end(key)
            return found[1], found[2]

    def put(self, key: Hashable, version: TagVersion, body: bytes, headers: dict[str, str]) -> None:
        if version.serial is None or len(body) > self.max_bytes // 4:
            return  # a store without serials cannot tell changes; a huge answer would crowd out the rest
        with self._lock:
            old = self._answers.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._answers[key] = (version, body, headers)
            self._bytes += len(body)
            while len(self._answers) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped, _) = self._answers.popitem(last=False)
                self._bytes -= len(dropped)
