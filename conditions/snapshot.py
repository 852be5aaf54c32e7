"""basf2-compatible snapshots: export tags to a metadata SQLite file plus payload files, and
read such a snapshot (ours, or one written by basf2's own tools) as a read-only store.

The layout, as basf2 reads and writes it (framework/scripts/conditions_db/local_metadata.py
writes it, framework/database/src/LocalMetadataProvider.cc reads it,
framework/database/src/PayloadProvider.cc finds the payload files, and
framework/scripts/conditions_db/cli_download.py -- ``b2conditionsdb download`` -- puts
``metadata.sqlite`` and the payload files in one directory, by default ``conditions/``):

* ``PRAGMA application_id = 0xb2cdb``, ``PRAGMA user_version = 1`` (schema version; basf2
  refuses other versions);
* ``baseUrls(baseUrlId INTEGER PRIMARY KEY, baseUrl TEXT UNIQUE)``;
* ``payloadNames(payloadNameId INTEGER PRIMARY KEY, payloadName TEXT UNIQUE)``;
* ``payloads(payloadId INTEGER PRIMARY KEY, payloadNameId, revision, checksum TEXT (MD5 hex),
  payloadUrl TEXT DEFAULT NULL, baseUrlId)``, unique (payloadNameId, revision). A NULL
  ``payloadUrl`` stands for ``dbstore/{name}/dbstore_{name}_rev_{revision}.root`` (basf2
  stores NULL when the central URL follows that pattern; the view fills it in);
* ``globaltags(globalTagId INTEGER PRIMARY KEY, globalTagName TEXT UNIQUE, globalTagStatus
  TEXT)``: the status is the state NAME as the central server reports it ("PUBLISHED",
  "RUNNING", "INVALID", ...);
* ``iovs(globalTagId, payloadId, firstExp, firstRun, finalExp, finalRun)`` with a unique
  index over all six columns (``iov_index``); -1 for open ends as everywhere;
* views ``full_payloads`` and ``iov_payloads`` (natural joins of the above);
* payload files beside the metadata file in the hashed layout
  ``{md5[0:2]}/{name}_r{revision}.root`` (basf2 also accepts the flat layout
  ``dbstore_{name}_rev_{revision}.root``). basf2's PayloadProvider looks for exactly these
  two names, whatever the payload holds, so every payload is WRITTEN under the hashed
  ``.root`` name (a safetensors checkpoint included); both layouts are READ, and so are
  the ``{md5[0:2]}/{name}_r{revision}.{ext}`` names older pxdbg versions wrote.
* ``payloadUrl``/``baseUrl`` say where the payload can be downloaded again:
  ``joinWithSlash(baseUrl, payloadUrl)``. They are kept from the source (a server's
  ``/files/`` URL, or what a basf2 snapshot recorded), so a missing or damaged payload
  file is fetched again from there (MD5-verified) instead of failing the job.

A snapshot has no SHA-256 and no sizes: its payloads are verified by MD5 only.
"""

from __future__ import annotations

import bisect
import fnmatch
import heapq
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

from .cache import CacheEntryStatus, CacheReport, check_file, copy_verified, normalized_md5, verify_file
from .exceptions import (
    ConditionsError,
    NoPayloadFoundError,
    NotAStoreError,
    ReadOnlyStoreError,
    UnknownPayloadError,
    UnknownTagError,
    UnusableTagError,
)
from .iov import IntervalOfValidity
from .payload import IoVRecord, PayloadInfo, ResolvedPayload
from .source import MetadataSource
from .store.base import AuditEntry, GlobalTagInfo, Store, TagDiff, TokenInfo
from .tags import GlobalTagState, check_usable, validate_payload_name, validate_tag_name

log = logging.getLogger(__name__)

#: The file name ``b2conditionsdb download`` gives the metadata file.
METADATA_FILE = "metadata.sqlite"
APPLICATION_ID = 0xB2CDB
SCHEMA_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"

