"""Serving payload bytes: ETag, immutable caching, HEAD, conditional and Range requests.

Payload bytes never change (a new upload is a new revision), so answers may be cached
for a year by any proxy and the ETag is the content hash. That is only safe if the bytes
sent are the right ones: each file is verified before it is first served (see
:func:`verified_file`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ..cache import check_file
from ..exceptions import DamagedPayloadError
from ..payload import PayloadInfo
from ..store.base import Store

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
_CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def etag_for(payload: PayloadInfo) -> str:
    return f'"{payload.sha256 or payload.checksum}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """The inclusive byte range asked for, None for "whole file", or "unsatisfiable".

    Only one range is honoured; several ranges or a malformed header mean the whole file
    (RFC 9110 lets a server ignore Range).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return (max(0, size - length), size - 1)
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None  # invalid range: ignore it
    if start >= size:
        return "unsatisfiable"
    return (start, end)


def _read(path: Path, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        stream.seek(start)
        remaining = length
        while remaining > 0:
            chunk = stream.read(min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def verified_file(store: Store, payload: PayloadInfo) -> Path:
    """The file holding ``payload``'s bytes, checked against the metadata (size, MD5,
    SHA-256) on its first use by this process and again whenever the file changes
    (another inode, size or mtime). Bytes that do not match are never sent, with an
    immutable cache header or otherwise: DamagedPayloadError (500), and the file's path
    goes to the server log only."""
    path = store.local_path(payload)
    if path is None:
        log.error("payload %s r%d: no bytes in the payload directory", payload.name, payload.revision)
        raise DamagedPayloadError(
            f"the bytes of payload {payload.name} r{payload.revision} are missing on this server; "
            "its operator must restore them (`conditionsdb check` lists such payloads)")
    problem = check_file(path, payload)
    if problem is not None:
        log.error("payload %s r%d: %s is damaged (%s); not served", payload.name, payload.revision, path, problem)
        raise DamagedPayloadError(
            f"the stored bytes of payload {payload.name} r{payload.revision} are damaged on this server "
            "and are not served; its operator must restore them (`conditionsdb check --repair`)")
    return Path(path)


def payload_response(request: Request, store: Store, payload: PayloadInfo, *, filename: str) -> Response:
    """The answer to GET or HEAD of ``payload``'s bytes (runs on the threadpool)."""
    etag = etag_for(payload)
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Checksum-MD5": payload.checksum,
    }
    if payload.sha256:
        headers["X-Checksum-SHA256"] = payload.sha256
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)

    path = verified_file(store, payload)
    size = path.stat().st_size

    wanted = parse_range(request.headers.get("range"), size)
    if wanted is not None and request.headers.get("if-range") not in (None, etag):
        wanted = None  # the client's partial copy is of something else
    if wanted == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    status, start, length = 200, 0, size
    if isinstance(wanted, tuple):
        start, end = wanted
        status, length = 206, end - start + 1
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(_read(path, start, length), status_code=status, headers=headers,
                             media_type="application/octet-stream")
