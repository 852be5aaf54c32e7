"""Single IoVs by id: read, change the interval, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam

from ...iov import IntervalOfValidity
from ...store.base import Store, TokenInfo
from .. import auth, wire
from ..deps import NO_STORE, current_token, get_store, metadata_headers
from ..responses import json_response
from ..schemas import IoVOut, IoVUpdate
from ._common import READ_ERRORS, WRITE_ERRORS, find_iov

router = APIRouter(prefix="/api/v1", tags=["iovs"])

IoVId = PathParam(..., ge=1, le=2**63 - 1)


@router.get("/iovs/{iov_id}", response_model=IoVOut, responses=READ_ERRORS)
def get_iov(request: Request, iov_id: int = IoVId, store: Store = Depends(get_store)):
    return json_response(wire.iov_record_to_json(find_iov(store, iov_id)), headers=metadata_headers(request))


@router.patch("/iovs/{iov_id}", response_model=IoVOut, responses=WRITE_ERRORS)
def modify_iov(request: Request, body: IoVUpdate, iov_id: int = IoVId, store: Store = Depends(get_store),
               token: TokenInfo = Depends(current_token)):
    """Change the interval of one IoV (only in OPEN tags)."""
    tag = find_iov(store, iov_id).tag
    auth.require_tag_scope(token, tag, "modify IoVs")
    record = store.modify_iov(iov_id, IntervalOfValidity(**body.iov.model_dump()), user=token.name)
    request.app.state.resolve_cache.forget_tag(tag)
    return json_response(wire.iov_record_to_json(record), headers=NO_STORE)


@router.delete("/iovs/{iov_id}", response_model=IoVOut, responses=WRITE_ERRORS)
def delete_iov(request: Request, iov_id: int = IoVId, store: Store = Depends(get_store),
               token: TokenInfo = Depends(current_token)):
    """Remove one IoV (only in OPEN tags); answers the IoV as it was."""
    tag = find_iov(store, iov_id).tag
    auth.require_tag_scope(token, tag, "delete IoVs")
    record = store.delete_iov(iov_id, user=token.name)
    request.app.state.resolve_cache.forget_tag(tag)
    return json_response(wire.iov_record_to_json(record), headers=NO_STORE)