# Our own statement of basf2's schema (same tables, columns, constraints and views).
_SCHEMA = """
CREATE TABLE baseUrls (
    baseUrlId INTEGER PRIMARY KEY,
    baseUrl TEXT UNIQUE
);
CREATE TABLE payloadNames (
    payloadNameId INTEGER PRIMARY KEY,
    payloadName TEXT UNIQUE
);
CREATE TABLE payloads (
    payloadId INTEGER PRIMARY KEY,
    payloadNameId INTEGER NOT NULL REFERENCES payloadNames (payloadNameId)
        ON UPDATE CASCADE ON DELETE RESTRICT,
    revision INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    payloadUrl TEXT DEFAULT NULL,
    baseUrlId INTEGER NOT NULL REFERENCES baseUrls (baseUrlId)
        ON UPDATE CASCADE ON DELETE RESTRICT,
    CONSTRAINT name_rev UNIQUE (payloadNameId, revision)
);
CREATE VIEW full_payloads AS
    SELECT payloadId, payloadName, revision, checksum,
           ifnull(payloadUrl, 'dbstore/' || payloadName || '/dbstore_' || payloadName
                  || '_rev_' || revision || '.root') AS payloadUrl,
           baseUrl
    FROM payloads NATURAL JOIN payloadNames NATURAL JOIN baseUrls;
CREATE TABLE globaltags (
    globalTagId INTEGER PRIMARY KEY,
    globalTagName TEXT UNIQUE,
    globalTagStatus TEXT NOT NULL
);
CREATE TABLE iovs (
    globalTagId INTEGER NOT NULL REFERENCES globaltags (globalTagId)
        ON UPDATE CASCADE ON DELETE CASCADE,
    payloadId INTEGER NOT NULL REFERENCES payloads (payloadId)
        ON UPDATE CASCADE ON DELETE RESTRICT,
    firstExp INTEGER NOT NULL,
    firstRun INTEGER NOT NULL,
    finalExp INTEGER NOT NULL,
    finalRun INTEGER NOT NULL
);
CREATE UNIQUE INDEX iov_index ON iovs (globalTagId, firstExp, firstRun, finalExp, finalRun, payloadId);
CREATE VIEW iov_payloads AS
    SELECT globalTagName, payloadId, payloadName, revision, checksum,
           firstExp, firstRun, finalExp, finalRun, payloadUrl, baseUrl
    FROM globaltags NATURAL JOIN iovs NATURAL JOIN full_payloads;
"""

# One query for resolve and listing, on the base tables (a NULL payloadUrl stays NULL here
# and is interpreted in Python, like the view does).
_SELECT_IOVS = """
SELECT i.rowid, n.payloadName, p.payloadId, p.revision, p.checksum, p.payloadUrl, b.baseUrl,
       i.firstExp, i.firstRun, i.finalExp, i.finalRun
FROM iovs i
JOIN globaltags g ON g.globalTagId = i.globalTagId
JOIN payloads p ON p.payloadId = i.payloadId
JOIN payloadNames n ON n.payloadNameId = p.payloadNameId
LEFT JOIN baseUrls b ON b.baseUrlId = p.baseUrlId
WHERE g.globalTagName = :tag
"""
# basf2's containment test for (exp, run), with -1 meaning "open".
_CONTAINS = """
  AND (i.firstExp < :exp OR (i.firstExp = :exp AND i.firstRun <= :run))
  AND (i.finalExp < 0 OR i.finalExp > :exp OR (i.finalExp = :exp AND (i.finalRun < 0 OR i.finalRun >= :run)))
"""


def is_snapshot_file(path: str | Path) -> bool:
    """True when ``path`` is an SQLite file whose application id is basf2's 0xb2cdb."""
    try:
        with open(path, "rb") as stream:
            header = stream.read(100)
    except OSError:
        return False
    return (len(header) == 100 and header.startswith(_SQLITE_MAGIC)
            and int.from_bytes(header[68:72], "big") == APPLICATION_ID)


def default_payload_url(name: str, revision: int) -> str:
    """What basf2 means by a NULL payloadUrl."""
    return f"dbstore/{name}/dbstore_{name}_rev_{revision}.root"


def _extension(payload: PayloadInfo) -> str:
    if payload.url:
        suffix = PurePosixPath(payload.url).suffix.lstrip(".")
        if suffix and suffix.isalnum():
            return suffix
    return "root"


