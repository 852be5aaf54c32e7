"""The JSON objects of basf2's v2 API, as basf2 reads them (its C++ CentralMetadataProvider
and its Python client in framework/scripts/conditions_db), shared by the v2 routers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request

from ..payload import IoVRecord, PayloadInfo
from ..store.base import GlobalTagInfo, Store
from ..tags import GlobalTagState
from .deps import get_settings

FILES_PREFIX = "files"
#: Stands for a time the store did not record (basf2 parses every date it gets).
_NO_TIME = "1970-01-01T00:00:00+00:00"


def payload_url(payload: PayloadInfo) -> str:
    """The payload's path under ``baseUrl``: the store's own, else the hashed layout."""
    return payload.url or f"{payload.checksum[:2]}/{payload.name}_r{payload.revision}"


def base_url(request: Request) -> str:
    public = get_settings(request).public_url
    root = public.rstrip("/") if public else str(request.base_url).rstrip("/")
    return f"{root}/{FILES_PREFIX}/"


def _when(value: datetime | None) -> str:
    return value.isoformat() if value is not None else _NO_TIME


def v2_tag(tag: GlobalTagInfo, payload_count: int) -> dict[str, Any]:
    return {
        "globalTagId": tag.tag_id,
        "name": tag.name,
        "description": tag.description or "",
        "globalTagStatus": {"name": GlobalTagState.parse(tag.state).value},
        "globalTagType": {"name": "DEV"},
        "payloadCount": payload_count,
        "dtmIns": _when(tag.created),
        "dtmMod": _when(tag.modified or tag.created),
        "modifiedBy": tag.modified_by or tag.created_by or "",
        "isDefault": False,
    }


def v2_payload(request: Request, payload: PayloadInfo) -> dict[str, Any]:
    return {
        "payloadId": payload.payload_id,
        "basf2Module": {"name": payload.name},
        "revision": payload.revision,
        "checksum": payload.checksum,
        "payloadUrl": payload_url(payload),
        "baseUrl": base_url(request),
        # payloads are immutable: inserted and last modified at the same moment
        "dtmIns": _when(payload.created),
        "dtmMod": _when(payload.created),
        "modifiedBy": payload.creator or "",
        "isDefault": False,
    }


def v2_iov(record: IoVRecord) -> dict[str, Any]:
    iov = record.iov
    return {
        "payloadIovId": record.iov_id,
        "expStart": iov.first_exp,
        "runStart": iov.first_run,
        "expEnd": iov.final_exp,
        "runEnd": iov.final_run,
        # IoV rows are changed in place only in OPEN tags; the store keeps their creation
        "dtmIns": _when(record.created),
        "dtmMod": _when(record.created),
        "modifiedBy": record.created_by or "",
    }


def payload_count(store: Store, tag: str) -> int:
    """basf2's ``payloadCount`` of one tag: the distinct payload revisions its IoVs use."""
    counts = getattr(store, "payload_counts", None)
    if callable(counts):
        return counts([tag]).get(tag, 0)
    return len({(r.payload.name, r.payload.revision) for r in store.iovs(tag)})
