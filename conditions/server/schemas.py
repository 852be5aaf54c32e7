"""Pydantic models of the native API's requests and answers (the OpenAPI schema).

Separate from the store's dataclasses on purpose: this is the public contract of the
HTTP API and changes only with a new API version. Answers are built by
:mod:`conditions.server.wire` and match these models field for field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from ..tags import GlobalTagState

#: Experiment and run numbers fit a signed 32-bit column; -1 means "open end".
INT32_MAX = 2**31 - 1
MAX_DESCRIPTION = 10_000


def _no_control_chars(value: str | None) -> str | None:
    # NUL bytes and other control characters are refused by PostgreSQL or break logs.
    if value is not None and any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise ValueError("control characters are not allowed")
    return value


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable error code (conditions.exceptions)")
    reason: str = Field(description="HTTP reason phrase")
    message: str = Field(description="what went wrong, for humans")


class IoVModel(BaseModel):
    """Inclusive (first_exp, first_run) .. (final_exp, final_run); -1 = open end."""

    first_exp: int = Field(ge=0, le=INT32_MAX)
    first_run: int = Field(ge=0, le=INT32_MAX)
    final_exp: int = Field(default=-1, ge=-1, le=INT32_MAX)
    final_run: int = Field(default=-1, ge=-1, le=INT32_MAX)


class TagOut(BaseModel):
    name: str
    state: GlobalTagState
    description: str = ""
    tag_id: int | None = None
    created: datetime | None = None
    modified: datetime | None = None
    created_by: str | None = None
    modified_by: str | None = None


class TagCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=MAX_DESCRIPTION)

    _text = field_validator("name", "description")(_no_control_chars)


class TagModify(BaseModel):
    description: str = Field(max_length=MAX_DESCRIPTION)

    _text = field_validator("description")(_no_control_chars)


class TagClone(BaseModel):
    destination: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)

    _text = field_validator("destination", "description")(_no_control_chars)


class TagStateChange(BaseModel):
    state: GlobalTagState


class PayloadOut(BaseModel):
    name: str
    revision: int
    checksum: str = Field(description="MD5 hex digest (the Belle II convention)")
    sha256: str | None = None
    size: int | None = None
    created: datetime | None = None
    creator: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    payload_id: int | None = None
    url: str | None = Field(default=None, description="location relative to the payload base URL")


class IoVCreate(BaseModel):
    payload: str = Field(min_length=1, max_length=200, description="payload name")
    revision: int = Field(ge=1, le=INT32_MAX)
    iov: IoVModel

    _text = field_validator("payload")(_no_control_chars)


class IoVUpdate(BaseModel):
    iov: IoVModel


class IoVOut(BaseModel):
    iov_id: int | None
    tag: str
    payload: PayloadOut
    iov: IoVModel


class ResolvedOut(BaseModel):
    payload: PayloadOut
    iov: IoVModel
    tag: str
    iov_id: int | None = None
    source: str | None = None


class DiffOut(BaseModel):
    tag_a: str
    tag_b: str
    only_a: list[IoVOut]
    only_b: list[IoVOut]
    identical: bool


class AuditOut(BaseModel):
    entry_id: int
    when: datetime
    who: str
    action: str
    tag: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class TokenOut(BaseModel):
    token_id: int
    name: str
    scopes: list[str]
    created: datetime | None = None
    revoked: bool = False


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1, max_length=50)

    _text = field_validator("name")(_no_control_chars)

    @field_validator("scopes")
    @classmethod
    def _valid_scopes(cls, scopes: list[str]) -> list[str]:
        from .auth import validate_scope

        return [validate_scope(s) for s in scopes]


class TokenCreated(BaseModel):
    token: TokenOut
    secret: str = Field(description="the bearer secret; shown only this once")


class Health(BaseModel):
    status: str
    api_version: str


# -- basf2 v2 (read-only, field names fixed by basf2's CentralMetadataProvider) -----------

class V2Name(BaseModel):
    name: str


class V2GlobalTag(BaseModel):
    name: str
    globalTagId: int | None
    globalTagStatus: V2Name
    globalTagType: V2Name
    description: str


class V2Payload(BaseModel):
    payloadId: int | None
    revision: int
    checksum: str
    payloadUrl: str
    baseUrl: str
    basf2Module: V2Name


class V2PayloadIov(BaseModel):
    payloadIovId: int | None
    expStart: int
    runStart: int
    expEnd: int
    runEnd: int


class V2IovPayload(BaseModel):
    payload: V2Payload
    payloadIov: V2PayloadIov


# -- basf2 v2 as basf2's Python client reads and writes it (framework/scripts/conditions_db) --

class V2Tag(V2GlobalTag):
    """A global tag as ``b2conditionsdb tag list/show`` reads it."""

    payloadCount: int = Field(description="distinct payload revisions the tag's IoVs use")
    dtmIns: str = Field(description="creation time, ISO 8601 with offset")
    dtmMod: str = Field(description="last modification time, ISO 8601 with offset")
    modifiedBy: str
    isDefault: bool = False


class V2TagType(BaseModel):
    name: str
    description: str = ""


class V2PayloadInfo(V2Payload):
    """A payload as ``b2conditionsdb iov --detail`` and ``upload`` read it."""

    dtmIns: str
    dtmMod: str
    modifiedBy: str
    isDefault: bool = False


class V2Iov(V2PayloadIov):
    dtmIns: str
    dtmMod: str
    modifiedBy: str


class V2GlobalTagPayload(BaseModel):
    """One payload of a tag with all its IoVs there (``/v2/globalTag/{name}/globalTagPayloads``)."""

    payloadId: V2PayloadInfo
    payloadIovs: list[V2Iov]


class V2TagCreate(BaseModel):
    """``ConditionsDB.create_globalTag`` / ``tag create``: ``modifiedBy`` is informational,
    the token's name is recorded as the author."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    modifiedBy: str | None = Field(default=None, max_length=200)
    isDefault: bool = False

    _text = field_validator("name", "description", "modifiedBy")(_no_control_chars)


class V2PayloadQuery(BaseModel):
    """One entry of ``POST /v2/checkPayloads``."""

    name: str = Field(min_length=1, max_length=200)
    checksum: str = Field(min_length=1, max_length=64)


class V2IovPayloadInfo(BaseModel):
    """One item of ``/v2/iovPayloads``: what the C++ reader needs, plus the dates and
    authors the Python client's ``iov --run --detail`` reads."""

    payload: V2PayloadInfo
    payloadIov: V2Iov
