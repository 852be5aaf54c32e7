"""Small, real metadata sources for the cache tests: payload bytes kept in files, a fetch
that can be slow and that records every call in a counter file (O_APPEND, so lines from
many processes never interleave), and helpers that run in child processes.

Everything here is importable by child processes started with "spawn" as well as "fork".
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Sequence

from conditions.exceptions import NoPayloadFoundError, UnknownPayloadError, UnknownTagError
from conditions.payload import IoVRecord, PayloadInfo, ResolvedPayload
from conditions.source import MetadataSource
from conditions.tags import GlobalTagState


def payload_for(name: str, data: bytes, revision: int = 1, *, with_sha256: bool = True) -> PayloadInfo:
    return PayloadInfo(
        name=name, revision=revision, checksum=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest() if with_sha256 else None, size=len(data),
    )


class FileBlobSource(MetadataSource):
    """Serves payload bytes from files named by MD5 in ``blob_dir``.

    ``counter``: a file that gets one line per fetch (pid). ``chunk_delay``: seconds to
    sleep after each 64 KiB chunk written (a slow download). ``started``: a file created
    once the first chunk is on disk. ``serve``: optional md5 -> path override, e.g. to
    hand out wrong bytes. ``local_dir``: files named by md5 there are offered via
    local_path (like a store's blob directory).
    """

    description = "file-blob-source"

    def __init__(self, blob_dir: str | Path, *, counter: str | Path | None = None,
                 chunk_delay: float = 0.0, fetch_delay: float = 0.0, started: str | Path | None = None,
                 serve: dict[str, str] | None = None, local_dir: str | Path | None = None):
        self.blob_dir = Path(blob_dir)
        self.counter = Path(counter) if counter else None
        self.chunk_delay = chunk_delay
        self.fetch_delay = fetch_delay
        self.started = Path(started) if started else None
        self.serve = dict(serve or {})
        self.local_dir = Path(local_dir) if local_dir else None

    def add(self, data: bytes, name: str = "Blob", revision: int = 1) -> PayloadInfo:
        info = payload_for(name, data, revision)
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        (self.blob_dir / info.checksum).write_bytes(data)
        return info

    # The cache only needs fetch_payload/local_path; the rest answers "nothing here".
    def tag_state(self, tag: str) -> GlobalTagState:
        raise UnknownTagError(tag)

    def resolve(self, tags: Sequence[str] | str, name: str, exp: int, run: int, *,
                allow_open: bool = False) -> ResolvedPayload:
        raise NoPayloadFoundError(name)

    def iovs(self, tag, *, name=None, exp=None, run=None) -> list[IoVRecord]:
        raise UnknownTagError(tag)

    def local_path(self, payload: PayloadInfo) -> Path | None:
        if self.local_dir is None:
            return None
        return self.local_dir / payload.checksum

    def fetch_payload(self, payload: PayloadInfo, destination: Path) -> None:
        if self.counter is not None:
            fd = os.open(self.counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{os.getpid()}\n".encode())
            finally:
                os.close(fd)
        if self.fetch_delay:
            time.sleep(self.fetch_delay)
        md5 = payload.checksum.lower()
        src = Path(self.serve.get(md5, self.blob_dir / md5))
        if not src.exists():
            raise UnknownPayloadError(f"{payload.name} r{payload.revision}")
        data = src.read_bytes()
        with open(destination, "wb") as out:
            for start in range(0, len(data), 1 << 16):
                out.write(data[start:start + (1 << 16)])
                out.flush()
                if start == 0 and self.started is not None:
                    self.started.touch()
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)


def fetch_count(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def child_get(cache_dir: str, payload: PayloadInfo, source: FileBlobSource, barrier, results) -> None:
    """Child process: wait for all siblings, then get() the payload and report what it got."""
    from conditions.cache import PayloadCache

    barrier.wait(timeout=60)
    try:
        path = PayloadCache(cache_dir, lock_timeout=60).get(payload, source)
        digest = hashlib.md5(Path(path).read_bytes()).hexdigest()
        results.put((os.getpid(), str(path), digest))
    except BaseException as exc:  # report, don't hang the parent
        results.put((os.getpid(), "ERROR", repr(exc)))


def child_slow_fill(cache_dir: str, payload: PayloadInfo, source: FileBlobSource) -> None:
    """Child process that starts filling the cache slowly (the test kills it mid-way)."""
    from conditions.cache import PayloadCache

    PayloadCache(cache_dir, lock_timeout=60).get(payload, source)


def child_hold_lock(lock_path: str, ready: str, seconds: float) -> None:
    """Child process that holds a cache entry's lock for a while."""
    import filelock

    with filelock.FileLock(lock_path):
        Path(ready).touch()
        time.sleep(seconds)


def child_get_over_http(server_url: str, cache_dir: str, counter: str, tag: str, name: str,
                        barrier, results) -> None:
    """Child process: resolve through the real REST client, then get() the payload through
    the cache; every real download is counted in ``counter``."""
    from conditions.cache import PayloadCache
    from conditions.client import ConditionsClient

    class CountingClient(ConditionsClient):
        def fetch_payload(self, payload, destination):
            fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{os.getpid()}\n".encode())
            finally:
                os.close(fd)
            super().fetch_payload(payload, destination)

    try:
        client = CountingClient(server_url)
        found = client.resolve(tag, name, 3, 7)
        barrier.wait(timeout=60)
        path = PayloadCache(cache_dir, lock_timeout=60).get(found.payload, client)
        results.put((os.getpid(), str(path), hashlib.md5(Path(path).read_bytes()).hexdigest()))
        client.close()
    except BaseException as exc:
        results.put((os.getpid(), "ERROR", repr(exc)))
