"""The read endpoints basf2's central metadata provider uses, unchanged (API "v2").

basf2 (framework/database CentralMetadataProvider) asks for
``/v2/globalTagStatus``, ``/v2/globalTag/<escaped name>`` (reading
``globalTagStatus.name``) and ``v2/iovPayloads/?gtName=&expNumber=&runNumber=``
(reading ``payload.{basf2Module.name, payloadUrl, baseUrl, checksum, revision}`` and
``payloadIov.{expStart, runStart, expEnd, runEnd}``), then downloads
``baseUrl.rstrip("/") + "/" + payloadUrl.lstrip("/")`` and checks its MD5. Where one
payload has several revisions valid at the run, basf2 keeps the highest; we list them
all, as the central server does.

Payload files are served under ``/files/`` in the hashed layout
``{md5[0:2]}/{name}_r{revision}.{ext}`` that basf2 also uses on disk.

The rest of the v2 surface, what basf2's Python client (``b2conditionsdb``) uses, is in
:mod:`.basf2_client`; the JSON objects of both are built in :mod:`..basf2_wire`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Query, Request

from ...exceptions import UnknownPayloadError, UnknownTagError
from ...store.base import Store
from ...tags import GlobalTagState
from ..basf2_wire import payload_count, v2_iov, v2_payload, v2_tag
from ..deps import get_store, metadata_headers
from ..files import payload_response
from ..responses import json_response
from ..schemas import INT32_MAX, V2IovPayloadInfo, V2Name, V2Tag
from ._common import READ_ERRORS

router = APIRouter(tags=["basf2 (v2, read-only)"])

_FILE_PATH = re.compile(r"^([0-9a-f]{2})/([A-Za-z0-9_][A-Za-z0-9_\-+]*)_r([0-9]{1,10})(\.[A-Za-z0-9]{1,16})?$")


@router.get("/v2/globalTagStatus", response_model=list[V2Name])
def global_tag_status(request: Request):
    """Every global tag state there is."""
    return json_response([{"name": s.value} for s in GlobalTagState], headers=metadata_headers(request))


@router.get("/v2/globalTag/{name}", response_model=V2Tag, responses=READ_ERRORS)
def global_tag(request: Request, name: str, store: Store = Depends(get_store)):
    """The tag as basf2's C++ reader (``globalTagStatus.name``) and its Python client
    (``tag show``: ``dtmIns``, ``dtmMod``, ``payloadCount``, ``modifiedBy``) read it."""
    tag = store.get_tag(name)
    return json_response(v2_tag(tag, payload_count(store, name)), headers=metadata_headers(request))


def _iov_payloads(request: Request, store: Store, gt_name: str, exp: int, run: int):
    try:
        records = store.iovs(gt_name, exp=exp, run=run)
    except UnknownTagError:
        # basf2's Python client (ConditionsDB.get_all_iovs) escapes the name before
        # requests escapes the query again: "a:b" arrives as "a%3Ab". '%' is never part
        # of a tag name, so the unescaped name is unambiguous.
        if "%" not in gt_name:
            raise
        records = store.iovs(unquote(gt_name), exp=exp, run=run)
    answer = [{"payload": v2_payload(request, r.payload), "payloadIov": v2_iov(r)} for r in records]
    return json_response(answer, headers=metadata_headers(request))


@router.get("/v2/iovPayloads/", response_model=list[V2IovPayloadInfo], responses=READ_ERRORS)
def iov_payloads(request: Request, gtName: str = Query(..., max_length=200),  # noqa: N803 - basf2's names
                 expNumber: int = Query(..., ge=0, le=INT32_MAX), runNumber: int = Query(..., ge=0, le=INT32_MAX),
                 store: Store = Depends(get_store)):
    """Every payload revision of tag ``gtName`` valid at (expNumber, runNumber)."""
    return _iov_payloads(request, store, gtName, expNumber, runNumber)


@router.get("/v2/iovPayloads", response_model=list[V2IovPayloadInfo], responses=READ_ERRORS, include_in_schema=False)
def iov_payloads_no_slash(request: Request, gtName: str = Query(..., max_length=200),  # noqa: N803
                          expNumber: int = Query(..., ge=0, le=INT32_MAX),
                          runNumber: int = Query(..., ge=0, le=INT32_MAX), store: Store = Depends(get_store)):
    return _iov_payloads(request, store, gtName, expNumber, runNumber)


@router.head("/files/{path:path}", operation_id="head_payload_file", responses=READ_ERRORS)
@router.get("/files/{path:path}",
                  responses={**READ_ERRORS, 200: {"content": {"application/octet-stream": {}}}})
def payload_file(request: Request, path: str, store: Store = Depends(get_store)):
    """A payload's bytes by its ``payloadUrl`` (``{md5[0:2]}/{name}_r{revision}.{ext}``)."""
    match = _FILE_PATH.match(path)
    if not match:
        raise UnknownPayloadError(f"no payload file {path!r}: expected {{md5[0:2]}}/{{name}}_r{{revision}}.{{ext}}")
    prefix, name, revision, _ext = match.groups()
    by_url = getattr(store, "payload_by_url", None)
    payload = by_url(path) if callable(by_url) and _ext else store.get_payload(name, int(revision))
    if payload.checksum[:2] != prefix or (payload.url and payload.url != path):
        raise UnknownPayloadError(f"no payload file {path!r}")
    return payload_response(request, store, payload, filename=path.rsplit("/", 1)[-1])
