"""The resolve fast path: answers that cannot change unnoticed, kept in the server process.

A PUBLISHED tag's IoVs never change again; a RUNNING tag only gains IoVs that start
after the last run it already covers for that payload name, so a point it already
answers keeps its answer. A TESTING or VALIDATED tag is frozen too, except that it may
go back to OPEN, be edited and come back: every such step bumps its ``change_serial``, so
its IoVs are the same as long as its (state, serial) is.

Hence an answer stays right as long as every tag before the deciding one has no match
and cannot gain one (PUBLISHED, or TESTING/VALIDATED with the serial the answer was
computed from), the deciding tag is PUBLISHED, RUNNING, or TESTING/VALIDATED with that
serial, and every tag in the list is still usable. The answer remembers, for each
TESTING/VALIDATED tag, the version (tag id, state, serial) of the store rows it was
computed from (``Store.resolve_versioned``), and is served only while the tag's
currently known version equals it. PUBLISHED and RUNNING tags are not pinned to a serial:
a RUNNING tag's serial changes on every append, which does not change answers already
given, and a PUBLISHED tag can only become INVALID (refused by the state check).

Each worker knows tag versions for ``state_ttl`` seconds (read fresh from the database
with ``Store.tag_version``, on the threadpool) and forgets a tag at once when it changes
it itself, so a change made through another worker stops this cache from serving within
``state_ttl`` seconds; after that, misses go to the store, whose own tag-row cache may
answer from the old rows for up to its ``cache_ttl`` (5 s): such answers carry the old
version and are not cached. Answers involving OPEN tags (``allow_open``) are never cached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Hashable, Sequence

from ..exceptions import ConditionsError
from ..store.base import Store, TagVersion
from ..tags import PROCESSING_STATES, GlobalTagState


_STABLE_DECIDERS = frozenset({GlobalTagState.PUBLISHED, GlobalTagState.RUNNING})
#: Frozen while their serial is unchanged (they may go back to OPEN and be edited).
_PINNED_STATES = frozenset({GlobalTagState.TESTING, GlobalTagState.VALIDATED})

#: Per tag of an answer: the version it must still have, or None (not pinned).
Pins = tuple[TagVersion | None, ...]


class ResolveCache:
    def __init__(self, store: Store, *, state_ttl: float = 2.0, max_entries: int = 100_000):
        self._store = store
        self._state_ttl = state_ttl
        self._max_entries = max_entries
        #: tag -> (version read from the store, monotonic time it expires)
        self._versions: dict[str, tuple[TagVersion, float]] = {}
        #: key -> (index of the deciding tag, pins, JSON answer)
        self._answers: OrderedDict[Hashable, tuple[int, Pins, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _still_valid(versions: Sequence[TagVersion], pins: Pins, decider: int, allow_open: bool) -> bool:
        """Whether an answer decided by tag ``decider`` with ``pins`` is right for tags now at
        ``versions``."""
        if any(v.state not in PROCESSING_STATES and not (allow_open and v.state is GlobalTagState.OPEN)
               for v in versions):
            return False  # the store would refuse the request now
        for index, (version, pin) in enumerate(zip(versions, pins)):
            if pin is not None:
                if version != pin:
                    return False  # edited (or moved on) since the answer was computed
            elif index < decider:
                if version.state is not GlobalTagState.PUBLISHED:
                    return False  # might gain a match for this point
            elif index == decider:
                if version.state not in _STABLE_DECIDERS:
                    return False
        return True

    def lookup(self, key: Hashable, tags: Sequence[str]) -> bytes | None:
        """A cached answer still valid by the tag versions known right now; never blocks on I/O.

        ``key`` is ``(tags, name, exp, run, allow_open)``.
        """
        entry = self._answers.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        versions = []
        for tag in tags:
            known = self._versions.get(tag)
            if known is None or known[1] < now:
                return None
            versions.append(known[0])
        decider, pins, body = entry
        if not self._still_valid(versions, pins, decider, key[-1]):
            return None
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
        return body

    def remember(self, key: Hashable, tags: Sequence[str], decider: str, body: bytes,
                 used: Sequence[TagVersion] | None = None) -> None:
        """Keep ``body`` (decided by tag ``decider``, computed from tag rows at versions
        ``used`` when the store can tell) if it cannot change unnoticed; refreshes stale
        tag versions from the store (blocking: call it on the threadpool)."""
        if decider not in tags or (used is not None and len(used) != len(tags)):
            return
        now = time.monotonic()
        versions = []
        for tag in tags:
            known = self._versions.get(tag)
            if known is None or known[1] < now:
                try:
                    version = self._store.tag_version(tag)
                except ConditionsError:
                    return
                known = (version, now + self._state_ttl)
                self._versions[tag] = known
            versions.append(known[0])
        index = list(tags).index(decider)
        if used is None:
            # The store cannot say what the answer was computed from: only unpinned rules.
            pins: Pins = (None,) * len(tags)
        else:
            pins = tuple(v if v.state in _PINNED_STATES and v.serial is not None else None for v in used)
            # The rows behind the answer must themselves qualify: a PUBLISHED tag whose
            # answer came from a stale TESTING row (the store caches rows for a few
            # seconds) must not be cached as if it were PUBLISHED content.
            if not self._still_valid(used, pins, index, key[-1]):
                return
        if not self._still_valid(versions, pins, index, key[-1]):
            return
        with self._lock:
            self._answers[key] = (index, pins, body)
            self._answers.move_to_end(key)
            while len(self._answers) > self._max_entries:
                self._answers.popitem(last=False)

    def forget_tag(self, tag: str) -> None:
        """This worker changed ``tag``: stop trusting what it knew about it."""
        self._versions.pop(tag, None)

    def clear(self) -> None:
        with self._lock:
            self._versions.clear()
            self._answers.clear()


class ResolveFastPath:
    """ASGI middleware answering ``GET /api/v1/resolve`` straight from the ResolveCache.

    Only exact repeats of requests that the full handler already validated and answered
    can hit (the cache is filled by that handler only), so skipping FastAPI's parsing
    and validation here changes nothing but the cost: anything unusual (odd parameters,
    a miss, a tag whose known state or version no longer fits) falls through to the normal route.
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
