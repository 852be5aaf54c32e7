"""The v2 REST surface basf2's Python conditions client uses (``b2conditionsdb``).

Read from basf2's framework/scripts/conditions_db/__init__.py (class ConditionsDB) and
its cli_main.py, cli_download.py and cli_upload.py; the paths, parameters and field names
below are theirs, letter for letter:

* ``HEAD /v2/globalTags``: ``ConditionsDB.__init__`` checks each server with it and
  gives up ("No working database servers configured") unless one answers 2xx;
* ``GET /v2/globalTags``: ``tag list`` and ``get_globalTags`` (download by pattern): per tag
  ``globalTagId``, ``name``, ``description``, ``globalTagType.name``,
  ``globalTagStatus.name``, ``payloadCount``; with ``--detail`` also ``dtmIns``,
  ``dtmMod`` (dates basf2 parses with dateutil) and ``modifiedBy``;
* ``GET /v2/globalTag/{name}`` (in :mod:`.basf2`, shared with the C++ reader): the same
  object, for ``tag show``, ``diff``, ``download`` and ``upload``;
* ``GET /v2/globalTagType``: ``[{"name": ...}]`` for ``tag create TYPE``; only ``DEV``
  exists here (the store has no tag types), so ``tag create RELEASE`` is refused by the
  client with the list of valid types;
* ``GET /v2/globalTag/{name}/globalTagPayloads``: ``iov``, ``diff``, ``download``,
  ``legacydownload`` and ``get_iovs``: per payload ``{"payloadId": <payload>,
  "payloadIovs": [<iov>, ...]}``; a payload has ``payloadId``, ``basf2Module.name``,
  ``revision``, ``checksum`` (MD5), ``payloadUrl``, ``baseUrl`` (``urljoin(baseUrl,
  payloadUrl)`` downloads it, so it ends in ``/``), ``dtmIns``, ``dtmMod``, ``modifiedBy``;
  an IoV ``payloadIovId``, ``expStart``, ``runStart``, ``expEnd``, ``runEnd``,
  ``dtmIns``, ``dtmMod``, ``modifiedBy``;
* ``GET /v2/globalTag/{name}/payloads``: ``get_payloads``: the payloads the tag uses;
* ``POST /v2/checkPayloads`` with ``[{"name", "checksum"}, ...]``: ``check_payloads`` and
  ``get_revisions`` (upload): the payloads that exist with that name and MD5 (a read:
  no token needed; at most 10000 entries, basf2 sends 1000 at a time);
* ``GET /v2/module/{name}/payloads`` and ``GET /v2/payload/{id}``: ``dump -r`` and ``dump -i``.

Writes, with the project's tokens (scopes as everywhere): basf2's client sends HTTP Basic
credentials (``--http-user``/``--http-password``); the password is taken as the token
secret, so ``b2conditionsdb --http-user NAME --http-password TOKEN ...`` writes with
TOKEN. ``Authorization: Bearer TOKEN`` works too. Reads ignore credentials (basf2 sends
its default ones with every request).

* ``POST /v2/globalTag/{type}`` with ``{"name", "description", "modifiedBy",
  "isDefault"}``: ``tag create`` and ``create_globalTag`` (admin);
* ``POST /v2/package/dbstore/module/{name}/payload``: ``create_payload``, a
  ``multipart/mixed`` body of the file and a ``json`` part ``{"checksum": MD5}``; the
  bytes must have that MD5; answers the payload (``payloadId``);
* ``POST /v2/globalTagPayload/{globalTagId},{payloadId}/payloadIov/{firstExp},{firstRun},
  {finalExp},{finalRun}``: ``create_iov``; answers ``payloadIovId``;
* ``PUT /v2/globalTag/{name}/updateGlobalTagStatus/{state}``: ``tag state`` (admin).

Not offered: ``tag modify`` and ``tag clone`` (``PUT /v2/globalTag`` renames tags, which
this store does not do; ``conditionsdb tag clone`` clones under the final name at once).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from ...exceptions import (
    AuthenticationError,
    ChecksumMismatchError,
    InvalidIoVError,
    InvalidValueError,
    PayloadTooLargeError,
    UnknownPayloadError,
    UnknownTagError,
)
from ...iov import IntervalOfValidity
from ...payload import PayloadInfo
from ...store.base import GlobalTagInfo, Store, TokenInfo
from ...tags import GlobalTagState, validate_payload_name
from .. import auth
from ..deps import NO_STORE, get_settings, get_store, metadata_headers
from ..responses import json_response
from ..basf2_wire import payload_count, v2_iov, v2_payload, v2_tag
from ..schemas import (V2GlobalTagPayload, V2Iov, V2PayloadInfo, V2PayloadQuery, V2Tag, V2TagCreate,
                       V2TagType)
from ._common import READ_ERRORS, WRITE_ERRORS

router = APIRouter(tags=["basf2 client (v2)"])

#: The global tag types this server offers (``GET /v2/globalTagType``).
TAG_TYPES = {"DEV": "every global tag of this server"}
#: Limits of the small JSON bodies (tag creation, payload checks, the json part of an upload).
MAX_JSON_BODY = 4 * 1024 * 1024
MAX_CHECK_ENTRIES = 10_000
_MAX_JSON_PART = 64 * 1024
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,200}$")
_QUERIES = TypeAdapter(list[V2PayloadQuery])


# -- credentials and bodies -----------------------------------------------------------------

def basf2_token(request: Request) -> TokenInfo:
    """The caller's token from ``Authorization: Bearer TOKEN`` or from HTTP Basic
    credentials whose password is the token (how basf2's client authenticates)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    secret = None
    if scheme.lower() == "bearer":
        secret = value.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError("malformed HTTP Basic credentials") from None
        secret = decoded.partition(":")[2]
    if not secret:
        raise AuthenticationError(
            "this operation needs a token: send 'Authorization: Bearer TOKEN', or with b2conditionsdb "
            "give it as the HTTP password (--http-user NAME --http-password TOKEN)")
    token = get_store(request).authenticate(secret)
    if token is None or token.revoked:
        raise AuthenticationError("unknown or revoked token (b2conditionsdb's default credentials are not "
                                  "a token: pass --http-password TOKEN)")
    return token


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(where: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", where), "type": "value_error", "msg": message}])


def _parse_json(body: bytes, where: str = "body") -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise _invalid(where, f"not JSON ({error})") from None


def _validated(model: Any, data: Any) -> Any:
    try:
        return model.model_validate(data) if hasattr(model, "model_validate") else model.validate_python(data)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from None


# -- reads --------------------------------------------------------------------------------

@router.head("/v2/globalTags", responses=READ_ERRORS)
def global_tags_check(request: Request):
    """The connection check of basf2's ConditionsDB: 200 with no body."""
    return Response(status_code=200, headers=metadata_headers(request), media_type="application/json")


@router.get("/v2/globalTags", response_model=list[V2Tag], responses=READ_ERRORS)
def global_tags(request: Request, store: Store = Depends(get_store)):
    """Every global tag, with its payload count."""
    tags = store.list_tags()
    counts = getattr(store, "payload_counts", None)
    if callable(counts):
        by_tag = counts()
    else:
        by_tag = {t.name: payload_count(store, t.name) for t in tags}
    return json_response([v2_tag(t, by_tag.get(t.name, 0)) for t in tags], headers=metadata_headers(request))


@router.get("/v2/globalTagType", response_model=list[V2TagType], responses=READ_ERRORS)
def global_tag_types(request: Request):
    return json_response([{"name": n, "description": d} for n, d in TAG_TYPES.items()],
                         headers=metadata_headers(request))


@router.get("/v2/globalTag/{name}/globalTagPayloads", response_model=list[V2GlobalTagPayload],
            responses=READ_ERRORS)
def global_tag_payloads(request: Request, name: str, store: Store = Depends(get_store)):
    """Every payload of the tag with all its IoVs there."""
    grouped: dict[Any, dict[str, Any]] = {}
    for record in store.iovs(name):
        p = record.payload
        key = p.payload_id if p.payload_id is not None else (p.name, p.revision)
        entry = grouped.get(key)
        if entry is None:
            entry = grouped[key] = {"payloadId": v2_payload(request, p), "payloadIovs": []}
        entry["payloadIovs"].append(v2_iov(record))
    return json_response(list(grouped.values()), headers=metadata_headers(request))


@router.get("/v2/globalTag/{name}/payloads", response_model=list[V2PayloadInfo], responses=READ_ERRORS)
def global_tag_payload_list(request: Request, name: str, store: Store = Depends(get_store)):
    """The payloads the tag's IoVs use, each once."""
    seen: dict[Any, PayloadInfo] = {}
    for record in store.iovs(name):
        p = record.payload
        seen.setdefault(p.payload_id if p.payload_id is not None else (p.name, p.revision), p)
    return json_response([v2_payload(request, p) for p in seen.values()], headers=metadata_headers(request))


@router.post("/v2/checkPayloads", response_model=list[V2PayloadInfo], responses=READ_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "array", "maxItems": MAX_CHECK_ENTRIES,
                 "items": {"type": "object", "required": ["name", "checksum"],
                           "properties": {"name": {"type": "string"}, "checksum": {"type": "string"}}}}}}}})