def hashed_path(payload: PayloadInfo) -> str:
    """``{md5[0:2]}/{name}_r{revision}.root``: where a snapshot keeps ``payload``, the
    name basf2's PayloadProvider looks for (whatever the payload's content)."""
    validate_payload_name(payload.name)
    md5 = normalized_md5(payload)
    return f"{md5[:2]}/{payload.name}_r{int(payload.revision)}.root"


def join_with_slash(base: str, rest: str) -> str:
    """basf2's ``Downloader::joinWithSlash``: exactly one ``/`` between the two."""
    return base.rstrip("/") + "/" + rest.lstrip("/")


def _remote_base(payload: PayloadInfo) -> str | None:
    base = payload.base_url or ""
    return base if base.lower().startswith(("http://", "https://")) and payload.url else None


# -- reading ---------------------------------------------------------------------------

def _just_after(iov: IntervalOfValidity) -> tuple[int, int] | None:
    """The first (exp, run) after the IoV (None when it is open-ended)."""
    if iov.final_exp == -1:
        return None
    if iov.final_run == -1:
        return (iov.final_exp + 1, 0)
    return (iov.final_exp, iov.final_run + 1)


class _PointIndex:
    """The answer for one (tag, payload name) at every (exp, run), precomputed.

    The IoV boundaries cut the (exp, run) line into segments; within a segment the same
    IoVs apply, and the one with the highest revision (then highest payload id) wins. A
    lookup is a bisection over the segment starts.
    """

    def __init__(self, records: list[IoVRecord]):
        events: dict[tuple[int, int], list[tuple[bool, int]]] = {}
        for i, record in enumerate(records):
            events.setdefault(record.iov.lower, []).append((True, i))
            after = _just_after(record.iov)
            if after is not None:
                events.setdefault(after, []).append((False, i))
        heap: list[tuple[int, int, int]] = []
        alive: set[int] = set()
        self.starts: list[tuple[int, int]] = []
        self.winners: list[IoVRecord | None] = []
        for point in sorted(events):
            for starts, i in events[point]:
                if starts:
                    payload = records[i].payload
                    heapq.heappush(heap, (-payload.revision, -(payload.payload_id or 0), i))
                    alive.add(i)
                else:
                    alive.discard(i)
            while heap and heap[0][2] not in alive:
                heapq.heappop(heap)
            self.starts.append(point)
            self.winners.append(records[heap[0][2]] if heap else None)

    def lookup(self, exp: int, run: int) -> IoVRecord | None:
        i = bisect.bisect_right(self.starts, (exp, run)) - 1
        return self.winners[i] if i >= 0 else None


