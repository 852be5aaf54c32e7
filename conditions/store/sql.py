"""The conditions store on SQLAlchemy 2: one implementation for SQLite and PostgreSQL.

Transactions and concurrency
----------------------------
Every write runs in exactly one database transaction. Writers that touch a global tag
first take a lock on that tag: ``SELECT ... FOR UPDATE`` on its row on PostgreSQL, and
``BEGIN IMMEDIATE`` (the database write lock, taken up front) on SQLite. Two writers to
one tag therefore serialise: the second sees the first's IoVs before it checks the
RUNNING append rule, so no race can rewrite the past or lose an update. Revisions of a
payload name are serialised the same way (an advisory lock on the name on PostgreSQL).
When a lock cannot be had in time, or the database reports a deadlock, the caller gets
ConcurrentModificationError and may retry; nothing has been written.

Payload bytes go to the content-addressed :class:`BlobStorage` *before* the database row
is committed, under a per-blob file lock; if the database write fails the blob is
removed again unless another payload row already uses the same bytes.

Resolution and the in-process cache
-----------------------------------
Resolving reads the tag rows (state and ``change_serial``) and the IoVs of one payload
name. For tags in OPEN or RUNNING state (whose IoVs may change at any moment) both are
read from the database on every call: never stale. For tags in the other states the IoVs
can change only after a transition back to OPEN, which bumps ``change_serial``; the store
caches their tag rows for ``cache_ttl`` seconds (default 5) and keeps, per
``(tag, change_serial, payload name)``, a sorted list of elementary run ranges with the
winning IoV of each, so a warm resolve is a few dict look-ups and one bisect. The price is
that a state change of a frozen tag made by *another* process (PUBLISHED -> INVALID,
TESTING -> OPEN) is seen here up to ``cache_ttl`` seconds late. Pass ``cache_ttl=0`` to
re-read the tag row on every call (the IoV index is still reused while the serial is
unchanged), or ``cache=False`` to always query the database.
"""

from __future__ import annotations

import bisect
import fnmatch
import getpass
import hashlib
import heapq
import io
import json
import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence, TypeVar

import filelock
import platformdirs
from sqlalchemy import BigInteger, and_, bindparam, create_engine, distinct, event, exc as sa_exc, func, insert, inspect, or_, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session

from ..exceptions import (
    ConcurrentModificationError,
    ConditionsError,
    InvalidIoVError,
    InvalidMetadataError,
    InvalidValueError,
    NoPayloadFoundError,
    NotAStoreError,
    ReadOnlyStoreError,
    TagExistsError,
    FrozenTagError,
    UnknownIoVError,
    UnknownPayloadError,
    UnknownTagError,
    UnknownTokenError,
)
from ..iov import IntervalOfValidity
from ..metadata import decode_metadata, encode_metadata
from ..payload import IoVRecord, PayloadInfo, ResolvedPayload
from ..tags import (
    GlobalTagState,
    check_transition,
    check_usable,
    validate_payload_name,
    validate_tag_name,
)
from .base import AuditEntry, GlobalTagInfo, Store, TagCounts, TagDiff, TagVersion, TokenInfo
from .blobs import BlobStorage, StagedBlob
from .tables import UNBOUNDED, AuditRow, GlobalTagRow, IoVRow, PayloadRow, TokenRow, utcnow

T = TypeVar("T")

#: ``PRAGMA application_id`` of a basf2 snapshot ("metadata file"): read-only for us.
BASF2_SNAPSHOT_APPLICATION_ID = 0xB2CDB
#: ``PRAGMA application_id`` we give SQLite stores ("COND"), so tools can tell them apart.
STORE_APPLICATION_ID = 0x434F4E44

_SQLITE_HEADER = b"SQLite format 3\x00"
_EXTENSION = re.compile(r"^[A-Za-z0-9]{1,16}$")
_SCOPE = re.compile(r"^(admin|iov:[A-Za-z0-9+\-_:*?\[\]!]+)$")

#: IoV contents of tags in these states cannot change without a state change first.
_CACHEABLE_STATES = frozenset(
    {GlobalTagState.TESTING, GlobalTagState.VALIDATED, GlobalTagState.PUBLISHED, GlobalTagState.INVALID}
)

_WRITE_ATTEMPTS = 5
#: Seconds a writer waits for another writer's lock before ConcurrentModificationError.
DEFAULT_LOCK_TIMEOUT = 30.0


