"""The resolve fast path: answers that cannot change, kept in the server process.

A PUBLISHED tag's IoVs never change again; a RUNNING tag only gains IoVs that start
after the last run it already covers for that payload name, so a point it already
answers keeps its answer. Hence an answer stays right as long as every tag before the
deciding one is PUBLISHED (they had no match and never will), the deciding tag is
PUBLISHED or RUNNING, and every tag in the list is still usable: only state changes
(to INVALID, mostly) can end that. Each worker remembers tag states for ``state_ttl``
seconds (and forgets a tag at once when it changes it itself), so a tag invalidated
through another worker stops being served from this cache within ``state_ttl``
seconds, well inside the ``max-age`` that proxies may serve answers for anyway.
Answers involving OPEN, TESTING or VALIDATED tags before the decider are never cached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Hashable, Sequence

from ..exceptions import ConditionsError
from ..store.base import Store
from ..tags import PROCESSING_STATES, GlobalTagState


_STABLE_DECIDERS = frozenset({GlobalTagState.PUBLISHED, GlobalTagState.RUNNING})


class ResolveCache:
    def __init__(self, store: Store, *, state_ttl: float = 2.0, max_entries: int = 100_000):
        self._store = store
        self._state_ttl = state_ttl
        self._max_entries = max_entries
        self._states: dict[str, tuple[GlobalTagState, float]] = {}
        #: key -> (index of the deciding tag, JSON answer)
        self._answers: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _still_valid(states: Sequence[GlobalTagState], decider: int, allow_open: bool) -> bool:
        if any(s not in PROCESSING_STATES and not (allow_open and s is GlobalTagState.OPEN) for s in states):
            return False  # the store would refuse the request now
        return (all(s is GlobalTagState.PUBLISHED for s in states[:decider])
                and states[decider] in _STABLE_DECIDERS)

    def lookup(self, key: Hashable, tags: Sequence[str]) -> bytes | None:
        """A cached answer still valid by the tags' states known right now; never blocks on I/O.

        ``key`` is ``(tags, name, exp, run, allow_open)``.
        """
        entry = self._answers.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        states = []
        for tag in tags:
            known = self._states.get(tag)
            if known is None or known[1] < now:
                return None
            states.append(known[0])
        decider, body = entry
        if not self._still_valid(states, decider, key[-1]):
            return None
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
        return body

    def remember(self, key: Hashable, tags: Sequence[str], decider: str, body: bytes) -> None:
        """Keep ``body`` (decided by tag ``decider``) if it cannot change; refreshes stale
        tag states from the store (blocking: call it on the threadpool)."""
        if decider not in tags:
            return
        now = time.monotonic()
        states = []
        for tag in tags:
            known = self._states.get(tag)
            if known is None or known[1] < now:
                try:
                    state = self._store.tag_state(tag)
                except ConditionsError:
                    return
                known = (state, now + self._state_ttl)
                self._states[tag] = known
            states.append(known[0])
        index = list(tags).index(decider)
        if not self._still_valid(states, index, key[-1]):
            return
        with self._lock:
            self._answers[key] = (index, body)
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


class ResolveFastPath:
    """ASGI middleware answering ``GET /api/v1/resolve`` straight from the ResolveCache.

    Only exact repeats of requests that the full handler already validated and answered
    can hit (the cache is filled by that handler only), so skipping FastAPI's parsing
    and validation here changes nothing but the cost: anything unusual (odd parameters,
    a miss, a tag not known PUBLISHED) falls through to the normal route.
    """

    PATH = "/api/v1/resolve"

    def __init__(self, app, cache: ResolveCache, *, max_age: int):
        self.app = app
        self.cache = cache
        self.cache_control = f"public, max-age={max_age}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == self.PATH:
            key = _resolve_key(scope.get("query_string", b""))
            if key is not None:
                body = self.cache.lookup(key, key[0])
                if body is not None:
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"cache-control", self.cache_control),
                    ]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


def _resolve_key(query: bytes):
    """The cache key of a plain resolve query, or None for anything else."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    tags, name, exp, run, allow_open = [], None, None, None, False
    for key, value in pairs:
        if key == "tag":
            tags.append(value)
        elif key in ("name", "exp", "run", "allow_open"):
            if key == "name" and name is None:
                name = value
            elif key == "exp" and exp is None and value.isdigit():
                exp = int(value)
            elif key == "run" and run is None and value.isdigit():
                run = int(value)
            elif key == "allow_open" and value in ("true", "false"):
                allow_open = value == "true"
            else:
                return None
        else:
            return None
    if not tags or name is None or exp is None or run is None:
        return None
    return (tuple(tags), name, exp, run, allow_open)