async def check_payloads(request: Request):
    """Which of the given (name, MD5 checksum) pairs exist, as payload objects."""
    queries = _validated(_QUERIES, _parse_json(await _read_body(request, MAX_JSON_BODY)))
    if len(queries) > MAX_CHECK_ENTRIES:
        raise _invalid("body", f"at most {MAX_CHECK_ENTRIES} entries per request (basf2 sends 1000)")
    wanted: dict[str, set[str]] = {}
    for query in queries:
        wanted.setdefault(query.name, set()).add(query.checksum.lower())
    store: Store = get_store(request)

    def look_up() -> list[PayloadInfo]:
        found = []
        for name, checksums in wanted.items():
            try:
                validate_payload_name(name)
            except ValueError:
                continue  # a name that cannot exist here simply does not
            found.extend(p for p in store.list_payloads(name) if p.checksum.lower() in checksums)
        return found

    found = await run_in_threadpool(look_up)
    return json_response([v2_payload(request, p) for p in found], headers=NO_STORE)


@router.get("/v2/module/{name}/payloads", response_model=list[V2PayloadInfo], responses=READ_ERRORS)
def module_payloads(request: Request, name: str, store: Store = Depends(get_store)):
    """Every revision of payload ``name`` (``b2conditionsdb dump -r``)."""
    validate_payload_name(name)
    return json_response([v2_payload(request, p) for p in store.list_payloads(name)],
                         headers=metadata_headers(request))