class SnapshotSource(Store):
    """A basf2 metadata file (and the payload files beside it), read-only.

    ``path`` is the metadata file or a directory holding ``metadata.sqlite``. Every write
    method raises ReadOnlyStoreError.
    """

    read_only = True

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir():
            path = path / METADATA_FILE
        if not path.is_file():
            raise NotAStoreError(f"no basf2 snapshot at {path} (no such file)")
        if not is_snapshot_file(path):
            raise NotAStoreError(
                f"{path} is not a basf2 conditions snapshot (no SQLite application id 0xb2cdb)"
            )
        self.path = path.absolute()
        self.directory = self.path.parent
        self.description = f"snapshot:{self.path}"
        self._connections: dict[tuple[int, int], sqlite3.Connection] = {}
        self._lock = threading.Lock()
        # Read once per file version: tag statuses and, per (tag, payload name), the
        # winning IoV at every point (see _PointIndex). _refresh_if_changed drops them.
        self._stamp: tuple | None = None
        self._statuses: dict[str, str] | None = None
        self._indexes: dict[tuple[str, str], _PointIndex] = {}
        self._paths: dict[tuple[str, int, str], Path] = {}  # payload -> its verified file
        self._refresh_if_changed()
        version = self._db().execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise NotAStoreError(
                f"{self.path}: basf2 snapshot schema version {version}; only version {SCHEMA_VERSION} is supported"
            )

    def __repr__(self) -> str:
        return f"SnapshotSource({str(self.path)!r})"

    def _db(self) -> sqlite3.Connection:
        # One connection per process and thread: sqlite3 connections must not cross either.
        key = (os.getpid(), threading.get_ident())
        conn = self._connections.get(key)
        if conn is None:
            uri = f"{self.path.as_uri()}?mode=ro"
            try:
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                conn.execute("SELECT count(*) FROM globaltags").fetchone()
            except sqlite3.DatabaseError as error:
                raise NotAStoreError(f"{self.path}: unreadable basf2 snapshot ({error})") from None
            with self._lock:
                self._connections[key] = conn
        return conn

    def close(self) -> None:
        with self._lock:
            mine = [k for k in self._connections if k[0] == os.getpid()]
            for key in mine:
                self._connections.pop(key).close()

    # -- tags --------------------------------------------------------------------------
    def _status(self, tag: str) -> str:
        self._refresh_if_changed()
        statuses = self._statuses
        if statuses is None:
            statuses = dict(self._db().execute("SELECT globalTagName, globalTagStatus FROM globaltags"))
            self._statuses = statuses
        try:
            return statuses[tag]
        except KeyError:
            raise UnknownTagError(f"global tag {tag!r} is not in {self.description}") from None

    def _index(self, tag: str, name: str) -> "_PointIndex":
        index = self._indexes.get((tag, name))
        if index is None:
            rows = self._db().execute(_SELECT_IOVS + " AND n.payloadName = :name",
                                      {"tag": tag, "name": name}).fetchall()
            index = _PointIndex([self._record(tag, row) for row in rows])
            with self._lock:
                self._indexes[(tag, name)] = index
        return index

    def _refresh_if_changed(self) -> None:
        """A snapshot replaced on disk (a new export renames a new file into place) is
        reopened, and everything read from the old one forgotten."""
        try:
            st = self.path.stat()
        except OSError:
            return  # keep serving from the open connection
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            with self._lock:
                # Dropped, not closed: another thread may be mid-query on one of them;
                # each is closed when its last user lets go of it.
                for key in [k for k in self._connections if k[0] == os.getpid()]:
                    del self._connections[key]
                self._statuses = None
                self._indexes = {}
                self._paths = {}
                self._stamp = stamp

    def tag_state(self, tag: str) -> GlobalTagState:
        status = self._status(tag)
        try:
            return GlobalTagState(str(status).strip().upper())
        except ValueError:
            raise UnusableTagError(
                f"global tag {tag!r} in {self.description} has state {status!r}, which is not a "
                "known state; it is not used"
            ) from None

    def list_tags(self, *, state: GlobalTagState | str | None = None,
                  pattern: str | None = None) -> list[GlobalTagInfo]:
        wanted = GlobalTagState.parse(state) if state is not None else None
        infos = []
        for tag_id, name, status in self._db().execute(
                "SELECT globalTagId, globalTagName, globalTagStatus FROM globaltags ORDER BY globalTagName"):
            if pattern is not None and not fnmatch.fnmatchcase(name, pattern):
                continue
            try:
                tag_state = GlobalTagState(str(status).upper())
            except ValueError:
                continue  # unknown states are never listed as usable tags
            if wanted is not None and tag_state is not wanted:
                continue
            infos.append(GlobalTagInfo(name=name, state=tag_state, tag_id=tag_id))
        return infos

    def get_tag(self, name: str) -> GlobalTagInfo:
        row = self._db().execute("SELECT globalTagId FROM globaltags WHERE globalTagName = ?", (name,)).fetchone()
        if row is None:
            raise UnknownTagError(f"global tag {name!r} is not in {self.description}")
        return GlobalTagInfo(name=name, state=self.tag_state(name), tag_id=row[0])

    # -- resolution ---------------------------------------------------------------------
    def _record(self, tag: str, row: tuple) -> IoVRecord:
        rowid, name, payload_id, revision, checksum, url, base_url, fe, fr, le, lr = row
        payload = PayloadInfo(
            name=name, revision=int(revision), checksum=str(checksum).lower(),
            payload_id=payload_id, url=url if url is not None else default_payload_url(name, revision),
            base_url=base_url or None,
        )
        return IoVRecord(iov_id=rowid, tag=tag, payload=payload, iov=IntervalOfValidity(fe, fr, le, lr))

    def resolve(self, tags: Sequence[str] | str, name: str, exp: int, run: int, *,
                allow_open: bool = False) -> ResolvedPayload:
        tag_names = [tags] if isinstance(tags, str) else list(tags)
        if not tag_names:
            raise UnknownTagError("no global tag given to resolve against")
        # Every tag must exist and be usable before any answer counts: an INVALID tag in
        # the list is an error even when a tag before it would match.
        for tag in tag_names:
            check_usable(tag, self.tag_state(tag), allow_open=allow_open)
        for tag in tag_names:
            record = self._index(tag, name).lookup(exp, run)
            if record is not None:
                return ResolvedPayload(payload=record.payload, iov=record.iov, tag=tag,
                                       iov_id=record.iov_id, source=self.description)
        raise NoPayloadFoundError(
            f"no IoV of payload {name!r} covers experiment {exp}, run {run} in global tag(s) "
            f"{', '.join(tag_names)} ({self.description})"
        )

    def iovs(self, tag: str, *, name: str | None = None, exp: int | None = None,
             run: int | None = None) -> list[IoVRecord]:
        self._status(tag)
        sql, params = _SELECT_IOVS, {"tag": tag}
        if name is not None:
            sql += " AND n.payloadName = :name"
            params["name"] = name
        if exp is not None:
            sql += _CONTAINS if run is not None else " AND i.firstExp <= :exp AND (i.finalExp < 0 OR i.finalExp >= :exp)"
            params.update(exp=exp, run=run)
        sql += " ORDER BY n.payloadName, i.firstExp, i.firstRun, p.revision"
        return [self._record(tag, row) for row in self._db().execute(sql, params)]

    # -- payloads --------------------------------------------------------------------------
    def _payload_rows(self, where: str = "", params: tuple = ()) -> list[PayloadInfo]:
        rows = self._db().execute(
            "SELECT n.payloadName, p.payloadId, p.revision, p.checksum, p.payloadUrl, b.baseUrl "
            "FROM payloads p JOIN payloadNames n ON n.payloadNameId = p.payloadNameId "
            "LEFT JOIN baseUrls b ON b.baseUrlId = p.baseUrlId " + where
            + " ORDER BY n.payloadName, p.revision", params).fetchall()
        return [PayloadInfo(name=n, revision=int(r), checksum=str(c).lower(), payload_id=pid,
                            url=u if u is not None else default_payload_url(n, r), base_url=b or None)
                for n, pid, r, c, u, b in rows]

    def get_payload(self, name: str, revision: int | None = None) -> PayloadInfo:
        if revision is None:
            found = self._payload_rows("WHERE n.payloadName = ?", (name,))
        else:
            found = self._payload_rows("WHERE n.payloadName = ? AND p.revision = ?", (name, revision))
        if not found:
            what = name if revision is None else f"{name} r{revision}"
            raise UnknownPayloadError(f"payload {what} is not in {self.description}")
        return found[-1]

    def list_payloads(self, name: str | None = None) -> list[PayloadInfo]:
        if name is None:
            return self._payload_rows()
        return self._payload_rows("WHERE n.payloadName = ?", (name,))

    def _candidates(self, payload: PayloadInfo) -> list[Path]:
        """The file names a payload may have here: basf2's hashed and flat ``.root`` names
        first, then the same with the payload's own extension (older pxdbg snapshots)."""
        validate_payload_name(payload.name)
        md5 = normalized_md5(payload)
        ext = _extension(payload)
        names = [f"{md5[:2]}/{payload.name}_r{payload.revision}.root",
                 f"dbstore_{payload.name}_rev_{payload.revision}.root",
                 f"{md5[:2]}/{payload.name}_r{payload.revision}.{ext}",
                 f"dbstore_{payload.name}_rev_{payload.revision}.{ext}"]
        return [self.directory / n for n in dict.fromkeys(names)]

    def local_path(self, payload: PayloadInfo) -> Path | None:
        """The payload file in the hashed (then flat) layout, preferring one whose MD5
        matches, as basf2's PayloadProvider does. When no file matches and the payload
        can be downloaded again from its ``baseUrl``, None: the caller then fetches it
        (:meth:`fetch_payload` downloads it, verified, and says so)."""
        key = (payload.name, payload.revision, payload.checksum.lower())
        known = self._paths.get(key)
        if known is not None and check_file(known, payload) is None:
            return known  # the common case: one stat, hashes remembered
        existing = [p for p in self._candidates(payload) if p.is_file()]
        for path in existing:
            if check_file(path, payload) is None:
                self._paths[key] = path
                return path
        if existing and _remote_base(payload) is not None:
            return None  # damaged here, but it can be downloaded again
        return existing[0] if existing else None

    def remote_url(self, payload: PayloadInfo) -> str | None:
        """Where the payload can be downloaded again (``baseUrl`` + ``payloadUrl``), if anywhere."""
        base = _remote_base(payload)
        return join_with_slash(base, payload.url) if base is not None else None

    def fetch_payload(self, payload: PayloadInfo, destination: Path) -> None:
        """The payload's bytes: the snapshot's file, else a download from ``baseUrl`` +
        ``payloadUrl`` (with retries; the caller verifies the MD5)."""
        local = self.local_path(payload)
        if local is not None:
            shutil.copyfile(local, destination)
            return
        url = self.remote_url(payload)
        existing = [p for p in self._candidates(payload) if p.is_file()]
        if url is None:
            if existing:  # damaged, and nowhere to get it again: the caller's check says so
                shutil.copyfile(existing[0], destination)
                return
            raise UnknownPayloadError(
                f"payload file of {payload.name} r{payload.revision} is missing from {self.directory} "
                f"(expected {self._candidates(payload)[0].relative_to(self.directory)}) and the snapshot "
                "records no base URL to download it from"
            )
        why = f"{existing[0]} does not match its MD5 {payload.checksum}" if existing else (
            f"it is missing from {self.directory}")
        log.warning("payload %s r%d: %s; downloading it again from %s", payload.name, payload.revision, why, url)
        self._download(url, payload, destination)

    @staticmethod
    def _download(url: str, payload: PayloadInfo, destination: Path) -> None:
        from .client.client import raise_for_error
        from .client.transport import Transport

        root, _, path = url.partition("://")
        host, _, rest = path.partition("/")
        transport = Transport(f"{root}://{host}", retries=2, timeout=(3.05, 60.0), total_timeout=600.0)
        try:
            transport.download("/" + rest, Path(destination), raise_for_error, size=payload.size,
                               md5=payload.checksum, sha256=payload.sha256)
        finally:
            transport.close()

    def verify_payloads(self) -> CacheReport:
        """Check every payload the metadata file names: "ok", "missing" or "corrupt"."""
        report = CacheReport(self.directory)
        for payload in self.list_payloads():
            path = self.local_path(payload)
            if path is None:  # none matches: report the damaged one if there is one
                path = next((p for p in self._candidates(payload) if p.is_file()), None)
            if path is None:
                report.entries.append(CacheEntryStatus(self._candidates(payload)[0], "missing",
                                                       f"{payload.name} r{payload.revision}"))
                continue
            problem = check_file(path, payload)
            report.entries.append(CacheEntryStatus(path, "ok" if problem is None else "corrupt", problem or ""))
        return report

    # -- the rest of the Store interface: reads answer, writes refuse ------------------------
    def diff(self, tag_a: str, tag_b: str, *, exp: int | None = None, run: int | None = None) -> TagDiff:
        a, b = self.iovs(tag_a, exp=exp, run=run), self.iovs(tag_b, exp=exp, run=run)

        def key(r: IoVRecord):
            return (r.payload.name, r.payload.revision, r.iov.as_tuple())

        keys_a, keys_b = {key(r) for r in a}, {key(r) for r in b}
        return TagDiff(tag_a, tag_b, [r for r in a if key(r) not in keys_b],
                       [r for r in b if key(r) not in keys_a])

    def audit(self, *, tag: str | None = None, limit: int = 100, who: str | None = None) -> list[AuditEntry]:
        return []  # a snapshot records no history

    def list_tokens(self) -> list[TokenInfo]:
        return []

    def authenticate(self, secret: str) -> TokenInfo | None:
        return None

    def _refuse(self, *args: Any, **kwargs: Any):
        raise ReadOnlyStoreError(f"{self.description} is a read-only basf2 snapshot")

    create_tag = modify_tag = clone_tag = set_tag_state = _refuse
    add_payload = add_iov = modify_iov = delete_iov = _refuse
    create_token = revoke_token = _refuse


