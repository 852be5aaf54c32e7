"""The resolve fast path: answers for PUBLISHED tags, kept in the server process.

A PUBLISHED tag's IoVs can never change again; only its state can (to INVALID). So an
answer computed from PUBLISHED tags only stays right for as long as the tags stay
PUBLISHED. Each worker remembers tag states for ``state_ttl`` seconds (and forgets a
tag at once when it changes it itself), so a tag invalidated through another worker
stops being served from this cache within ``state_ttl`` seconds, well inside the
``max-age`` proxies are allowed anyway. Tags in any other state are never cached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Hashable, Sequence

from ..exceptions import ConditionsError
from ..store.base import Store
from ..tags import GlobalTagState


class ResolveCache:
    def __init__(self, store: Store, *, state_ttl: float = 2.0, max_entries: int = 100_000):
        self._store = store
        self._state_ttl = state_ttl
        self._max_entries = max_entries
        self._states: dict[str, tuple[GlobalTagState, float]] = {}
        self._answers: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, key: Hashable, tags: Sequence[str]) -> bytes | None:
        """A cached answer if every tag is known PUBLISHED right now; never blocks on I/O."""
        now = time.monotonic()
        for tag in tags:
            known = self._states.get(tag)
            if known is None or known[1] < now or known[0] is not GlobalTagState.PUBLISHED:
                return None
        with self._lock:
            body = self._answers.get(key)
            if body is not None:
                self._answers.move_to_end(key)
            return body

    def remember(self, key: Hashable, tags: Sequence[str], body: bytes) -> None:
        """Keep ``body`` if all ``tags`` are PUBLISHED (refreshing stale states; blocking)."""
        now = time.monotonic()
        for tag in tags:
            known = self._states.get(tag)
            if known is None or known[1] < now:
                try:
                    state = self._store.tag_state(tag)
                except ConditionsError:
                    return
                known = (state, now + self._state_ttl)
                self._states[tag] = known
            if known[0] is not GlobalTagState.PUBLISHED:
                return
        with self._lock:
            self._answers[key] = body
            self._answers.move_to_end(key)
            while len(self._answers) > self._max_entries:
                self._answers.popitem(last=False)

    def forget_tag(self, tag: str) -> None:
        """This worker changed ``tag``: stop trusting what it knew about it."""
        self._states.pop(tag, None)

    def clear(self) -> None:
        with self._lock:
            self._states.clear()
            self._answers.clear()
