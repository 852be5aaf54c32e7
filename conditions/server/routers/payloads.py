"""Payloads: list, describe, upload (streamed, size-capped) and download."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from ...exceptions import ChecksumMismatchError, InvalidMetadataError, PayloadTooLargeError
from ...metadata import MAX_DEPTH as MAX_METADATA_DEPTH
from ...metadata import encode_metadata
from ...payload import FileHashes
from ...store.base import Store, TokenInfo
from ...store.blobs import StagedBlob
from ...tags import validate_payload_name
from .. import auth, wire
from ..deps import NO_STORE, current_token, get_settings, get_store, metadata_headers, upload_directory
from ..files import payload_response
from ..responses import json_response
from ..schemas import INT32_MAX, ErrorBody, PayloadOut
from ._common import PRINTABLE, READ_ERRORS, WRITE_ERRORS, PageLimit, PageOffset, paged

router = APIRouter(prefix="/api/v1", tags=["payloads"])

_HEX64 = r"^[0-9a-fA-F]{64}$"
_HEX32 = r"^[0-9a-fA-F]{32}$"


@router.get("/payloads", response_model=list[PayloadOut], responses=READ_ERRORS)
def list_payloads(request: Request,
                  name: str | None = Query(None, max_length=200, pattern=PRINTABLE),
                  limit: int | None = PageLimit, offset: int = PageOffset,
                  store: Store = Depends(get_store)):
    """Every payload revision, or every revision of one name; with ``limit``, one page
    (follow the ``Link: rel="next"`` header)."""
    page = getattr(store, "payloads_page", None)
    payloads, link = paged(request, limit, offset,
                           (lambda **slice_: page(name, **slice_)) if page else None,
                           lambda: store.list_payloads(name))
    return json_response([wire.payload_to_json(p) for p in payloads], headers={**metadata_headers(request), **link})


@router.post(
    "/payloads/{name}", status_code=201, response_model=PayloadOut,
    responses={**WRITE_ERRORS, 413: {"model": ErrorBody, "description": "payload over the size cap"}},
    openapi_extra={"requestBody": {"required": True, "description": "the payload bytes",
                                   "content": {"application/octet-stream": {
                                       "schema": {"type": "string", "format": "binary"}}}}},
)
async def upload_payload(
    request: Request,
    name: str,
    metadata: str | None = Query(None, max_length=100_000, description="JSON object stored with the payload"),
    sha256: str | None = Query(None, pattern=_HEX64, description="expected SHA-256; refused if the bytes differ"),
    md5: str | None = Query(None, pattern=_HEX32, description="expected MD5; refused if the bytes differ"),
    filename: str | None = Query(None, max_length=255, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]*$",
                                 description="original file name; its extension becomes that of the payload URL"),
    token: TokenInfo = Depends(current_token),
):
    """Store the request body as payload ``name``: the same bytes again return the
    existing revision, new bytes get the next one. The body is streamed to disk and
    hashed on the way; it is refused (413) beyond the server's size cap."""
    auth.require_upload_scope(token)
    validate_payload_name(name)
    meta = _parse_metadata(metadata)
    settings = get_settings(request)
    cap = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLargeError(f"payload of {int(declared)} bytes is over the server's cap of {cap} bytes")

    store: Store = get_store(request)
    blobs = getattr(store, "blobs", None) if settings.upload_dir is None else None
    # Straight into the payload directory's temp area: a finished upload is renamed into
    # place, and one cut off by a killed server is found there (stale temp files:
    # `conditionsdb check --repair`, and a day later any start-up), never in /tmp.
    fd, tmp_name = tempfile.mkstemp(prefix="upload-", suffix=".tmp", dir=upload_directory(request))
    tmp = Path(tmp_name)
    try:
        sha, md = hashlib.sha256(), hashlib.md5()
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise PayloadTooLargeError(f"payload is over the server's cap of {cap} bytes")
                sha.update(chunk)
                md.update(chunk)
                await run_in_threadpool(out.write, chunk)
            await run_in_threadpool(_flush_to_disk, out)
        if sha256 and sha.hexdigest() != sha256.lower():
            raise ChecksumMismatchError(f"uploaded bytes have SHA-256 {sha.hexdigest()}, expected {sha256}")
        if md5 and md.hexdigest() != md5.lower():
            raise ChecksumMismatchError(f"uploaded bytes have MD5 {md.hexdigest()}, expected {md5}")
        extra = {}
        if "filename" in inspect.signature(store.add_payload).parameters:
            extra["filename"] = filename or name  # never the name of our temp file
        data = StagedBlob(tmp, FileHashes(md.hexdigest(), sha.hexdigest(), size)) if blobs is not None else tmp
        info = await run_in_threadpool(partial(store.add_payload, name, data, metadata=meta, user=token.name, **extra))
    finally:
        tmp.unlink(missing_ok=True)
    return json_response(wire.payload_to_json(info), status_code=201, headers=NO_STORE)


def _flush_to_disk(out) -> None:
    out.flush()
    os.fsync(out.fileno())


def _parse_metadata(text: str | None) -> dict:
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidMetadataError(f"payload metadata nests deeper than {MAX_METADATA_DEPTH} levels") from None
    except ValueError as error:
        value, why = None, f"not JSON ({error})"
    else:
        why = "not a JSON object"
    if not isinstance(value, dict):
        raise RequestValidationError([{"loc": ("query", "metadata"), "type": "value_error",
                                       "msg": f"payload metadata must be a JSON object: {why}"}])
    encode_metadata(value)  # depth and size: a 422 before a single byte of the body is read
    return value


@router.get("/payloads/{name}", response_model=PayloadOut, responses=READ_ERRORS)
def latest_payload(request: Request, name: str, store: Store = Depends(get_store)):
    """The highest revision of payload ``name``."""
    return json_response(wire.payload_to_json(store.get_payload(name)), headers=metadata_headers(request))


@router.get("/payloads/{name}/{revision}", response_model=PayloadOut, responses=READ_ERRORS)
def get_payload(name: str, revision: int = PathParam(..., ge=1, le=INT32_MAX), store: Store = Depends(get_store)):
    """One payload revision (immutable, so cacheable for ever)."""
    payload = store.get_payload(name, revision)
    return json_response(wire.payload_to_json(payload),
                         headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.head("/payloads/{name}/{revision}/data", operation_id="head_payload_data", responses=READ_ERRORS)
@router.get("/payloads/{name}/{revision}/data",
                  responses={**READ_ERRORS, 200: {"content": {"application/octet-stream": {}},
                                                  "description": "the payload bytes"},
                             206: {"description": "the requested byte range"},
                             416: {"description": "range not satisfiable"}})
def download_payload(request: Request, name: str, revision: int = PathParam(..., ge=1, le=INT32_MAX),
                     store: Store = Depends(get_store)):
    """The payload's bytes: ETag = SHA-256, cacheable for ever, HEAD and Range supported."""
    payload = store.get_payload(name, revision)
    return payload_response(request, store, payload, filename=f"{payload.name}_r{payload.revision}")