# -- writing ----------------------------------------------------------------------------

@dataclass
class ExportReport:
    """What :func:`export_snapshot` did."""

    metadata_file: Path
    tags: list[str]
    iovs: int = 0
    payloads: int = 0
    copied: int = 0  # payload files written this time
    present: int = 0  # payload files already there and verified (a resumed export)
    files: list[Path] = field(default_factory=list)


ProgressCallback = Callable[[int, int, PayloadInfo], None]


@dataclass
class _TagExport:
    name: str
    status: str  # as written to globalTagStatus
    records: list[IoVRecord]
    tag_id: int | None
    source: MetadataSource


def export_snapshot(source: MetadataSource, tags: Sequence[str] | str, directory: str | Path, *,
                    payloads: bool = True, progress: ProgressCallback | None = None,
                    metadata_name: str = METADATA_FILE, base_url: str | None = None,
                    cache: Any | None = None, append: bool = False) -> ExportReport:
    """Write ``tags`` of ``source`` as a basf2 snapshot into ``directory``.

    Payload files go first, each into a temp file beside its final name, verified by MD5
    (and SHA-256 when known), then renamed; files already present and verified are kept,
    so an interrupted export resumes where it stopped. The metadata file is written last,
    to a temp file that replaces ``metadata_name`` atomically: a snapshot never names a
    payload file that is not there (unless ``payloads=False``). ``progress(done, total,
    payload)`` is called after each payload. ``cache`` (a PayloadCache) is used to fetch
    payloads that the source has no local file for. Tag states are exported as they are;
    an INVALID tag stays INVALID (and unusable) in the snapshot.

    ``payloadUrl``/``baseUrl`` keep the source's values (so basf2 can still download from
    where the payload came from); ``base_url`` (default: the source's ``base_url``
    attribute, else empty) is used where the source gives none. ``append=True`` keeps the
    other tags of an existing snapshot in ``directory`` (like ``b2conditionsdb download
    --append``); a tag exported again is replaced.
    """
    tag_names = [tags] if isinstance(tags, str) else list(tags)
    if not tag_names:
        raise UnknownTagError("no global tag given to export")
    directory = Path(directory)
    if os.sep in metadata_name or metadata_name.startswith(".") or not metadata_name:
        raise NotAStoreError(f"metadata file name {metadata_name!r} must be a plain file name")
    metadata_path = directory / metadata_name
    if base_url is None:
        base_url = getattr(source, "base_url", None) or ""

    # Collect everything first: an unknown tag or a bad name fails before anything is written.
    exports: list[_TagExport] = []
    for tag in dict.fromkeys(tag_names):
        validate_tag_name(tag)
        state = source.tag_state(tag)
        tag_id = None
        if isinstance(source, Store):
            try:
                tag_id = source.get_tag(tag).tag_id
            except ConditionsError:
                tag_id = None
        exports.append(_TagExport(tag, state.value, source.iovs(tag), tag_id, source))
    previous = None
    if append and is_snapshot_file(metadata_path):
        previous = SnapshotSource(metadata_path)
        for info in previous._db().execute(
                "SELECT globalTagId, globalTagName, globalTagStatus FROM globaltags ORDER BY globalTagName"):
            old_id, old_name, old_status = info
            if old_name not in tag_names:
                exports.append(_TagExport(old_name, old_status, previous.iovs(old_name), old_id, previous))

    try:
        by_key: dict[tuple[str, int], tuple[PayloadInfo, MetadataSource]] = {}
        for export in exports:
            for record in export.records:
                p = record.payload
                validate_payload_name(p.name)
                normalized_md5(p)
                known, _ = by_key.setdefault((p.name, p.revision), (p, export.source))
                if known.checksum.lower() != p.checksum.lower():
                    raise ConditionsError(
                        f"payload {p.name} r{p.revision} appears with two checksums "
                        f"({known.checksum}, {p.checksum}): refusing to mix them in one snapshot"
                    )
        report = ExportReport(metadata_path, [e.name for e in exports],
                              iovs=sum(len(e.records) for e in exports), payloads=len(by_key))
        directory.mkdir(parents=True, exist_ok=True)

        if payloads:
            total = len(by_key)
            for done, (payload, owner) in enumerate(by_key.values(), start=1):
                target = directory / hashed_path(payload)
                _refuse_linked_directory(directory, target.parent)
                # A link in a file's place is not "present": it is replaced by the file.
                if check_file(target, payload, follow_symlinks=False) is None:
                    report.present += 1
                else:
                    _write_payload(owner, payload, target, cache)
                    report.copied += 1
                report.files.append(target)
                if progress is not None:
                    progress(done, total, payload)

        _write_metadata(metadata_path, exports, {k: p for k, (p, _) in by_key.items()}, base_url)
    finally:
        if previous is not None:
            previous.close()
    return report