def current_user() -> str:
    """The OS user name, the default author of audit entries."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry, no env vars: containers do this
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


# ---------------------------------------------------------------------------------------
# URLs and payload directories
# ---------------------------------------------------------------------------------------

def normalize_url(url: str | Path | URL) -> URL:
    """A SQLAlchemy URL for a store location: a plain path or ``sqlite:///path`` (SQLite),
    or ``postgresql://...`` (PostgreSQL through psycopg 3)."""
    if isinstance(url, URL):
        parsed = url
    elif isinstance(url, Path) or "://" not in str(url):
        path = Path(str(url)).expanduser()
        if not str(url).strip():
            raise NotAStoreError("empty store location: give a file path, sqlite:///PATH or postgresql://...")
        return URL.create("sqlite", database=str(path.resolve()))
    else:
        try:
            parsed = make_url(str(url))
        except sa_exc.ArgumentError as error:
            raise NotAStoreError(f"cannot parse store URL {url!r}: {error}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or database.startswith("file:"):
            raise NotAStoreError(
                f"store URL {url!s} does not name a database file; use sqlite:///PATH "
                "(a store needs a file so that its payload directory can sit beside it)"
            )
        return parsed.set(drivername="sqlite", database=str(Path(database).expanduser().resolve()))
    if backend in ("postgresql", "postgres"):
        # Plain postgresql:// (and the old postgres:// spelling) means psycopg 3 here;
        # an explicitly named driver is kept.
        if parsed.drivername in ("postgresql", "postgres", "postgres+psycopg"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    raise NotAStoreError(
        f"unsupported store URL {str(url)!r}: use a file path, sqlite:///PATH or postgresql://..."
    )


def describe_url(url: URL) -> str:
    """A printable store location without passwords."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{url.database}"
    return url.set(drivername="postgresql").render_as_string(hide_password=True)


def default_payload_dir(url: str | Path | URL) -> Path:
    """Where a store keeps its payload bytes unless told otherwise.

    SQLite ``X.db`` -> sibling directory ``X.db.payloads``. PostgreSQL -> a directory in
    the user's data dir named after host, port and database, so every command on this
    machine that is given the same URL finds the same payloads.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = Path(parsed.database)
        return database.with_name(database.name + ".payloads")
    host = parsed.host or parsed.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    port = parsed.port or parsed.query.get("port") or 5432
    if isinstance(port, tuple):
        port = port[0]
    dbname = parsed.database or parsed.username or "postgres"
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{host}_{port}_{dbname}").strip("_.") or "postgresql"
    return Path(platformdirs.user_data_dir("conditionsdb")) / "payloads" / label


# ---------------------------------------------------------------------------------------
# The resolve index (in-process cache of frozen tags)
# ---------------------------------------------------------------------------------------

def _point_after(point: tuple[int, int]) -> tuple[int, int] | None:
    exp, run = point
    if run >= UNBOUNDED:
        return None if exp >= UNBOUNDED else (exp + 1, 0)
    return (exp, run + 1)


class _ResolveIndex:
    """The IoVs of one payload name in one tag as elementary run ranges, each with the
    IoV that wins there (highest revision, then newest IoV). Lookup is one bisect; the
    answer objects are built on first use (most IoVs of a big tag are never asked for)."""

    __slots__ = ("starts", "winners", "_rows", "_answers", "_make_answer")

    def __init__(self, entries: list[tuple[tuple[int, int], tuple[int, int], tuple[int, int], Any]],
                 make_answer: Callable[[Any], ResolvedPayload]):
        # entries: (lower, upper, rank, row); the highest rank wins where IoVs overlap.
        boundaries: set[tuple[int, int]] = set()
        for lower, upper, _rank, _row in entries:
            boundaries.add(lower)
            after = _point_after(upper)
            if after is not None:
                boundaries.add(after)
        ordered = sorted(entries, key=lambda e: e[0])
        heap: list[tuple[tuple[int, int], int]] = []
        starts: list[tuple[int, int]] = []
        winners: list[int] = []
        j = 0
        for boundary in sorted(boundaries):
            while j < len(ordered) and ordered[j][0] <= boundary:
                rank = ordered[j][2]
                heapq.heappush(heap, ((-rank[0], -rank[1]), j))
                j += 1
            # lazy deletion: an expired IoV only matters once it reaches the top
            while heap and ordered[heap[0][1]][1] < boundary:
                heapq.heappop(heap)
            winner = heap[0][1] if heap else -1
            if winners and winners[-1] == winner:
                continue
            starts.append(boundary)
            winners.append(winner)
        self.starts = starts
        self.winners = winners
        self._rows = [e[3] for e in ordered]
        self._answers: list[ResolvedPayload | None] = [None] * len(ordered)
        self._make_answer = make_answer

    def lookup(self, exp: int, run: int) -> ResolvedPayload | None:
        i = bisect.bisect_right(self.starts, (exp, run)) - 1
        if i < 0:
            return None
        winner = self.winners[i]
        if winner < 0:
            return None
        answer = self._answers[winner]
        if answer is None:
            answer = self._answers[winner] = self._make_answer(self._rows[winner])
        return answer


@dataclass(frozen=True)
class _TagRowCache:
    tag_id: int
    name: str
    state: GlobalTagState
    serial: int
    fetched: float


# ---------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------

class SqlStore(Store):
    """A conditions store in an SQL database plus a payload directory.

    Open one with :func:`conditions.store.open_store` (or :meth:`SqlStore.open`), which
    checks the location is really a store and applies pending migrations.
    """

    def __init__(self, engine: Engine, blobs: BlobStorage, *, description: str,
                 cache: bool = True, cache_ttl: float = 5.0, max_payload_size: int | None = None,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT):
        self.engine = engine
        self.blobs = blobs
        self.description = description
        self.payload_dir = blobs.root
        self.cache_enabled = cache
        self.cache_ttl = cache_ttl
        self.max_payload_size = max_payload_size
        self.lock_timeout = lock_timeout
        self._is_sqlite = engine.dialect.name == "sqlite"
        self._tag_cache: dict[str, _TagRowCache] = {}
        self._index_cache: dict[tuple[int, int, str], _ResolveIndex] = {}

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | Path | URL, payload_dir: str | Path | None = None, *, create: bool = True,
             **options: Any) -> "SqlStore":
        """Open (and with ``create``, create or upgrade) the store at ``url``.

        NotAStoreError when the location is not a conditions store; ReadOnlyStoreError for a
        basf2 snapshot, which is opened with the snapshot reader instead.
        """
        parsed = normalize_url(url)
        description = describe_url(parsed)
        if parsed.get_backend_name() == "sqlite":
            _check_sqlite_file(Path(parsed.database), create=create)
            engine = _sqlite_engine(parsed, options.get("lock_timeout", DEFAULT_LOCK_TIMEOUT))
        else:
            engine = create_engine(parsed, pool_pre_ping=True)
        _guard_against_fork(engine)
        try:
            _prepare_schema(engine, description, create=create)
        except BaseException:
            engine.dispose()
            raise
        directory = Path(payload_dir) if payload_dir is not None else default_payload_dir(parsed)
        try:
            blobs = BlobStorage(directory, create=True)
            # Only what is surely dead (a day old); `conditionsdb check --repair` goes further.
            blobs.remove_stale_temp_files(max_age=24 * 3600)
        except OSError as error:
            engine.dispose()
            raise NotAStoreError(f"cannot use payload directory {directory} for {description}: {error}") from None
        return cls(engine, blobs, description=description, **options)

    def close(self) -> None:
        self.engine.dispose()
        self._tag_cache.clear()
        self._index_cache.clear()

    def __repr__(self) -> str:
        return f"SqlStore({self.description!r}, payload_dir={str(self.payload_dir)!r})"

    # -- transactions -----------------------------------------------------------------------
    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        with self.engine.connect() as conn:
            if write and self._is_sqlite:
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with Session(bind=conn, expire_on_commit=False, autoflush=True) as session:
                with session.begin():
                    if write and not self._is_sqlite:
                        # Wait at most lock_timeout for another writer's row lock, then
                        # fail with ConcurrentModificationError instead of hanging.
                        session.execute(text(f"SET LOCAL lock_timeout = {int(self.lock_timeout * 1000)}"))
                    yield session

    def _write(self, work: Callable[[Session], T], *, tags: Sequence[str] = ()) -> T:
        """Run ``work`` in one write transaction, retrying races the database detected
        (a unique constraint hit by a concurrent writer) and mapping lock timeouts and
        deadlocks to ConcurrentModificationError."""
        try:
            for attempt in range(_WRITE_ATTEMPTS):
                try:
                    with self._session(write=True) as session:
                        return work(session)
                except sa_exc.IntegrityError as error:
                    # Another writer inserted the same unique key first; the next attempt
                    # sees its row and takes the ordinary path (existing payload, next
                    # revision, TagExistsError, ...).
                    if attempt + 1 == _WRITE_ATTEMPTS:
                        raise ConcurrentModificationError(
                            f"concurrent writers kept conflicting on {self.description}; retry ({error.orig})"
                        ) from None
                    time.sleep(0.01 * (attempt + 1))
                except sa_exc.OperationalError as error:
                    if _is_lock_error(error):
                        raise ConcurrentModificationError(
                            f"{self.description} is busy with another writer (lock not available in "
                            f"time: {error.orig}); nothing was written, retry the operation"
                        ) from None
                    raise
            raise AssertionError("unreachable")
        finally:
            for tag in tags:
                self._tag_cache.pop(tag, None)

    def _lock_tag(self, session: Session, name: str) -> GlobalTagRow:
        row = session.scalars(
            select(GlobalTagRow).where(GlobalTagRow.name == name).with_for_update()
        ).one_or_none()
        if row is None:
            raise UnknownTagError(f"no global tag named {name!r} in {self.description}")
        return row

    def _lock_payload_name(self, session: Session, name: str) -> None:
        # SQLite writers are already serialised by BEGIN IMMEDIATE.
        if not self._is_sqlite:
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": "payload:" + name})

    def _audit(self, session: Session, who: str, action: str, tag: str | None, details: dict[str, Any]) -> None:
        session.add(AuditRow(at=utcnow(), who=who, action=action, tag=tag,
                             details_json=json.dumps(details, sort_keys=True, default=str)))

    # -- read interface -----------------------------------------------------------------------
    def tag_state(self, tag: str) -> GlobalTagState:
        return self.get_tag(tag).state

    def tag_version(self, tag: str) -> TagVersion:
        """State and change serial of ``tag`` read from the database now (one small query,
        never from the resolve cache)."""
        with self.engine.connect() as conn:
            row = conn.execute(_TAG_ROW_QUERY, {"tag": tag}).one_or_none()
        if row is None:
            raise UnknownTagError(f"no global tag named {tag!r} in {self.description}")
        return TagVersion(row.id, GlobalTagState(row.state), row.change_serial)

    def resolve(self, tags: Sequence[str] | str, name: str, exp: int, run: int, *,
                allow_open: bool = False) -> ResolvedPayload:
        return self._resolve(tags, name, exp, run, allow_open)[0]

    def resolve_versioned(self, tags: Sequence[str] | str, name: str, exp: int, run: int, *,
                          allow_open: bool = False) -> tuple[ResolvedPayload, tuple[TagVersion, ...]]:
        """:meth:`resolve` plus the tag rows it used, which may be up to ``cache_ttl`` old.

        The answer is never older than these versions: the IoVs of a tag are read (or an
        index built under that exact serial is reused) after its row, so a version equal
        to one read fresh later proves the answer is still current."""
        answer, rows = self._resolve(tags, name, exp, run, allow_open)
        return answer, tuple(TagVersion(row.tag_id, row.state, row.serial) for row in rows)

    def _resolve(self, tags: Sequence[str] | str, name: str, exp: int, run: int,
                 allow_open: bool) -> tuple[ResolvedPayload, list[_TagRowCache]]:
        tag_names = [tags] if isinstance(tags, str) else list(tags)
        if not tag_names:
            raise UnknownTagError("no global tag given to resolve against")
        _check_point(exp, run)
        now = time.monotonic()
        with _LazyConnection(self.engine) as lazy:
            rows = [self._tag_row(lazy, tag, now) for tag in tag_names]
            for row in rows:
                check_usable(row.name, row.state, allow_open=allow_open)
            for row in rows:
                if self.cache_enabled and row.state in _CACHEABLE_STATES:
                    index = self._index_cache.get((row.tag_id, row.serial, name))
                    if index is None:
                        index = self._load_index(lazy, row, name)
                    answer = index.lookup(exp, run)
                else:
                    answer = self._query_point(lazy.get(), row, name, exp, run)
                if answer is not None:
                    return answer, rows
        raise NoPayloadFoundError(
            f"no IoV of payload {name!r} covers experiment {exp}, run {run} in global tag(s) "
            f"{', '.join(tag_names)} ({self.description})"
        )

    def _tag_row(self, lazy: "_LazyConnection", tag: str, now: float) -> _TagRowCache:
        cached = self._tag_cache.get(tag)
        if (cached is not None and self.cache_enabled and cached.state in _CACHEABLE_STATES
                and now - cached.fetched < self.cache_ttl):
            return cached
        row = lazy.get().execute(_TAG_ROW_QUERY, {"tag": tag}).one_or_none()
        if row is None:
            if not isinstance(tag, str):
                raise UnknownTagError(f"global tag names are strings, got {tag!r}")
            raise UnknownTagError(f"no global tag named {tag!r} in {self.description}")
        entry = _TagRowCache(row.id, tag, GlobalTagState(row.state), row.change_serial, now)
        if self.cache_enabled:
            self._tag_cache[tag] = entry
        return entry

    def _load_index(self, lazy: "_LazyConnection", row: _TagRowCache, name: str) -> _ResolveIndex:
        conn = lazy.get()
        # The index is cached under the serial it was built from. The serial is read again
        # after the IoVs: if a writer slipped in between (possible on PostgreSQL, where
        # each statement sees the latest commit), this answer is used once, not cached.
        records = conn.execute(_TAG_IOVS_QUERY, {"tag_id": row.tag_id, "name": name}).all()
        serial = conn.execute(_TAG_SERIAL_QUERY, {"tag_id": row.tag_id}).scalar_one_or_none()
        # plain tuples: (iov id, first exp, first run, final exp, final run, upper exp,
        # upper run, payload id, revision); attribute access on 1,000 rows costs more.
        rows = [tuple(r) for r in records]
        ids = sorted({r[7] for r in rows})
        payloads = {}
        for chunk in _chunks(ids, 500):
            for p in conn.execute(_PAYLOADS_BY_ID_QUERY, {"ids": chunk}):
                payloads[p.payload_id] = _payload_info(p)
        description = self.description

        def make_answer(r) -> ResolvedPayload:
            return ResolvedPayload(payload=payloads[r[7]], iov=IntervalOfValidity(r[1], r[2], r[3], r[4]),
                                   tag=row.name, iov_id=r[0], source=description)

        entries = [((r[1], r[2]), (r[5], r[6]), (r[8], r[0]), r) for r in rows]
        index = _ResolveIndex(entries, make_answer)
        if serial == row.serial:
            if len(self._index_cache) > 4096:
                self._index_cache.clear()
            self._index_cache[(row.tag_id, row.serial, name)] = index
        return index

    def _query_point(self, conn: Connection, row: _TagRowCache, name: str, exp: int, run: int) -> ResolvedPayload | None:
        r = conn.execute(_POINT_QUERY, {"tag_id": row.tag_id, "name": name, "exp": exp, "run": run}).one_or_none()
        if r is None:
            return None
        return ResolvedPayload(
            payload=_payload_info(r), iov=IntervalOfValidity(r.first_exp, r.first_run, r.final_exp, r.final_run),
            tag=row.name, iov_id=r.id, source=self.description,
        )

    def iovs(self, tag: str, *, name: str | None = None, exp: int | None = None,
             run: int | None = None) -> list[IoVRecord]:
        window = _query_window(exp, run)
        with self._session(write=False) as session:
            tag_row = self._get_tag_row(session, tag)
            return self._iov_records(session, tag_row, name=name, window=window)

    def iovs_page(self, tag: str, *, name: str | None = None, exp: int | None = None, run: int | None = None,
                  limit: int, offset: int = 0) -> list[IoVRecord]:
        """One page of :meth:`iovs` (same order): at most ``limit`` records from ``offset``.
        The database does the slicing, so a page of a huge tag costs a page."""
        window = _query_window(exp, run)
        with self._session(write=False) as session:
            tag_row = self._get_tag_row(session, tag)
            return self._iov_records(session, tag_row, name=name, window=window, limit=limit, offset=offset)

    def _iov_records(self, session: Session, tag_row: GlobalTagRow, *, name: str | None = None,
                     window: IntervalOfValidity | None = None, limit: int | None = None,
                     offset: int = 0) -> list[IoVRecord]:
        i, p = IoVRow.__table__.c, PayloadRow.__table__.c
        query = (
            select(i.id, i.first_exp, i.first_run, i.final_exp, i.final_run, i.created.label("iov_created"),
                   i.created_by.label("iov_created_by"), *_payload_columns(p))
            .join(PayloadRow.__table__, p.id == i.payload_id)
            .where(i.tag_id == tag_row.id)
            .order_by(i.payload_name, i.first_exp, i.first_run, p.revision, i.id)
        )
        if name is not None:
            query = query.where(i.payload_name == name)
        if window is not None:
            lo_e, lo_r = window.lower
            up_e, up_r = window.upper
            # overlap: iov.lower <= window.upper and window.lower <= iov.upper. The first_*
            # columns are 32-bit, so an unbounded window end is spelt as "no condition".
            if up_e < UNBOUNDED:
                if up_r < UNBOUNDED:
                    query = query.where(or_(i.first_exp < up_e, and_(i.first_exp == up_e, i.first_run <= up_r)))
                else:
                    query = query.where(i.first_exp <= up_e)
            query = query.where(or_(i.upper_exp > lo_e, and_(i.upper_exp == lo_e, i.upper_run >= lo_r)))
        if limit is not None:
            query = query.limit(limit).offset(offset)
        records = []
        for r in session.execute(query):
            records.append(IoVRecord(
                iov_id=r.id, tag=tag_row.name, payload=_payload_info(r),
                iov=IntervalOfValidity(r.first_exp, r.first_run, r.final_exp, r.final_run),
                created=r.iov_created, created_by=r.iov_created_by,
            ))
        return records

    def fetch_payload(self, payload: PayloadInfo, destination: Path) -> None:
        sha = self._sha256_of(payload)
        if not self.blobs.exists(sha):
            raise UnknownPayloadError(
                f"the bytes of payload {payload.name} r{payload.revision} are missing from "
                f"{self.payload_dir}; restore the payload directory of {self.description}"
            )
        self.blobs.copy_to(sha, destination)

    def local_path(self, payload: PayloadInfo) -> Path | None:
        try:
            sha = self._sha256_of(payload)
        except UnknownPayloadError:
            return None
        path = self.blobs.path_for(sha)
        return path if path.is_file() else None

    def verified_path(self, payload: PayloadInfo) -> Path:
        """The blob of ``payload`` after checking its size, MD5 and SHA-256 against the
        database; ChecksumMismatchError when the file is damaged or missing."""
        stored = self.get_payload(payload.name, payload.revision)
        if payload.checksum and stored.checksum != payload.checksum:
            raise UnknownPayloadError(
                f"payload {payload.name} r{payload.revision} in {self.description} has checksum "
                f"{stored.checksum}, not {payload.checksum}: it is a different payload"
            )
        return self.blobs.verify(stored.sha256, stored.checksum, stored.size)

    def _sha256_of(self, payload: PayloadInfo) -> str:
        if payload.sha256:
            return payload.sha256
        stored = self.get_payload(payload.name, payload.revision)
        if payload.checksum and stored.checksum != payload.checksum:
            raise UnknownPayloadError(
                f"payload {payload.name} r{payload.revision} with checksum {payload.checksum} "
                f"is not in {self.description}"
            )
        return stored.sha256

    # -- tags -----------------------------------------------------------------------------------
    def list_tags(self, *, state: GlobalTagState | str | None = None,
                  pattern: str | None = None) -> list[GlobalTagInfo]:
        wanted = GlobalTagState.parse(state) if state is not None else None
        with self._session(write=False) as session:
            query = select(GlobalTagRow).order_by(GlobalTagRow.name)
            if wanted is not None:
                query = query.where(GlobalTagRow.state == wanted.value)
            rows = session.scalars(query).all()
            infos = [_tag_info(r) for r in rows]
        if pattern:
            infos = [t for t in infos if fnmatch.fnmatchcase(t.name, pattern)]
        return infos

    def get_tag(self, name: str) -> GlobalTagInfo:
        with self._session(write=False) as session:
            return _tag_info(self._get_tag_row(session, name))

    def _get_tag_row(self, session: Session, name: str) -> GlobalTagRow:
        row = session.scalars(select(GlobalTagRow).where(GlobalTagRow.name == name)).one_or_none()
        if row is None:
            raise UnknownTagError(f"no global tag named {name!r} in {self.description}")
        return row

    def create_tag(self, name: str, description: str = "", *, user: str | None = None) -> GlobalTagInfo:
        validate_tag_name(name)
        description = _check_description(description)
        who = user or current_user()

        def work(session: Session) -> GlobalTagInfo:
            if session.scalars(select(GlobalTagRow.id).where(GlobalTagRow.name == name)).first() is not None:
                raise TagExistsError(f"global tag {name!r} already exists in {self.description}")
            now = utcnow()
            row = GlobalTagRow(name=name, description=description, state=GlobalTagState.OPEN.value,
                               change_serial=0, created=now, modified=now, created_by=who, modified_by=who)
            session.add(row)
            session.flush()
            self._audit(session, who, "tag.create", name, {"description": description})
            return _tag_info(row)

        return self._write(work, tags=[name])

    def modify_tag(self, name: str, *, description: str, user: str | None = None) -> GlobalTagInfo:
        description = _check_description(description)
        who = user or current_user()

        def work(session: Session) -> GlobalTagInfo:
            row = self._lock_tag(session, name)
            old = row.description
            row.description = description
            row.modified, row.modified_by = utcnow(), who
            self._audit(session, who, "tag.modify", name, {"description": description, "previous": old})
            session.flush()
            return _tag_info(row)

        return self._write(work, tags=[name])

    def clone_tag(self, source: str, destination: str, *, description: str | None = None,
                  user: str | None = None) -> GlobalTagInfo:
        validate_tag_name(destination)
        who = user or current_user()
        text_ = _check_description(description if description is not None else f"clone of {source}")

        def work(session: Session) -> GlobalTagInfo:
            src = self._lock_tag(session, source)
            if session.scalars(select(GlobalTagRow.id).where(GlobalTagRow.name == destination)).first() is not None:
                raise TagExistsError(f"global tag {destination!r} already exists in {self.description}")
            now = utcnow()
            dst = GlobalTagRow(name=destination, description=text_, state=GlobalTagState.OPEN.value,
                               change_serial=0, created=now, modified=now, created_by=who, modified_by=who)
            session.add(dst)
            session.flush()
            count = 0
            for iov in session.scalars(select(IoVRow).where(IoVRow.tag_id == src.id).order_by(IoVRow.id)):
                session.add(IoVRow(
                    tag_id=dst.id, payload_id=iov.payload_id, payload_name=iov.payload_name,
                    first_exp=iov.first_exp, first_run=iov.first_run, final_exp=iov.final_exp,
                    final_run=iov.final_run, upper_exp=iov.upper_exp, upper_run=iov.upper_run,
                    created=now, created_by=who,
                ))
                count += 1
            self._audit(session, who, "tag.clone", destination, {"source": source, "iovs": count})
            session.flush()
            return _tag_info(dst)

        return self._write(work, tags=[source, destination])

    def set_tag_state(self, name: str, state: GlobalTagState | str, *, user: str | None = None) -> GlobalTagInfo:
        new = GlobalTagState.parse(state)
        who = user or current_user()

        def work(session: Session) -> GlobalTagInfo:
            row = self._lock_tag(session, name)
            current = GlobalTagState(row.state)
            check_transition(name, current, new)
            row.state = new.value
            row.change_serial += 1
            row.modified, row.modified_by = utcnow(), who
            self._audit(session, who, "tag.state", name, {"from": current.value, "to": new.value})
            session.flush()
            return _tag_info(row)

        return self._write(work, tags=[name])

    # -- payloads ---------------------------------------------------------------------------------
    def add_payload(self, name: str, data: str | Path | BinaryIO | bytes, *,
                    metadata: dict[str, Any] | None = None, user: str | None = None,
                    filename: str | None = None) -> PayloadInfo:
        """Store bytes as payload ``name`` (see :meth:`Store.add_payload`).

        ``filename`` (default: the name of the given file) is kept in the metadata and its
        extension becomes that of the basf2-style ``url`` (``bin`` when it has none)."""
        return self._store_payload(name, data, metadata=metadata, user=user, filename=filename)[0]

    def upload(self, tag: str, name: str, data: str | Path | BinaryIO | bytes, iov: IntervalOfValidity, *,
               metadata: dict[str, Any] | None = None, user: str | None = None,
               filename: str | None = None) -> IoVRecord:
        """Add a payload and an IoV for it in ``tag`` in one transaction: if the IoV is
        refused (frozen tag, RUNNING rule, ...) no new payload revision is created either."""
        validate_tag_name(tag)
        if not isinstance(iov, IntervalOfValidity):
            raise InvalidIoVError(f"expected an IntervalOfValidity, got {iov!r}")
        return self._store_payload(name, data, metadata=metadata, user=user, filename=filename,
                                   iov_tag=tag, iov=iov)[1]

    def _store_payload(self, name, data, *, metadata, user, filename, iov_tag=None, iov=None):
        validate_payload_name(name)
        who = user or current_user()
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidMetadataError(f"payload metadata must be a JSON object, got {type(metadata).__name__}")
        meta = dict(metadata or {})
        if filename is None:
            if isinstance(data, (str, Path)):
                filename = Path(data).name
            elif isinstance(getattr(data, "name", None), str):
                filename = Path(data.name).name
        if filename:
            meta.setdefault("filename", str(filename))
        # Depth and size are checked before any byte is staged or row written.
        meta_json = encode_metadata(meta)
        suffix = Path(filename).suffix[1:] if filename else ""
        extension = suffix if _EXTENSION.match(suffix) else "bin"
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = io.BytesIO(bytes(data))

        if isinstance(data, StagedBlob):
            # Already written into our temp area and hashed (a server upload): renamed
            # into place, never copied again.
            staged = data
        else:
            staged = self.blobs.stage(data, max_size=self.max_payload_size)
        hashes = staged.hashes
        try:
            with self.blobs.lock(hashes.sha256):
                created_blob = self.blobs.publish(staged)
                try:
                    def work(session: Session):
                        payload = self._insert_payload(session, name, hashes, extension, meta_json, who)
                        record = None
                        if iov_tag is not None:
                            record = self._insert_iov(session, iov_tag, payload, iov, who)
                        return payload, record

                    return self._write(work, tags=[iov_tag] if iov_tag else [])
                except BaseException:
                    if created_blob and not self._blob_referenced(hashes.sha256):
                        self.blobs.remove(hashes.sha256)
                    raise
        except filelock.Timeout:
            raise ConcurrentModificationError(
                f"another process has been writing the same payload bytes ({hashes.sha256[:12]}...) "
                "for too long; retry"
            ) from None
        finally:
            self.blobs.discard(staged)

    def _insert_payload(self, session: Session, name: str, hashes, extension: str, meta_json: str,
                        who: str) -> PayloadInfo:
        self._lock_payload_name(session, name)
        existing = session.scalars(
            select(PayloadRow).where(PayloadRow.name == name, PayloadRow.sha256 == hashes.sha256)
        ).one_or_none()
        if existing is not None:
            return _payload_info_from_row(existing)
        latest = session.scalar(select(func.max(PayloadRow.revision)).where(PayloadRow.name == name))
        revision = (latest or 0) + 1
        row = PayloadRow(
            name=name, revision=revision, checksum=hashes.md5, sha256=hashes.sha256, size=hashes.size,
            url=f"{hashes.md5[:2]}/{name}_r{revision}.{extension}", metadata_json=meta_json,
            created=utcnow(), creator=who,
        )
        session.add(row)
        session.flush()
        self._audit(session, who, "payload.add", None,
                    {"name": name, "revision": revision, "checksum": hashes.md5, "size": hashes.size})
        return _payload_info_from_row(row)

    def _blob_referenced(self, sha256: str) -> bool:
        try:
            with self._session(write=False) as session:
                return session.scalars(select(PayloadRow.id).where(PayloadRow.sha256 == sha256)).first() is not None
        except sa_exc.SQLAlchemyError:
            return True  # cannot tell: keep the blob (an orphan is harmless, a lost blob is not)

    def get_payload(self, name: str, revision: int | None = None) -> PayloadInfo:
        validate_payload_name(name)
        with self._session(write=False) as session:
            query = select(PayloadRow).where(PayloadRow.name == name)
            if revision is None:
                query = query.order_by(PayloadRow.revision.desc()).limit(1)
            else:
                query = query.where(PayloadRow.revision == revision)
            row = session.scalars(query).first()
            if row is None:
                which = f"{name!r}" if revision is None else f"{name!r} revision {revision}"
                raise UnknownPayloadError(f"no payload {which} in {self.description}")
            return _payload_info_from_row(row)

    def payload_by_url(self, url: str) -> PayloadInfo:
        """The payload whose basf2-style relative location is ``url`` (UnknownPayloadError)."""
        with self._session(write=False) as session:
            row = session.scalars(select(PayloadRow).where(PayloadRow.url == url)).one_or_none()
            if row is None:
                raise UnknownPayloadError(f"no payload at {url!r} in {self.description}")
            return _payload_info_from_row(row)

    def payload_by_id(self, payload_id: int) -> PayloadInfo:
        """The payload with this database id (basf2's ``payloadId``); UnknownPayloadError."""
        with self._session(write=False) as session:
            row = session.get(PayloadRow, payload_id)
            if row is None:
                raise UnknownPayloadError(f"no payload with id {payload_id} in {self.description}")
            return _payload_info_from_row(row)

    def tag_by_id(self, tag_id: int) -> GlobalTagInfo:
        """The global tag with this database id (basf2's ``globalTagId``); UnknownTagError."""
        with self._session(write=False) as session:
            row = session.get(GlobalTagRow, tag_id)
            if row is None:
                raise UnknownTagError(f"no global tag with id {tag_id} in {self.description}")
            return _tag_info(row)

    def payload_counts(self, tags: Sequence[str] | None = None) -> dict[str, int]:
        """Per tag name (every tag, or those in ``tags``), how many distinct payload
        revisions its IoVs use (basf2's ``payloadCount``), in one query; tags without IoVs
        are absent."""
        i, t = IoVRow.__table__.c, GlobalTagRow.__table__.c
        query = (select(t.name, func.count(distinct(i.payload_id)))
                 .join(IoVRow.__table__, i.tag_id == t.id).group_by(t.name))
        if tags is not None:
            query = query.where(t.name.in_(list(tags)))
        with self._session(write=False) as session:
            return {name: int(count) for name, count in session.execute(query)}

    def list_payloads(self, name: str | None = None) -> list[PayloadInfo]:
        return self.payloads_page(name)

    def payloads_page(self, name: str | None = None, *, limit: int | None = None,
                      offset: int = 0) -> list[PayloadInfo]:
        """:meth:`list_payloads`, or one page of it (``limit`` records from ``offset``)."""
        with self._session(write=False) as session:
            query = select(PayloadRow).order_by(PayloadRow.name, PayloadRow.revision)
            if name is not None:
                query = query.where(PayloadRow.name == name)
            if limit is not None:
                query = query.limit(limit).offset(offset)
            return [_payload_info_from_row(r) for r in session.scalars(query)]

    # -- IoVs -----------------------------------------------------------------------------------
    def add_iov(self, tag: str, name: str, revision: int, iov: IntervalOfValidity, *,
                user: str | None = None) -> IoVRecord:
        validate_payload_name(name)
        if not isinstance(iov, IntervalOfValidity):
            raise InvalidIoVError(f"expected an IntervalOfValidity, got {iov!r}")
        who = user or current_user()

        def work(session: Session) -> IoVRecord:
            tag_row = self._lock_tag(session, tag)  # before anything else: serialises writers
            payload = session.scalars(
                select(PayloadRow).where(PayloadRow.name == name, PayloadRow.revision == revision)
            ).one_or_none()
            if payload is None:
                raise UnknownPayloadError(f"no payload {name!r} revision {revision} in {self.description}")
            return self._insert_iov(session, tag, _payload_info_from_row(payload), iov, who, tag_row=tag_row)

        return self._write(work, tags=[tag])

    def add_iovs(self, tag: str, items: Sequence[tuple[str, int, IntervalOfValidity]], *,
                 user: str | None = None) -> list[IoVRecord]:
        """Add many IoVs ``(payload name, revision, iov)`` to ``tag`` in one transaction:
        all or none. The same rules as :meth:`add_iov` apply, in the given order (in a
        RUNNING tag each IoV must start after the previous ones of its name). IoVs already
        in the tag are returned as they are, not added twice."""
        items = list(items)
        for name, revision, iov in items:
            validate_payload_name(name)
            if not isinstance(iov, IntervalOfValidity):
                raise InvalidIoVError(f"expected an IntervalOfValidity, got {iov!r}")
            if isinstance(revision, bool) or not isinstance(revision, int):
                raise InvalidValueError(f"a payload revision is an integer, got {revision!r}")
        who = user or current_user()

        def work(session: Session) -> list[IoVRecord]:
            tag_row = self._lock_tag(session, tag)
            state = GlobalTagState(tag_row.state)
            if state not in (GlobalTagState.OPEN, GlobalTagState.RUNNING):
                raise FrozenTagError(
                    f"global tag {tag!r} is {state.value}: its IoVs cannot change (only OPEN tags, and "
                    "appends to RUNNING tags, are allowed); clone it to make changes"
                )
            names = sorted({name for name, _, _ in items})
            payloads: dict[tuple[str, int], PayloadInfo] = {}
            for chunk in _chunks(names, 500):
                for row in session.scalars(select(PayloadRow).where(PayloadRow.name.in_(chunk))):
                    payloads[(row.name, row.revision)] = _payload_info_from_row(row)
            existing: dict[tuple[int, tuple[int, int, int, int]], int] = {}
            last: dict[str, tuple[int, int]] = {}
            for chunk in _chunks(names, 500):
                for r in session.execute(
                    select(IoVRow.id, IoVRow.payload_id, IoVRow.payload_name, IoVRow.first_exp, IoVRow.first_run,
                           IoVRow.final_exp, IoVRow.final_run, IoVRow.upper_exp, IoVRow.upper_run)
                    .where(IoVRow.tag_id == tag_row.id, IoVRow.payload_name.in_(chunk))
                ):
                    existing[(r.payload_id, (r.first_exp, r.first_run, r.final_exp, r.final_run))] = r.id
                    last[r.payload_name] = max(last.get(r.payload_name, (-1, -1)), (r.upper_exp, r.upper_run))
            now = utcnow()
            records: list[IoVRecord | None] = []
            new_rows: list[dict[str, Any]] = []
            for name, revision, iov in items:
                payload = payloads.get((name, revision))
                if payload is None:
                    raise UnknownPayloadError(f"no payload {name!r} revision {revision} in {self.description}")
                key = (payload.payload_id, iov.as_tuple())
                if key in existing:
                    records.append(IoVRecord(existing[key], tag, payload, iov))
                    continue
                if state is GlobalTagState.RUNNING and name in last and iov.lower <= last[name]:
                    raise FrozenTagError(
                        f"global tag {tag!r} is RUNNING: new IoVs of {name!r} must start after the last run "
                        f"it already covers; {iov} would rewrite the past"
                    )
                last[name] = max(last.get(name, (-1, -1)), iov.upper)
                existing[key] = -1  # a duplicate within the batch is added once
                new_rows.append(dict(tag_id=tag_row.id, payload_id=payload.payload_id, payload_name=name,
                                     first_exp=iov.first_exp, first_run=iov.first_run, final_exp=iov.final_exp,
                                     final_run=iov.final_run, upper_exp=iov.upper[0], upper_run=iov.upper[1],
                                     created=now, created_by=who))
                records.append(None)
            if new_rows:
                table = IoVRow.__table__
                ids = session.execute(
                    insert(table).returning(table.c.id, sort_by_parameter_order=True), new_rows
                ).scalars().all()
                new_ids = iter(ids)
                for index, (name, revision, iov) in enumerate(items):
                    if records[index] is None:
                        iov_id = next(new_ids, None)
                        records[index] = IoVRecord(iov_id, tag, payloads[(name, revision)], iov)
                tag_row.change_serial += 1
                tag_row.modified, tag_row.modified_by = now, who
                self._audit(session, who, "iov.add", tag, {"count": len(new_rows), "names": names})
            # a duplicate inside the batch points at the id of its first occurrence
            by_key = {(r.payload.payload_id, r.iov.as_tuple()): r.iov_id for r in records if r.iov_id not in (None, -1)}
            result = []
            for r in records:
                if r.iov_id in (None, -1):
                    r = IoVRecord(by_key[(r.payload.payload_id, r.iov.as_tuple())], r.tag, r.payload, r.iov)
                result.append(r)
            session.flush()
            return result

        return self._write(work, tags=[tag])

    def _insert_iov(self, session: Session, tag: str, payload: PayloadInfo, iov: IntervalOfValidity,
                    who: str, tag_row: GlobalTagRow | None = None) -> IoVRecord:
        if tag_row is None:
            tag_row = self._lock_tag(session, tag)
        state = GlobalTagState(tag_row.state)
        if state is GlobalTagState.RUNNING:
            uppers = session.execute(
                select(IoVRow.upper_exp, IoVRow.upper_run)
                .where(IoVRow.tag_id == tag_row.id, IoVRow.payload_name == payload.name)
            ).all()
            if uppers:
                last = max((u.upper_exp, u.upper_run) for u in uppers)
                if iov.lower <= last:
                    shown = IntervalOfValidity._from_points((0, 0), last)
                    raise FrozenTagError(
                        f"global tag {tag!r} is RUNNING: new IoVs of {payload.name!r} must start after "
                        f"the last run it already covers (exp {shown.final_exp}, run {shown.final_run}); "
                        f"{iov} would rewrite the past"
                    )
        elif state is not GlobalTagState.OPEN:
            raise FrozenTagError(
                f"global tag {tag!r} is {state.value}: its IoVs cannot change (only OPEN tags, and "
                "appends to RUNNING tags, are allowed); clone it to make changes"
            )
        existing = session.scalars(select(IoVRow).where(
            IoVRow.tag_id == tag_row.id, IoVRow.payload_id == payload.payload_id,
            IoVRow.first_exp == iov.first_exp, IoVRow.first_run == iov.first_run,
            IoVRow.final_exp == iov.final_exp, IoVRow.final_run == iov.final_run,
        )).first()
        if existing is not None:
            # Adding the same IoV twice is a retry, not a second IoV.
            return IoVRecord(existing.id, tag, payload, iov)
        upper_exp, upper_run = iov.upper
        row = IoVRow(tag_id=tag_row.id, payload_id=payload.payload_id, payload_name=payload.name,
                     first_exp=iov.first_exp, first_run=iov.first_run, final_exp=iov.final_exp,
                     final_run=iov.final_run, upper_exp=upper_exp, upper_run=upper_run,
                     created=utcnow(), created_by=who)
        session.add(row)
        tag_row.change_serial += 1
        tag_row.modified, tag_row.modified_by = utcnow(), who
        session.flush()
        self._audit(session, who, "iov.add", tag, {"iov_id": row.id, "name": payload.name,
                                                   "revision": payload.revision, "iov": str(iov)})
        return IoVRecord(row.id, tag, payload, iov)

    def _locked_iov(self, session: Session, iov_id: int) -> tuple[IoVRow, GlobalTagRow]:
        if isinstance(iov_id, bool) or not isinstance(iov_id, int):
            raise UnknownIoVError(f"IoV ids are integers, got {iov_id!r}")
        tag_id = session.scalar(select(IoVRow.tag_id).where(IoVRow.id == iov_id))
        if tag_id is None:
            raise UnknownIoVError(f"no IoV with id {iov_id} in {self.description}")
        tag_row = session.scalars(select(GlobalTagRow).where(GlobalTagRow.id == tag_id).with_for_update()).one()
        row = session.get(IoVRow, iov_id)
        if row is None:  # deleted while we waited for the lock
            raise UnknownIoVError(f"no IoV with id {iov_id} in {self.description}")
        state = GlobalTagState(tag_row.state)
        if state is not GlobalTagState.OPEN:
            raise FrozenTagError(
                f"global tag {tag_row.name!r} is {state.value}: existing IoVs can only be changed "
                "while it is OPEN; clone it to make changes"
            )
        return row, tag_row

    def modify_iov(self, iov_id: int, iov: IntervalOfValidity, *, user: str | None = None) -> IoVRecord:
        if not isinstance(iov, IntervalOfValidity):
            raise InvalidIoVError(f"expected an IntervalOfValidity, got {iov!r}")
        who = user or current_user()
        touched: list[str] = []

        def work(session: Session) -> IoVRecord:
            row, tag_row = self._locked_iov(session, iov_id)
            touched.append(tag_row.name)
            old = IntervalOfValidity(row.first_exp, row.first_run, row.final_exp, row.final_run)
            row.first_exp, row.first_run, row.final_exp, row.final_run = iov.as_tuple()
            row.upper_exp, row.upper_run = iov.upper
            tag_row.change_serial += 1
            tag_row.modified, tag_row.modified_by = utcnow(), who
            payload = session.get(PayloadRow, row.payload_id)
            self._audit(session, who, "iov.modify", tag_row.name,
                        {"iov_id": iov_id, "name": row.payload_name, "from": str(old), "to": str(iov)})
            session.flush()
            return IoVRecord(iov_id, tag_row.name, _payload_info_from_row(payload), iov)

        try:
            return self._write(work)
        finally:
            for name in touched:
                self._tag_cache.pop(name, None)

    def delete_iov(self, iov_id: int, *, user: str | None = None) -> IoVRecord:
        who = user or current_user()
        touched: list[str] = []

        def work(session: Session) -> IoVRecord:
            row, tag_row = self._locked_iov(session, iov_id)
            touched.append(tag_row.name)
            old = IntervalOfValidity(row.first_exp, row.first_run, row.final_exp, row.final_run)
            payload = session.get(PayloadRow, row.payload_id)
            record = IoVRecord(iov_id, tag_row.name, _payload_info_from_row(payload), old)
            session.delete(row)
            tag_row.change_serial += 1
            tag_row.modified, tag_row.modified_by = utcnow(), who
            self._audit(session, who, "iov.delete", tag_row.name,
                        {"iov_id": iov_id, "name": payload.name, "revision": payload.revision, "iov": str(old)})
            session.flush()
            return record

        try:
            return self._write(work)
        finally:
            for name in touched:
                self._tag_cache.pop(name, None)

    def diff(self, tag_a: str, tag_b: str, *, exp: int | None = None, run: int | None = None) -> TagDiff:
        window = _query_window(exp, run)
        with self._session(write=False) as session:
            a = self._iov_records(session, self._get_tag_row(session, tag_a), window=window)
            b = self._iov_records(session, self._get_tag_row(session, tag_b), window=window)

        def key(r: IoVRecord):
            return (r.payload.name, r.payload.revision, r.iov.as_tuple())

        # A multiset difference, so a duplicated IoV on one side shows up once.
        remaining_b: dict[tuple, int] = {}
        for r in b:
            remaining_b[key(r)] = remaining_b.get(key(r), 0) + 1
        only_a = []
        for r in a:
            k = key(r)
            if remaining_b.get(k, 0) > 0:
                remaining_b[k] -= 1
            else:
                only_a.append(r)
        remaining_a: dict[tuple, int] = {}
        for r in a:
            remaining_a[key(r)] = remaining_a.get(key(r), 0) + 1
        only_b = []
        for r in b:
            k = key(r)
            if remaining_a.get(k, 0) > 0:
                remaining_a[k] -= 1
            else:
                only_b.append(r)
        return TagDiff(tag_a, tag_b, only_a, only_b)

    # -- overviews -----------------------------------------------------------------------------
    def tag_counts(self) -> dict[str, TagCounts]:
        i, t = IoVRow.__table__.c, GlobalTagRow.__table__.c
        query = (select(t.name, func.count(i.id), func.count(distinct(i.payload_name)))
                 .select_from(GlobalTagRow.__table__.outerjoin(IoVRow.__table__, i.tag_id == t.id))
                 .group_by(t.name))
        with self._session(write=False) as session:
            return {name: TagCounts(n_iovs, n_names) for name, n_iovs, n_names in session.execute(query)}

    def iovs_of_payload(self, name: str, revision: int) -> list[IoVRecord]:
        i, p, t = IoVRow.__table__.c, PayloadRow.__table__.c, GlobalTagRow.__table__.c
        query = (
            select(t.name.label("tag_name"), i.id, i.first_exp, i.first_run, i.final_exp, i.final_run,
                   *_payload_columns(p))
            .join(PayloadRow.__table__, p.id == i.payload_id)
            .join(GlobalTagRow.__table__, t.id == i.tag_id)
            .where(p.name == name, p.revision == revision)
            .order_by(t.name, i.first_exp, i.first_run, i.id)
        )
        with self._session(write=False) as session:
            return [IoVRecord(iov_id=r.id, tag=r.tag_name, payload=_payload_info(r),
                              iov=IntervalOfValidity(r.first_exp, r.first_run, r.final_exp, r.final_run))
                    for r in session.execute(query)]

    # -- audit and tokens -----------------------------------------------------------------------
    def audit(self, *, tag: str | None = None, limit: int = 100, who: str | None = None) -> list[AuditEntry]:
        with self._session(write=False) as session:
            query = select(AuditRow).order_by(AuditRow.id.desc()).limit(max(0, int(limit)))
            if tag is not None:
                query = query.where(AuditRow.tag == tag)
            if who is not None:
                query = query.where(AuditRow.who == who)
            return [
                AuditEntry(entry_id=r.id, when=r.at, who=r.who, action=r.action, tag=r.tag,
                           details=json.loads(r.details_json))
                for r in session.scalars(query)
            ]

    def create_token(self, name: str, scopes: Sequence[str], *, user: str | None = None) -> tuple[TokenInfo, str]:
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidValueError(f"a token needs the name of its holder (1 to 200 characters), got {name!r}")
        if isinstance(scopes, str):
            scopes = [scopes]
        scopes = tuple(scopes)
        if not scopes:
            raise InvalidValueError("a token needs at least one scope: 'admin' or 'iov:<tag pattern>'")
        for scope in scopes:
            if not isinstance(scope, str) or not _SCOPE.match(scope):
                raise InvalidValueError(f"invalid token scope {scope!r}: use 'admin' or 'iov:<tag pattern>'")
        who = user or current_user()
        secret = "cdb_" + secrets.token_urlsafe(32)

        def work(session: Session) -> TokenInfo:
            row = TokenRow(name=name, scopes_json=json.dumps(list(scopes)), secret_hash=_hash_secret(secret),
                           created=utcnow(), created_by=who, revoked=False)
            session.add(row)
            session.flush()
            self._audit(session, who, "token.create", None, {"token_id": row.id, "name": name,
                                                             "scopes": list(scopes)})
            return _token_info(row)

        return self._write(work), secret

    def list_tokens(self) -> list[TokenInfo]:
        with self._session(write=False) as session:
            return [_token_info(r) for r in session.scalars(select(TokenRow).order_by(TokenRow.id))]

    def revoke_token(self, token_id: int, *, user: str | None = None) -> TokenInfo:
        who = user or current_user()

        def work(session: Session) -> TokenInfo:
            row = session.scalars(select(TokenRow).where(TokenRow.id == token_id).with_for_update()).one_or_none()
            if row is None:
                raise UnknownTokenError(f"no API token with id {token_id} in {self.description}")
            if not row.revoked:
                row.revoked, row.revoked_at = True, utcnow()
                self._audit(session, who, "token.revoke", None, {"token_id": token_id, "name": row.name})
            session.flush()
            return _token_info(row)

        return self._write(work)

    def authenticate(self, secret: str) -> TokenInfo | None:
        if not isinstance(secret, str) or not secret:
            return None
        with self._session(write=False) as session:
            row = session.scalars(
                select(TokenRow).where(TokenRow.secret_hash == _hash_secret(secret), TokenRow.revoked.is_(False))
            ).one_or_none()
            return _token_info(row) if row is not None else None


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

class _LazyConnection:
    """Checks a connection out of the pool only when a query is really needed, so a fully
    cached resolve never touches the database."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._conn: Connection | None = None

    def get(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
            self._conn.begin()  # one snapshot for everything this resolve reads
        return self._conn

    def __enter__(self) -> "_LazyConnection":
        return self

    def __exit__(self, *exc) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            finally:
                self._conn.close()


def _chunks(values: list, size: int):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _payload_columns(p):
    return (p.id.label("payload_id"), p.name, p.revision, p.checksum, p.sha256, p.size, p.url,
            p.metadata_json, p.created, p.creator)


def _build_resolve_queries():
    """The statements of the resolve path, built once: constructing a SQLAlchemy statement
    costs more than running it on SQLite."""
    i, p, t = IoVRow.__table__.c, PayloadRow.__table__.c, GlobalTagRow.__table__.c
    tag_row = select(t.id, t.state, t.change_serial).where(t.name == bindparam("tag"))
    serial = select(t.change_serial).where(t.id == bindparam("tag_id"))
    iov_columns = (i.id, i.first_exp, i.first_run, i.final_exp, i.final_run, i.upper_exp, i.upper_run)
    joined = select(*iov_columns, *_payload_columns(p)).join(PayloadRow.__table__, p.id == i.payload_id)
    where_tag_name = (i.tag_id == bindparam("tag_id"), i.payload_name == bindparam("name"))
    # For the index: the IoVs with just the payload id and revision; the few distinct
    # payloads are read separately, not once per IoV.
    tag_iovs = (select(*iov_columns, i.payload_id, p.revision)
                .join(PayloadRow.__table__, p.id == i.payload_id).where(*where_tag_name))
    payloads = select(*_payload_columns(p)).where(p.id.in_(bindparam("ids", expanding=True)))
    exp, run = bindparam("exp", type_=BigInteger), bindparam("run", type_=BigInteger)
    # "lower <= (exp, run) <= upper", written so the leading column of each condition
    # is a plain range an index can use.
    point = (
        joined.where(
            *where_tag_name,
            i.first_exp <= exp,
            or_(i.first_exp < exp, i.first_run <= run),
            i.upper_exp >= exp,
            or_(i.upper_exp > exp, i.upper_run >= run),
        )
        .order_by(p.revision.desc(), i.id.desc())
        .limit(1)
    )
    return tag_row, serial, tag_iovs, payloads, point


def _payload_info(r) -> PayloadInfo:
    return PayloadInfo(name=r.name, revision=r.revision, checksum=r.checksum, sha256=r.sha256, size=r.size,
                       created=r.created, creator=r.creator, metadata=decode_metadata(r.metadata_json),
                       payload_id=r.payload_id, url=r.url)


def _payload_info_from_row(row: PayloadRow) -> PayloadInfo:
    return PayloadInfo(name=row.name, revision=row.revision, checksum=row.checksum, sha256=row.sha256,
                       size=row.size, created=row.created, creator=row.creator,
                       metadata=decode_metadata(row.metadata_json), payload_id=row.id, url=row.url)


_TAG_ROW_QUERY, _TAG_SERIAL_QUERY, _TAG_IOVS_QUERY, _PAYLOADS_BY_ID_QUERY, _POINT_QUERY = _build_resolve_queries()


def _tag_info(row: GlobalTagRow) -> GlobalTagInfo:
    return GlobalTagInfo(name=row.name, state=GlobalTagState(row.state), description=row.description,
                         tag_id=row.id, created=row.created, modified=row.modified,
                         created_by=row.created_by, modified_by=row.modified_by)


def _token_info(row: TokenRow) -> TokenInfo:
    return TokenInfo(token_id=row.id, name=row.name, scopes=tuple(json.loads(row.scopes_json)),
                     created=row.created, revoked=row.revoked)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _check_description(description: object) -> str:
    if description is None:
        return ""
    if not isinstance(description, str):
        raise InvalidValueError(f"a tag description is text, got {description!r}")
    return description


def _check_point(exp: object, run: object) -> None:
    for label, value in (("experiment", exp), ("run", run)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidValueError(f"{label} must be an integer >= 0, got {value!r}")


def _query_window(exp: int | None, run: int | None) -> IntervalOfValidity | None:
    if exp is None and run is None:
        return None
    if exp is None:
        raise InvalidValueError("a run number needs an experiment number too")
    if run is None:
        _check_point(exp, 0)
        return IntervalOfValidity(exp, 0, exp, -1)
    _check_point(exp, run)
    return IntervalOfValidity(exp, run, exp, run)


def _is_lock_error(error: sa_exc.OperationalError) -> bool:
    message = str(error.orig).lower()
    if "database is locked" in message or "database table is locked" in message or "busy" in message:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    # 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available
    return sqlstate in ("40001", "40P01", "55P03")


def _check_sqlite_file(path: Path, *, create: bool) -> None:
    if path.is_dir():
        raise NotAStoreError(f"{path} is a directory, not a conditions store database file")
    if not path.exists():
        if not create:
            raise NotAStoreError(f"no conditions store at {path} (the file does not exist)")
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    try:
        with open(path, "rb") as stream:
            header = stream.read(100)
    except OSError as error:
        raise NotAStoreError(f"cannot read {path}: {error}") from None
    if not header:
        if not create:
            # Only a command that creates stores may turn an empty file into one: a read
            # (or a server) pointed at it by mistake must not leave a new store behind.
            raise NotAStoreError(
                f"{path} is an empty file, not a conditions store; create a store there with "
                f"`conditionsdb --db {path} tag create NAME` if that is what you want"
            )
        return  # an empty file is an empty SQLite database: it becomes a store
    if len(header) < 100 or not header.startswith(_SQLITE_HEADER):
        raise NotAStoreError(
            f"{path} is not a conditions store: it is not an SQLite database at all "
            "(wrong file header). Check the --db path"
        )
    application_id = int.from_bytes(header[68:72], "big")
    if application_id == BASF2_SNAPSHOT_APPLICATION_ID:
        raise ReadOnlyStoreError(
            f"{path} is a basf2 conditions snapshot (metadata file), which is read-only: open it "
            "as a snapshot (conditions.snapshot) to read it, or export into a store to edit"
        )
    if application_id not in (0, STORE_APPLICATION_ID):
        raise NotAStoreError(
            f"{path} is an SQLite database of another application (application_id "
            f"{application_id:#x}), not a conditions store"
        )


def _sqlite_engine(url: URL, lock_timeout: float) -> Engine:
    engine = create_engine(url, connect_args={"timeout": lock_timeout, "check_same_thread": False})
    busy_ms = int(lock_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # We issue BEGIN ourselves (below): the sqlite3 module's implicit transactions
        # would defeat BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode")
            if cursor.fetchone()[0].lower() != "wal":
                try:
                    cursor.execute("PRAGMA journal_mode = WAL")
                except Exception:  # another connection is busy; WAL gets set next time
                    pass
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _guard_against_fork(engine: Engine) -> None:
    """Never reuse a pooled connection in a forked child (SQLAlchemy's documented recipe)."""

    @event.listens_for(engine, "connect")
    def _remember_pid(_dbapi_connection, record):
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _check_pid(_dbapi_connection, record, proxy):
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise sa_exc.DisconnectionError("connection belongs to another process")


def _prepare_schema(engine: Engine, description: str, *, create: bool) -> None:
    from . import migrations

    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn:
            if sqlite:
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if not sqlite:
                    # Two processes opening a fresh database must not both create tables.
                    conn.execute(text("SELECT pg_advisory_xact_lock(7253001)"))
                tables = set(inspect(conn).get_table_names())
                version = None
                if "alembic_version" in tables:
                    version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                if version == migrations.HEAD and "global_tags" in tables:
                    return
                if tables and ("alembic_version" not in tables or "global_tags" not in tables):
                    shown = ", ".join(sorted(tables)[:8])
                    raise NotAStoreError(
                        f"{description} is a database, but not a conditions store (it holds the tables "
                        f"{shown}); point --db at a store or at an empty database"
                    )
                if version is not None and version not in _known_revisions():
                    raise NotAStoreError(
                        f"{description} has schema revision {version!r}, newer than this software "
                        "knows; upgrade the conditions package"
                    )
                if not create and version is None:
                    # An empty database: only commands that create a store initialise one.
                    # (An existing store at an older schema revision is still upgraded.)
                    raise NotAStoreError(f"{description} is an empty database, not an initialised conditions store")
                _run_migrations(conn)
                if sqlite:
                    conn.exec_driver_sql(f"PRAGMA application_id = {STORE_APPLICATION_ID}")
    except sa_exc.DatabaseError as error:
        message = str(error.orig)
        if sqlite and ("not a database" in message or "malformed" in message):
            raise NotAStoreError(f"{description} is not a conditions store: {message}") from None
        raise NotAStoreError(f"cannot open {description}: {message.strip()}") from None


def _run_migrations(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    from . import migrations

    config = Config()
    config.set_main_option("script_location", migrations.SCRIPT_LOCATION)
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


def _known_revisions() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from . import migrations

    config = Config()
    config.set_main_option("script_location", migrations.SCRIPT_LOCATION)
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
