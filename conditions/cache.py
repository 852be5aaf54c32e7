"""The local payload cache: verified payload files, filled once per machine.

A payload file is handed out only after its bytes match the metadata (MD5 always, SHA-256
and size when the metadata knows them). Files that a source already has on this machine
(a store's blob directory, a snapshot directory, a testing-payloads directory) are
verified and returned in place; everything else is copied into the cache directory.

Layout of the cache directory (names come only from the MD5 hex digest, never from the
payload name, so nothing can escape it)::

    <cache>/ab/abcdef...0123            the verified payload bytes (MD5 abcdef...0123)
    <cache>/ab/.tmp-abcdef...0123-*     a download in progress (or left by a killed process)
    <cache>/.locks/abcdef...0123.lock   the per-payload lock

Filling an entry: take the payload's lock (an ``flock``, so the OS releases it when the
holder dies, even by SIGKILL), look again (another process may have filled the entry
while we waited), remove temp files of dead writers, fetch into a temp file in the same
directory, verify, and ``os.replace`` it into place. Readers never see a partial file:
the final name only ever holds complete bytes, and even those are verified again before
use (a file damaged on disk after it was cached is detected and replaced).

Verified files are remembered per process by (path, device, inode, size, mtime_ns) so a
job that opens the same large payload many times hashes it once.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import filelock
import platformdirs

from .exceptions import CacheLockTimeout, ChecksumMismatchError, OfflineError
from .payload import PayloadInfo
from .source import MetadataSource

#: Environment variable that overrides the default cache directory.
CACHE_DIR_ENV = "CONDITIONS_CACHE_DIR"

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$CONDITIONS_CACHE_DIR`` if set, else the per-user cache directory of the platform."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("conditions", appauthor=False)) / "payloads"


def normalized_md5(payload: PayloadInfo) -> str:
    """The payload's MD5 as lower-case hex; refuses anything else (it becomes a file name)."""
    checksum = (payload.checksum or "").strip().lower()
    if not _MD5_RE.match(checksum):
        raise ChecksumMismatchError(
            f"payload {payload.name} r{payload.revision}: metadata checksum {payload.checksum!r} "
            "is not an MD5 hex digest; refusing to use the payload"
        )
    return checksum


# -- verification ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Verified:
    md5: str
    sha256: str | None


# (path, st_dev, st_ino, st_size, st_mtime_ns) -> hashes this process computed for it.
# A replaced file gets a new inode (rename) or new mtime (rewrite), so it is hashed again.
_verified_memo: dict[tuple, _Verified] = {}
_memo_lock = threading.Lock()


def _stat_key(path: Path, st: os.stat_result) -> tuple:
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def forget_verified() -> None:
    """Drop this process's memory of verified files (tests, or after tampering on purpose)."""
    with _memo_lock:
        _verified_memo.clear()


def check_file(path: str | Path, payload: PayloadInfo, *, follow_symlinks: bool = True) -> str | None:
    """Why ``path`` does not hold ``payload``'s bytes, or None when it does.

    Checks size (cheap, catches truncation), then MD5, then SHA-256 when the metadata has
    one. Results for unchanged files are remembered for the life of the process.
    ``follow_symlinks=False`` (files this package owns: cache entries, snapshot files it
    writes) refuses a symbolic link without looking at what it points to.
    """
    path = Path(path)
    md5 = normalized_md5(payload)
    sha256 = (payload.sha256 or "").lower() or None
    if sha256 is not None and not _SHA256_RE.match(sha256):
        return f"metadata sha256 {payload.sha256!r} is not a SHA-256 hex digest"
    try:
        st = path.stat() if follow_symlinks else path.lstat()
    except FileNotFoundError:
        return "file does not exist"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link (not followed)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if payload.size is not None and st.st_size != payload.size:
        return f"size is {st.st_size} bytes, metadata says {payload.size}"
    key = _stat_key(path, st)
    with _memo_lock:
        known = _verified_memo.get(key)
    if known is None or (sha256 is not None and known.sha256 is None):
        known = _hash(path, want_sha256=sha256 is not None, follow_symlinks=follow_symlinks)
        with _memo_lock:
            _verified_memo[key] = known
    if known.md5 != md5:
        return f"MD5 is {known.md5}, metadata says {md5}"
    if sha256 is not None and known.sha256 != sha256:
        return f"SHA-256 is {known.sha256}, metadata says {sha256}"
    return None