def _refuse_linked_directory(root: Path, directory: Path) -> None:
    """Refuse to write into ``directory`` (below ``root``) when it, or a directory between
    it and ``root``, is a symbolic link: files would land outside the snapshot."""
    for part in [directory, *directory.parents]:
        if part == root or root not in part.parents:
            return
        if part.is_symlink():
            raise ConditionsError(
                f"{part} is a symbolic link; refusing to write snapshot files through it (they would land "
                f"outside {root}). Remove the link, or download into another directory"
            )


def _write_payload(source: MetadataSource, payload: PayloadInfo, target: Path, cache: Any | None) -> None:
    local = source.local_path(payload)
    if local is not None and Path(local).is_file():
        copy_verified(Path(local), target, payload)
        return
    if cache is not None:
        copy_verified(cache.get(payload, source), target, payload)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        source.fetch_payload(payload, tmp)
        verify_file(tmp, payload)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _unique_ids(wanted: list[int | None]) -> list[int]:
    """Keep the wanted ids (basf2 keeps the central database's) where they are positive
    and unique; number the rest after the largest."""
    used: set[int] = set()
    ids: list[int | None] = []
    for value in wanted:
        if value is not None and value > 0 and value not in used:
            used.add(value)
            ids.append(value)
        else:
            ids.append(None)
    next_id = max(used, default=0) + 1
    result = []
    for value in ids:
        if value is None:
            value, next_id = next_id, next_id + 1
        result.append(value)
    return result


