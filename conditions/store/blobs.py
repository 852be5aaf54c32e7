"""Payload bytes on disk, addressed by content.

A blob lives at ``<root>/sha256/<first two hex digits>/<full sha256 hex>``. Its path is a
function of the hash alone, never of a payload name, so no name can steer a write outside
the directory; :meth:`BlobStorage.path_for` still checks the final path (defence in
depth against a malformed hash coming from a database row).

Writes go to a temporary file in the same directory, are hashed while being copied,
flushed to disk, then renamed into place: a reader sees either no file or the complete
one, and a writer killed half-way leaves only a ``.tmp`` file that nothing reads.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from ..exceptions import ChecksumMismatchError, PayloadTooLargeError
from ..payload import FileHashes, hash_file

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
#: Seconds after its last write an upload temp file counts as left behind.
STALE_TEMP_AGE = 3600.0


@dataclass(frozen=True)
class StagedBlob:
    """Bytes copied into the blob directory but not yet published under their hash."""

    temp_path: Path
    hashes: FileHashes


class BlobStorage:
    """A content-addressed payload directory."""

    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root).expanduser().resolve()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        self._blobs = self.root / "sha256"
        self._tmp = self.root / "tmp"
        self._locks = self.root / "locks"
        self._quarantine = self.root / "quarantine"

    def __repr__(self) -> str:
        return f"BlobStorage({str(self.root)!r})"

    # -- paths --------------------------------------------------------------------------
    def path_for(self, sha256: str) -> Path:
        """Where the blob with this SHA-256 lives (whether or not it exists)."""
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        path = (self._blobs / sha256[:2] / sha256).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"blob path {path} escapes the payload directory {self.root}")
        return path

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def lock(self, sha256: str, timeout: float = 120.0) -> FileLock:
        """An inter-process lock for one blob, held while a blob and its database row are
        written together, so a failed writer can remove a blob it created without racing a
        second writer of the same bytes."""
        self.path_for(sha256)  # validates the digest
        self._locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self._locks / f"{sha256}.lock"), timeout=timeout)

    # -- writing --------------------------------------------------------------------------
    @property
    def temp_dir(self) -> Path:
        """Where uploads in flight are written (same file system as the blobs, so a
        finished upload is renamed into place, not copied)."""
        return self._tmp

    def new_temp_file(self) -> tuple[int, Path]:
        """An open file descriptor and path of a new temp file in :attr:`temp_dir`, named
        so that :meth:`remove_stale_temp_files` removes it if its writer dies. Fill it and
        pass ``StagedBlob(path, hashes)`` to :meth:`publish` (or unlink it)."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix="upload-", suffix=".tmp", dir=self._tmp)
        return fd, Path(temp_name)

    def stage(self, data: str | Path | BinaryIO, *, max_size: int | None = None) -> StagedBlob:
        """Copy ``data`` (a path or a readable binary stream) into a temporary file in the
        payload directory, hashing it on the way. Call :meth:`publish` or :meth:`discard`."""
        fd, temp_path = self.new_temp_file()
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, (str, Path)):
                    with open(data, "rb") as source:
                        hashes = _copy_hashing(source, out, max_size)
                else:
                    hashes = _copy_hashing(data, out, max_size)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise
        return StagedBlob(temp_path, hashes)

    def publish(self, staged: StagedBlob) -> bool:
        """Move a staged file into place under its hash. Returns True when this call
        created the blob, False when an intact copy was already there (the staged file is
        then dropped). A damaged existing copy (wrong size or hash) is replaced."""
        target = self.path_for(staged.hashes.sha256)
        if target.is_file():
            if _intact(target, staged.hashes):
                staged.temp_path.unlink(missing_ok=True)
                return False
        target.parent.mkdir(parents=True, exist_ok=True)
        # Payloads are immutable: make accidental in-place edits fail.
        os.chmod(staged.temp_path, 0o444)
        os.replace(staged.temp_path, target)
        _fsync_dir(target.parent)
        return True

    def quarantine(self, path: Path) -> Path:
        """Move a damaged blob file out of the blob directory (into ``quarantine/``, for
        an administrator to look at), so it is never served or used. Returns its new path."""
        self._quarantine.mkdir(parents=True, exist_ok=True)
        destination = self._quarantine / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(path, destination)
        return destination

    def discard(self, staged: StagedBlob) -> None:
        staged.temp_path.unlink(missing_ok=True)

    def remove(self, sha256: str) -> None:
        """Delete a blob (used only to clean up after a failed database write)."""
        self.path_for(sha256).unlink(missing_ok=True)

    def stale_temp_files(self, max_age: float = STALE_TEMP_AGE) -> list[Path]:
        """Upload temp files not written to for ``max_age`` seconds: left by writers that
        died mid-copy (a live upload writes all the time; a stalled one is cut off by the
        server's body timeout long before)."""
        try:
            entries = list(self._tmp.iterdir())
        except OSError:
            return []
        cutoff = time.time() - max_age
        stale = []
        for entry in entries:
            try:
                st = entry.lstat()
            except OSError:
                continue
            if entry.name.endswith(".tmp") and st.st_mtime < cutoff:
                stale.append(entry)
        return stale

    def remove_stale_temp_files(self, max_age: float = STALE_TEMP_AGE) -> int:
        """Delete the :meth:`stale_temp_files`; returns how many."""
        removed = 0
        for entry in self.stale_temp_files(max_age):
            try:
                entry.unlink()
                removed += 1
            except OSError:
                continue
        return removed

    def blob_files(self) -> list[Path]:
        """Every file under the blob directory (for ``conditionsdb check``)."""
        if not self._blobs.is_dir():
            return []
        return sorted(p for p in self._blobs.rglob("*") if not p.is_dir() or p.is_symlink())

    def sha256_of_path(self, path: Path) -> str | None:
        """The SHA-256 a blob file at ``path`` stands for, or None if it is not laid out
        as a blob (wrong directory or name)."""
        name = path.name
        if (_SHA256.match(name) and path.parent.name == name[:2]
                and path.parent.parent == self._blobs):
            return name
        return None

    # -- reading --------------------------------------------------------------------------
    def verify(self, sha256: str, md5: str | None = None, size: int | None = None) -> Path:
        """The blob's path after re-hashing it; ChecksumMismatchError if damaged or absent."""
        path = self.path_for(sha256)
        if not path.is_file():
            raise ChecksumMismatchError(f"payload file {path} is missing from the payload directory")
        actual = hash_file(path)
        if actual.sha256 != sha256 or (md5 is not None and actual.md5 != md5) or (
            size is not None and actual.size != size
        ):
            raise ChecksumMismatchError(
                f"payload file {path} is damaged: expected sha256 {sha256}, got {actual.sha256} "
                f"({actual.size} bytes); restore it from a backup or re-upload the payload"
            )
        return path

    def copy_to(self, sha256: str, destination: str | Path) -> None:
        """Copy the blob to ``destination`` (unverified; callers verify)."""
        shutil.copyfile(self.path_for(sha256), destination)


def _copy_hashing(source: BinaryIO, out: BinaryIO, max_size: int | None) -> FileHashes:
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    while chunk := source.read(_CHUNK):
        size += len(chunk)
        if max_size is not None and size > max_size:
            raise PayloadTooLargeError(f"payload is larger than the limit of {max_size} bytes")
        md5.update(chunk)
        sha.update(chunk)
        out.write(chunk)
    return FileHashes(md5.hexdigest(), sha.hexdigest(), size)


def _intact(path: Path, expected: FileHashes) -> bool:
    try:
        if path.stat().st_size != expected.size:
            return False
        return hash_file(path).sha256 == expected.sha256
    except OSError:
        return False


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not all platforms allow opening directories.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
