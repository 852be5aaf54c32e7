"""``conditionsdb check``: the consistency of a store's database and payload directory.

What can go wrong between the two, and what ``repair`` does about it:

* **missing**: a payload row whose bytes are not in the payload directory. Nothing here
  can bring them back: restore the directory from a backup, or upload the same bytes
  again (the store then puts them back in place). Not repairable.
* **corrupt**: a blob whose bytes no longer match their hashes (or the size and MD5 of
  the rows that use it). Repair moves it to ``quarantine/`` in the payload directory, so
  it is never served; the payload is then *missing* until restored.
* **orphan**: a blob that no payload row uses (left by a writer that died between the
  file and the database). Repair deletes those untouched for an hour, under the blob's
  lock, after checking once more that no row appeared.
* **stale-temp**: an upload temp file nobody has written for an hour (a killed server or
  client). Repair deletes it.
* **unexpected**: anything else in the blob directory (odd names, symbolic links). Only
  reported: it was not put there by the store.

Every blob is re-hashed (SHA-256 and MD5), with a progress callback per file.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .blobs import STALE_TEMP_AGE, BlobStorage

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoreProblem:
    status: str  # "missing", "corrupt", "orphan", "stale-temp", "unexpected"
    what: str  # payloads concerned, or the file relative to the payload directory
    detail: str = ""
    repaired: bool = False


@dataclass
class StoreCheckReport:
    payloads: int = 0
    blobs: int = 0
    verified: int = 0
    problems: list[StoreProblem] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for p in self.problems if p.status == status)

    @property
    def damaged(self) -> bool:
        """Payload bytes are missing or damaged (repaired or not: the bytes are gone), or
        there are files the store did not put there."""
        return any(p.status in ("missing", "corrupt", "unexpected") for p in self.problems)

    @property
    def unrepaired(self) -> list[StoreProblem]:
        return [p for p in self.problems if not p.repaired]


def _hash(path: Path) -> tuple[str, str, int]:
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), md5.hexdigest(), size


def check_store(store, *, repair: bool = False, progress: Callable[[int, int], None] | None = None,
                stale_age: float = STALE_TEMP_AGE) -> StoreCheckReport:
    """Check ``store`` (a :class:`~conditions.store.sql.SqlStore`); see the module docstring.
    ``progress(done, total)`` is called after each file."""
    blobs: BlobStorage = store.blobs
    payloads = store.list_payloads()
    by_sha: dict[str, list] = {}
    for payload in payloads:
        by_sha.setdefault(payload.sha256, []).append(payload)
    report = StoreCheckReport(payloads=len(payloads))
    files = blobs.blob_files()
    stale = blobs.stale_temp_files(stale_age)
    total = len(files) + len(stale)
    done = 0
    root = blobs.root

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    def label(rows) -> str:
        return ", ".join(f"{p.name} r{p.revision}" for p in rows)

    seen: set[str] = set()
    for path in files:
        relative = str(path.relative_to(root))
        sha = blobs.sha256_of_path(path)
        st = path.lstat()
        if sha is None or not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a blob of this store"
            report.problems.append(StoreProblem("unexpected", relative, kind))
            step()
            continue
        report.blobs += 1
        rows = by_sha.get(sha)
        if rows is None:
            repaired = False
            if repair and time.time() - st.st_mtime > stale_age:
                with blobs.lock(sha):
                    # A writer may have committed its row since we listed the payloads.
                    if not store._blob_referenced(sha):
                        blobs.remove(sha)
                        repaired = True
            report.problems.append(StoreProblem("orphan", relative, "no payload uses these bytes", repaired))
            step()
            continue
        seen.add(sha)
        actual_sha, actual_md5, size = _hash(path)
        expected = rows[0]
        wrong = []
        if actual_sha != sha:
            wrong.append(f"SHA-256 is {actual_sha}")
        if actual_md5 != expected.checksum:
            wrong.append(f"MD5 is {actual_md5}, expected {expected.checksum}")
        if expected.size is not None and size != expected.size:
            wrong.append(f"size is {size}, expected {expected.size}")
        if wrong:
            repaired = False
            if repair:
                blobs.quarantine(path)
                repaired = True
            detail = "; ".join(wrong) + (" (moved to quarantine/)" if repaired else "")
            report.problems.append(StoreProblem("corrupt", f"{label(rows)} ({relative})", detail, repaired))
        else:
            report.verified += 1
        step()
    for sha, rows in by_sha.items():
        if sha not in seen:
            report.problems.append(StoreProblem("missing", label(rows), f"no file sha256/{sha[:2]}/{sha}"))
    for path in stale:
        repaired = False
        if repair:
            try:
                path.unlink()
                repaired = True
            except OSError:
                pass
        age = (time.time() - path.lstat().st_mtime) / 3600 if not repaired else None
        report.problems.append(StoreProblem("stale-temp", str(path.relative_to(root)),
                                            "removed" if repaired else f"untouched for {age:.1f} h", repaired))
        step()
    return report