def _write_metadata(path: Path, exports: list[_TagExport], by_key: dict[tuple[str, int], PayloadInfo],
                    base_url: str) -> None:
    keys = list(by_key)
    payload_ids = dict(zip(keys, _unique_ids([by_key[k].payload_id for k in keys])))
    tag_ids = _unique_ids([e.tag_id for e in exports])
    base_urls = sorted({by_key[k].base_url or base_url for k in keys} | {base_url})
    base_ids = {url: i for i, url in enumerate(base_urls, start=1)}

    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-metadata-", suffix=".sqlite", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
            conn.executemany("INSERT INTO baseUrls (baseUrlId, baseUrl) VALUES (?, ?)",
                             [(i, url) for url, i in base_ids.items()])
            names = sorted({name for name, _ in keys})
            name_ids = {name: i for i, name in enumerate(names, start=1)}
            conn.executemany("INSERT INTO payloadNames (payloadNameId, payloadName) VALUES (?, ?)",
                             [(i, n) for n, i in name_ids.items()])
            conn.executemany(
                "INSERT INTO payloads (payloadId, payloadNameId, revision, checksum, payloadUrl, baseUrlId) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(payload_ids[key], name_ids[p.name], p.revision, p.checksum.lower(), p.url or hashed_path(p),
                  base_ids[p.base_url or base_url])
                 for key, p in by_key.items()])
            for tag_id, export in zip(tag_ids, exports):
                conn.execute("INSERT INTO globaltags (globalTagId, globalTagName, globalTagStatus) VALUES (?, ?, ?)",
                             (tag_id, export.name, export.status))
                rows = {(tag_id, payload_ids[(r.payload.name, r.payload.revision)], *r.iov.as_tuple())
                        for r in export.records}
                conn.executemany("INSERT INTO iovs VALUES (?, ?, ?, ?, ?, ?)", sorted(rows))
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def verify_snapshot(path: str | Path) -> CacheReport:
    """Open the snapshot at ``path`` (file or directory) and check every payload file."""
    with SnapshotSource(path) as snapshot:
        return snapshot.verify_payloads()


__all__ = [
    "APPLICATION_ID",
    "METADATA_FILE",
    "ExportReport",
    "SnapshotSource",
    "export_snapshot",
    "hashed_path",
    "is_snapshot_file",
    "verify_snapshot",
]