def file_hashes(path: str | Path, *, want_sha256: bool = True) -> tuple[str, str | None, int]:
    """(md5, sha256 or None, size) of a local file, remembered per process while the file
    is unchanged. For sources whose metadata comes from the file itself (testing payloads)."""
    path = Path(path)
    st = path.stat()
    key = _stat_key(path, st)
    with _memo_lock:
        known = _verified_memo.get(key)
    if known is None or (want_sha256 and known.sha256 is None):
        known = _hash(path, want_sha256=want_sha256)
        with _memo_lock:
            _verified_memo[key] = known
    return known.md5, known.sha256, st.st_size


def _open_for_reading(path: Path, *, follow_symlinks: bool = True):
    """``open(path, "rb")``; without following a final symbolic link (O_NOFOLLOW: ELOOP)
    when ``follow_symlinks`` is False."""
    if follow_symlinks or not hasattr(os, "O_NOFOLLOW"):
        return open(path, "rb")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    return os.fdopen(fd, "rb")


def _hash(path: Path, *, want_sha256: bool, follow_symlinks: bool = True) -> _Verified:
    md5 = hashlib.md5()
    sha = hashlib.sha256() if want_sha256 else None
    with _open_for_reading(path, follow_symlinks=follow_symlinks) as stream:
        while chunk := stream.read(_CHUNK):
            md5.update(chunk)
            if sha is not None:
                sha.update(chunk)
    return _Verified(md5.hexdigest(), sha.hexdigest() if sha is not None else None)


def _carry_memo(old_path: Path, old_stat: os.stat_result, new_path: Path) -> None:
    """After a rename, the verified hashes of the old name hold for the new one if it is
    the very same file (same device, inode, size and mtime)."""
    try:
        new_stat = new_path.stat()
    except OSError:
        return
    old_key = _stat_key(old_path, old_stat)
    new_key = _stat_key(new_path, new_stat)
    if old_key[1:] != new_key[1:]:
        return
    with _memo_lock:
        known = _verified_memo.pop(old_key, None)
        if known is not None:
            _verified_memo[new_key] = known


def verify_file(path: str | Path, payload: PayloadInfo, *, follow_symlinks: bool = True) -> Path:
    """Return ``path`` if it holds ``payload``'s bytes, else raise ChecksumMismatchError."""
    problem = check_file(path, payload, follow_symlinks=follow_symlinks)
    if problem is not None:
        raise ChecksumMismatchError(
            f"{path}: not the bytes of payload {payload.name} r{payload.revision} ({problem})"
        )
    return Path(path)


# -- the cache --------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheEntryStatus:
    """One file found by :meth:`PayloadCache.verify_all`."""

    path: Path
    status: str  # "ok", "corrupt", "stale-temp", "unexpected"
    detail: str = ""