@router.get("/v2/payload/{payload_id}", response_model=V2PayloadInfo, responses=READ_ERRORS)
def payload_by_id(request: Request, payload_id: int = PathParam(..., ge=1, le=2**63 - 1),
                  store: Store = Depends(get_store)):
    """One payload by its id (``b2conditionsdb dump -i``)."""
    return json_response(v2_payload(request, _payload_by_id(store, payload_id)), headers=metadata_headers(request))


def _payload_by_id(store: Store, payload_id: int) -> PayloadInfo:
    by_id = getattr(store, "payload_by_id", None)
    if callable(by_id):
        return by_id(payload_id)
    for payload in store.list_payloads():
        if payload.payload_id == payload_id:
            return payload
    raise UnknownPayloadError(f"no payload with id {payload_id}")


def _tag_by_id(store: Store, tag_id: int) -> GlobalTagInfo:
    by_id = getattr(store, "tag_by_id", None)
    if callable(by_id):
        return by_id(tag_id)
    for tag in store.list_tags():
        if tag.tag_id == tag_id:
            return tag
    raise UnknownTagError(f"no global tag with id {tag_id}")


# -- writes -------------------------------------------------------------------------------

@router.post("/v2/globalTag/{tag_type}", status_code=201, response_model=V2Tag, responses=WRITE_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": V2TagCreate.model_json_schema()}}}})
async def create_global_tag(request: Request, tag_type: str, token: TokenInfo = Depends(basf2_token)):
    """A new OPEN global tag (admin); ``tag_type`` must be one of ``GET /v2/globalTagType``."""
    auth.require_admin(token, "create global tags")
    if tag_type not in TAG_TYPES:
        raise InvalidValueError(f"unknown global tag type {tag_type!r}; this server has: {', '.join(TAG_TYPES)}")
    body = _validated(V2TagCreate, _parse_json(await _read_body(request, MAX_JSON_BODY)))
    store: Store = get_store(request)
    tag = await run_in_threadpool(partial(store.create_tag, body.name, body.description, user=token.name))
    return json_response(v2_tag(tag, 0), status_code=201, headers=NO_STORE)


@router.put("/v2/globalTag/{name}/updateGlobalTagStatus/{state}", response_model=V2Tag, responses=WRITE_ERRORS)
def update_global_tag_status(request: Request, name: str, state: GlobalTagState,
                             store: Store = Depends(get_store), token: TokenInfo = Depends(basf2_token)):
    """Move the tag along its lifecycle (admin): ``b2conditionsdb tag state NAME STATE``."""
    auth.require_admin(token, "change global tag states")
    request.app.state.resolve_cache.forget_tag(name)
    tag = store.set_tag_state(name, state, user=token.name)
    request.app.state.resolve_cache.forget_tag(name)
    return json_response(v2_tag(tag, payload_count(store, name)), headers=NO_STORE)


@router.post("/v2/globalTagPayload/{ids}/payloadIov/{bounds}", status_code=201, response_model=V2Iov,
             responses=WRITE_ERRORS)
def create_iov(request: Request, ids: str = PathParam(..., max_length=60, pattern=r"^\d{1,19},\d{1,19}$"),
               bounds: str = PathParam(..., max_length=60, pattern=r"^-?\d{1,10},-?\d{1,10},-?\d{1,10},-?\d{1,10}$"),
               store: Store = Depends(get_store), token: TokenInfo = Depends(basf2_token)):
    """Make payload ``payloadId`` valid for the interval in tag ``globalTagId``."""
    tag_id, payload_id = (int(v) for v in ids.split(","))
    try:
        iov = IntervalOfValidity(*(int(v) for v in bounds.split(",")))
    except InvalidIoVError as error:
        raise InvalidIoVError(f"interval {bounds}: {error}") from None
    tag = _tag_by_id(store, tag_id)
    auth.require_tag_scope(token, tag.name, "add IoVs")
    payload = _payload_by_id(store, payload_id)
    record = store.add_iov(tag.name, payload.name, payload.revision, iov, user=token.name)
    request.app.state.resolve_cache.forget_tag(tag.name)
    return json_response(v2_iov(record), status_code=201, headers=NO_STORE)


@router.post(
    "/v2/package/dbstore/module/{name}/payload", status_code=201, response_model=V2PayloadInfo,
    responses={**WRITE_ERRORS, 413: {"description": "payload over the size cap"}},
    openapi_extra={"requestBody": {"required": True, "description": "the payload file and a 'json' part "
                                   "{\"checksum\": MD5}, as multipart/mixed",
                                   "content": {"multipart/mixed": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def create_payload(request: Request, name: str, token: TokenInfo = Depends(basf2_token)):
    """Store the file part of basf2's ``multipart/mixed`` upload as payload ``name``; the
    bytes must have the MD5 of the ``json`` part. Streamed to disk and hashed on the way,
    refused (413) beyond the server's size cap; the same bytes again give the same revision."""
    auth.require_upload_scope(token)
    validate_payload_name(name)
    settings = get_settings(request)
    upload = _MixedUpload(request, settings.max_upload_bytes, settings.upload_dir)
    try:
        await upload.receive()
        expected = upload.expected_md5()
        if upload.md5 != expected:
            raise ChecksumMismatchError(f"uploaded bytes have MD5 {upload.md5}, the json part says {expected}")
        store: Store = get_store(request)
        extra = {}
        if upload.filename and "filename" in _parameters(store.add_payload):
            extra["filename"] = upload.filename
        info = await run_in_threadpool(partial(store.add_payload, name, upload.path, metadata={},
                                               user=token.name, **extra))
    finally:
        upload.close()
    return json_response(v2_payload(request, info), status_code=201, headers=NO_STORE)


def _parameters(function: Any) -> set[str]:
    import inspect

    return set(inspect.signature(function).parameters)


class _MixedUpload:
    """basf2's payload upload body (``multipart/mixed``: the file, then a ``json`` part),
    parsed as it streams in: the file part goes to a temp file and is hashed on the way."""

    def __init__(self, request: Request, cap: int, directory: str | None):
        self.request, self.cap = request, cap
        content_type = request.headers.get("content-type", "")
        from python_multipart.multipart import parse_options_header

        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not kind.startswith(b"multipart/") or not boundary:
            raise _invalid("body", "expected a multipart/mixed body (the payload file and a 'json' part), "
                                   f"got Content-Type {content_type!r}")
        self.boundary = boundary
        fd, name = tempfile.mkstemp(prefix="upload-", dir=directory)
        self.path = Path(name)
        self._out = os.fdopen(fd, "wb")
        self._md5, self._size = hashlib.md5(), 0
        self._json = bytearray()
        self._headers: dict[str, str] = {}
        self._field = self._value = b""
        self._target: str | None = None  # "file", "json" or None (ignored part)
        self._files = 0
        self._pending: list[bytes] = []
        self.filename: str | None = None

    # python-multipart callbacks (called synchronously from parser.write)
    def _on_part_begin(self) -> None:
        self._headers, self._target = {}, None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field = self._value = b""

    def _on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        part = options.get(b"name", b"").decode("utf-8", "replace")
        if part == "json":
            self._target = "json"
            return
        self._files += 1
        if self._files > 1:
            raise _invalid("body", "more than one file part in the upload")
        self._target = "file"
        base = part.replace("\\", "/").rsplit("/", 1)[-1]
        self.filename = base if _SAFE_FILENAME.match(base) else None

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._target == "file":
            self._size += len(chunk)
            if self._size > self.cap:
                raise PayloadTooLargeError(f"payload is over the server's cap of {self.cap} bytes")
            self._md5.update(chunk)
            self._pending.append(chunk)
        elif self._target == "json":
            self._json += chunk
            if len(self._json) > _MAX_JSON_PART:
                raise _invalid("json", f"the json part is over {_MAX_JSON_PART} bytes")

    async def receive(self) -> None:
        from python_multipart.multipart import MultipartParser

        parser = MultipartParser(self.boundary, {
            "on_part_begin": self._on_part_begin, "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished, "on_part_data": self._on_part_data,
        })
        limit = self.cap + _MAX_JSON_PART + 64 * 1024  # the file, the json part, headers and boundaries
        declared = self.request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"upload of {int(declared)} bytes is over the server's cap of {self.cap} bytes")
        total = 0
        try:
            async for chunk in self.request.stream():
                total += len(chunk)
                if total > limit:
                    raise PayloadTooLargeError(f"upload is over the server's cap of {self.cap} bytes")
                parser.write(chunk)
                if self._pending:
                    data, self._pending = b"".join(self._pending), []
                    await run_in_threadpool(self._out.write, data)
            parser.finalize()
        except (PayloadTooLargeError, RequestValidationError):
            raise
        except Exception as error:  # python-multipart's parse errors: the client's malformed body
            raise _invalid("body", f"malformed multipart body ({type(error).__name__}: {error})") from None
        self._out.close()
        if self._files != 1:
            raise _invalid("body", "the upload has no file part")

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    def expected_md5(self) -> str:
        data = _parse_json(bytes(self._json), "json")
        checksum = data.get("checksum") if isinstance(data, dict) else None
        if not isinstance(checksum, str) or not re.fullmatch(r"[0-9a-fA-F]{32}", checksum):
            raise _invalid("json", "the json part must be an object with the file's MD5 as 'checksum'")
        return checksum.lower()

    def close(self) -> None:
        if not self._out.closed:
            self._out.close()
        self.path.unlink(missing_ok=True)
