"""The JSON wire format of the native API, shared by the server and the client.

Plain functions between the conditions dataclasses and JSON-ready dicts. Kept free of
FastAPI and pydantic so the client can import it without the server's dependencies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..iov import IntervalOfValidity
from ..metadata import readable_metadata
from ..payload import IoVRecord, PayloadInfo, ResolvedPayload
from ..store.base import AuditEntry, GlobalTagInfo, TagDiff, TokenInfo
from ..tags import GlobalTagState


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# -- to JSON ------------------------------------------------------------------------------

def tag_to_json(tag: GlobalTagInfo) -> dict[str, Any]:
    return {
        "name": tag.name,
        "state": GlobalTagState.parse(tag.state).value,
        "description": tag.description,
        "tag_id": tag.tag_id,
        "created": _time(tag.created),
        "modified": _time(tag.modified),
        "created_by": tag.created_by,
        "modified_by": tag.modified_by,
    }


def payload_to_json(payload: PayloadInfo) -> dict[str, Any]:
    return {
        "name": payload.name,
        "revision": payload.revision,
        "checksum": payload.checksum,
        "sha256": payload.sha256,
        "size": payload.size,
        "created": _time(payload.created),
        "creator": payload.creator,
        # Rows stored before metadata was checked must not break a listing for everyone.
        "metadata": readable_metadata(payload.metadata or {}),
        "payload_id": payload.payload_id,
        "url": payload.url,
    }


def iov_to_json(iov: IntervalOfValidity) -> dict[str, int]:
    return {
        "first_exp": iov.first_exp,
        "first_run": iov.first_run,
        "final_exp": iov.final_exp,
        "final_run": iov.final_run,
    }


def iov_record_to_json(record: IoVRecord) -> dict[str, Any]:
    return {
        "iov_id": record.iov_id,
        "tag": record.tag,
        "payload": payload_to_json(record.payload),
        "iov": iov_to_json(record.iov),
    }


def resolved_to_json(resolved: ResolvedPayload) -> dict[str, Any]:
    return {
        "payload": payload_to_json(resolved.payload),
        "iov": iov_to_json(resolved.iov),
        "tag": resolved.tag,
        "iov_id": resolved.iov_id,
        "source": resolved.source,
    }


def diff_to_json(diff: TagDiff) -> dict[str, Any]:
    return {
        "tag_a": diff.tag_a,
        "tag_b": diff.tag_b,
        "only_a": [iov_record_to_json(r) for r in diff.only_a],
        "only_b": [iov_record_to_json(r) for r in diff.only_b],
        "identical": diff.identical,
    }


def audit_to_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "entry_id": entry.entry_id,
        "when": _time(entry.when),
        "who": entry.who,
        "action": entry.action,
        "tag": entry.tag,
        "details": dict(entry.details or {}),
    }


def token_to_json(token: TokenInfo) -> dict[str, Any]:
    return {
        "token_id": token.token_id,
        "name": token.name,
        "scopes": list(token.scopes),
        "created": _time(token.created),
        "revoked": token.revoked,
    }


# -- from JSON ----------------------------------------------------------------------------

def tag_from_json(data: dict[str, Any]) -> GlobalTagInfo:
    return GlobalTagInfo(
        name=data["name"],
        state=GlobalTagState.parse(data["state"]),
        description=data.get("description") or "",
        tag_id=data.get("tag_id"),
        created=_parse_time(data.get("created")),
        modified=_parse_time(data.get("modified")),
        created_by=data.get("created_by"),
        modified_by=data.get("modified_by"),
    )


def payload_from_json(data: dict[str, Any]) -> PayloadInfo:
    return PayloadInfo(
        name=data["name"],
        revision=int(data["revision"]),
        checksum=data["checksum"],
        sha256=data.get("sha256"),
        size=data.get("size"),
        created=_parse_time(data.get("created")),
        creator=data.get("creator"),
        metadata=dict(data.get("metadata") or {}),
        payload_id=data.get("payload_id"),
        url=data.get("url"),
    )


def iov_from_json(data: dict[str, Any]) -> IntervalOfValidity:
    return IntervalOfValidity(
        int(data["first_exp"]), int(data["first_run"]), int(data["final_exp"]), int(data["final_run"])
    )


def iov_record_from_json(data: dict[str, Any]) -> IoVRecord:
    return IoVRecord(
        iov_id=data.get("iov_id"),
        tag=data["tag"],
        payload=payload_from_json(data["payload"]),
        iov=iov_from_json(data["iov"]),
    )


def resolved_from_json(data: dict[str, Any], *, source: str | None = None) -> ResolvedPayload:
    return ResolvedPayload(
        payload=payload_from_json(data["payload"]),
        iov=iov_from_json(data["iov"]),
        tag=data["tag"],
        iov_id=data.get("iov_id"),
        source=source or data.get("source"),
    )


def diff_from_json(data: dict[str, Any]) -> TagDiff:
    return TagDiff(
        tag_a=data["tag_a"],
        tag_b=data["tag_b"],
        only_a=[iov_record_from_json(r) for r in data.get("only_a", [])],
        only_b=[iov_record_from_json(r) for r in data.get("only_b", [])],
    )


def audit_from_json(data: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        entry_id=int(data["entry_id"]),
        when=_parse_time(data["when"]),
        who=data["who"],
        action=data["action"],
        tag=data.get("tag"),
        details=dict(data.get("details") or {}),
    )


def token_from_json(data: dict[str, Any]) -> TokenInfo:
    return TokenInfo(
        token_id=int(data["token_id"]),
        name=data["name"],
        scopes=tuple(data.get("scopes") or ()),
        created=_parse_time(data.get("created")),
        revoked=bool(data.get("revoked", False)),
    )


# -- errors -------------------------------------------------------------------------------

def _all_error_classes() -> list[type]:
    from .. import exceptions

    found, todo = [], [exceptions.ConditionsError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def error_class_for_code(code: str | None) -> type | None:
    """The ConditionsError subclass whose ``code`` is ``code`` (None when unknown).

    Only classes from :mod:`conditions.exceptions` qualify: a server cannot make the
    client instantiate arbitrary types.
    """
    if not code:
        return None
    for cls in _all_error_classes():
        if cls.__module__ == "conditions.exceptions" and cls.__dict__.get("code") == code:
            return cls
    return None