@dataclass
class CacheReport:
    directory: Path
    entries: list[CacheEntryStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every payload file verified (stale temp files don't count against it)."""
        return all(e.status in ("ok", "stale-temp") for e in self.entries)

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)


class PayloadCache:
    """Verified local copies of payloads, safe for many processes sharing one directory.

    ``lock_timeout`` (seconds) bounds the wait for another process filling the same entry
    (CacheLockTimeout after it). ``offline=True`` never asks a source for bytes: a payload
    is served from the source's local file or the cache, or OfflineError names it.
    """

    def __init__(self, directory: str | Path | None = None, *, lock_timeout: float = 600.0,
                 offline: bool = False):
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.lock_timeout = lock_timeout
        self.offline = offline

    def __repr__(self) -> str:
        return f"PayloadCache({str(self.directory)!r}, offline={self.offline})"

    # -- paths -------------------------------------------------------------------------
    def path_for(self, payload: PayloadInfo) -> Path:
        """Where the cache keeps ``payload`` (whether or not it is there yet)."""
        md5 = normalized_md5(payload)
        return self.directory / md5[:2] / md5

    def _lock_for(self, md5: str) -> filelock.BaseFileLock:
        lock_dir = self.directory / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        # thread_local=False: the lock guards the entry for this whole process.
        return filelock.FileLock(str(lock_dir / f"{md5}.lock"), timeout=self.lock_timeout,
                                 thread_local=False)

    # -- the one entry point -------------------------------------------------------------
    def get(self, payload: PayloadInfo, source: MetadataSource) -> Path:
        """A local file holding ``payload``'s verified bytes.

        Order: the source's own local file (verified, not copied); the cache entry
        (verified); otherwise, unless offline, fetch it from ``source`` into the cache.
        Raises ChecksumMismatchError when the bytes offered do not match the metadata
        (nothing is cached), OfflineError, CacheLockTimeout.
        """
        md5 = normalized_md5(payload)
        local = source.local_path(payload)
        if local is not None and Path(local).exists():
            # The source's own file is authoritative for it: if it is damaged, say so
            # rather than quietly serving a copy that the source itself cannot produce.
            return verify_file(local, payload)

        target = self.directory / md5[:2] / md5
        if check_file(target, payload, follow_symlinks=False) is None:
            return target

        if self.offline:
            self._drop_bad_entry(md5, target, payload)
            raise OfflineError(
                f"payload {payload.name} r{payload.revision} (md5 {md5}) is not in the cache "
                f"{self.directory} and offline mode forbids fetching it from {source.description}"
            )
        return self._fill(payload, source, md5, target)

    def _fill(self, payload: PayloadInfo, source: MetadataSource, md5: str, target: Path) -> Path:
        _real_directory(target.parent)
        lock = self._lock_for(md5)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise CacheLockTimeout(
                f"waited {self.lock_timeout:g} s for another process filling the cache entry of "
                f"payload {payload.name} r{payload.revision} ({lock.lock_file}); it may be stuck "
                "downloading. Retry, or raise the lock timeout"
            ) from None
        try:
            # Someone else may have filled it while we waited for the lock.
            if check_file(target, payload, follow_symlinks=False) is None:
                return target
            self._remove_quietly(target)
            self._remove_stale_temps(target.parent, md5)
            fd, tmp_name = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{md5}-", dir=target.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                source.fetch_payload(payload, tmp)
                problem = check_file(tmp, payload)
                if problem is not None:
                    raise ChecksumMismatchError(
                        f"payload {payload.name} r{payload.revision} from {source.description}: "
                        f"the bytes received do not match the metadata ({problem}); not cached"
                    )
                with open(tmp, "rb") as stream:
                    os.fsync(stream.fileno())
                os.chmod(tmp, 0o444)
                before = tmp.stat()
                os.replace(tmp, target)
            finally:
                self._remove_quietly(tmp)
            _carry_memo(tmp, before, target)
            return verify_file(target, payload, follow_symlinks=False)
        finally:
            lock.release()

    def _drop_bad_entry(self, md5: str, target: Path, payload: PayloadInfo) -> None:
        """Offline: remove a cached file that failed verification, so nobody trusts it later."""
        if not target.exists():
            return
        try:
            lock = self._lock_for(md5)
            with lock.acquire(timeout=min(self.lock_timeout, 5.0)):
                if check_file(target, payload, follow_symlinks=False) is not None:
                    self._remove_quietly(target)
        except (filelock.Timeout, OSError):
            pass

    @staticmethod
    def _remove_quietly(path: Path) -> None:
        """Remove a cache file; a symbolic link is removed itself, its target untouched."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode):
            try:  # read-only entries (0444) need write permission to be removed on some systems
                os.chmod(path, 0o644)
            except OSError:
                pass
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def _remove_stale_temps(self, directory: Path, md5: str) -> None:
        """Temp files of this entry left by writers that died. We hold the entry's lock, so
        no live process is writing one."""
        for stale in directory.glob(f"{_TMP_PREFIX}{md5}-*"):
            self._remove_quietly(stale)

    # -- maintenance ----------------------------------------------------------------------
    def contains(self, payload: PayloadInfo) -> bool:
        """True when the cache holds verified bytes of ``payload``."""
        return check_file(self.path_for(payload), payload, follow_symlinks=False) is None

    def verify_all(self, *, repair: bool = False,
                   progress: Callable[[Path], None] | None = None) -> CacheReport:
        """Check every cached file against the MD5 in its name.

        Returns a report with one entry per file: "ok", "corrupt" (hash differs from its
        name), "stale-temp" (left by an interrupted download) or "unexpected" (not ours).
        ``repair=True`` deletes corrupt files and stale temp files older than an hour.
        """
        report = CacheReport(self.directory)
        if not self.directory.is_dir():
            return report
        for sub in sorted(self.directory.iterdir()):
            if sub.name == ".locks":
                continue
            if sub.is_symlink():
                # Never walk (or repair) through a link: it may point anywhere.
                if repair:
                    sub.unlink()
                report.entries.append(CacheEntryStatus(sub, "unexpected", "a symbolic link (not followed)"
                                                       + (", removed" if repair else "")))
                continue
            if not sub.is_dir() or not re.fullmatch(r"[0-9a-f]{2}", sub.name):
                report.entries.append(CacheEntryStatus(sub, "unexpected", "not a cache directory"))
                continue
            for path in sorted(sub.iterdir()):
                if progress is not None:
                    progress(path)
                report.entries.append(self._verify_entry(sub, path, repair))
        return report

    def _verify_entry(self, sub: Path, path: Path, repair: bool) -> CacheEntryStatus:
        import time

        name = path.name
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            # A link is not ours to hash or chmod: it goes (with --repair), its target stays.
            if repair:
                self._remove_quietly(path)
            return CacheEntryStatus(path, "unexpected", "a symbolic link (not followed)" + (", removed" if repair else ""))
        if name.startswith(_TMP_PREFIX):
            if repair and time.time() - st.st_mtime > 3600:
                self._remove_quietly(path)
                return CacheEntryStatus(path, "stale-temp", "removed")
            return CacheEntryStatus(path, "stale-temp")
        if not _MD5_RE.match(name) or name[:2] != sub.name or not stat.S_ISREG(st.st_mode):
            return CacheEntryStatus(path, "unexpected", "name is not an MD5 digest in its directory")
        actual = _hash(path, want_sha256=False, follow_symlinks=False).md5
        if actual != name:
            if repair:
                self._remove_quietly(path)
            return CacheEntryStatus(path, "corrupt", f"MD5 is {actual}" + (", removed" if repair else ""))
        return CacheEntryStatus(path, "ok")

    def clear(self) -> None:
        """Remove every cached file (locks included)."""
        if self.directory.exists():
            shutil.rmtree(self.directory)


def _real_directory(directory: Path) -> None:
    """Make ``directory`` (a subdirectory this package owns) exist as a real directory: a
    symbolic link in its place is removed (not followed), so nothing is written through it."""
    try:
        st = directory.lstat()
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        return
    if stat.S_ISLNK(st.st_mode):
        directory.unlink()
        directory.mkdir(parents=True, exist_ok=True)


def copy_verified(source_file: Path, destination: Path, payload: PayloadInfo) -> None:
    """Copy ``source_file`` to ``destination`` through a temp file beside it, verify the
    copy, then rename it into place (used by snapshot export; the caller has checked that
    ``destination``'s directory is no symbolic link)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=destination.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(source_file, tmp)
        verify_file(tmp, payload, follow_symlinks=False)
        os.replace(tmp, destination)
    finally:
        PayloadCache._remove_quietly(tmp)
