"""Global tags: list, create, describe, clone, change state, and their IoVs and diffs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from ...iov import IntervalOfValidity
from ...store.base import Store, TokenInfo
from ...tags import GlobalTagState
from .. import auth, wire
from ..deps import NO_STORE, current_token, get_store, metadata_headers
from ..responses import dumps, json_response, raw_json_response
from ..schemas import (INT32_MAX, DiffOut, IoVCreate, IoVOut, TagClone, TagCreate, TagModify, TagOut,
                       TagStateChange)
from ._common import PRINTABLE, READ_ERRORS, WRITE_ERRORS, PageLimit, PageOffset, paged

router = APIRouter(prefix="/api/v1", tags=["tags"])


def _forget(request: Request, tag: str) -> None:
    request.app.state.resolve_cache.forget_tag(tag)


@router.get("/tags", response_model=list[TagOut], responses=READ_ERRORS)
def list_tags(request: Request, state: GlobalTagState | None = None,
              pattern: str | None = Query(None, max_length=200, pattern=PRINTABLE,
                                          description="fnmatch-style name pattern"),
              store: Store = Depends(get_store)):
    """All global tags, optionally only those in one state or matching a name pattern."""
    tags = store.list_tags(state=state, pattern=pattern)
    return json_response([wire.tag_to_json(t) for t in tags], headers=metadata_headers(request))


@router.post("/tags", status_code=201, response_model=TagOut, responses=WRITE_ERRORS)
def create_tag(request: Request, body: TagCreate, store: Store = Depends(get_store),
               token: TokenInfo = Depends(current_token)):
    """A new OPEN global tag (admin)."""
    auth.require_admin(token, "create global tags")
    tag = store.create_tag(body.name, body.description, user=token.name)
    return json_response(wire.tag_to_json(tag), status_code=201, headers=NO_STORE)


@router.get("/tags/{name}", response_model=TagOut, responses=READ_ERRORS)
def get_tag(request: Request, name: str, store: Store = Depends(get_store)):
    return json_response(wire.tag_to_json(store.get_tag(name)), headers=metadata_headers(request))


@router.patch("/tags/{name}", response_model=TagOut, responses=WRITE_ERRORS)
def modify_tag(request: Request, name: str, body: TagModify, store: Store = Depends(get_store),
               token: TokenInfo = Depends(current_token)):
    """Change a tag's description (admin)."""
    auth.require_admin(token, "modify global tags")
    tag = store.modify_tag(name, description=body.description, user=token.name)
    return json_response(wire.tag_to_json(tag), headers=NO_STORE)


@router.post("/tags/{name}/clone", status_code=201, response_model=TagOut, responses=WRITE_ERRORS)
def clone_tag(request: Request, name: str, body: TagClone, store: Store = Depends(get_store),
              token: TokenInfo = Depends(current_token)):
    """A new OPEN tag ``destination`` holding copies of every IoV of ``name`` (admin)."""
    auth.require_admin(token, "clone global tags")
    tag = store.clone_tag(name, body.destination, description=body.description, user=token.name)
    return json_response(wire.tag_to_json(tag), status_code=201, headers=NO_STORE)


@router.put("/tags/{name}/state", response_model=TagOut, responses=WRITE_ERRORS)
def set_tag_state(request: Request, name: str, body: TagStateChange, store: Store = Depends(get_store),
                  token: TokenInfo = Depends(current_token)):
    """Move the tag along its lifecycle (admin); 409 outside the allowed transitions."""
    auth.require_admin(token, "change global tag states")
    _forget(request, name)
    tag = store.set_tag_state(name, body.state, user=token.name)
    _forget(request, name)
    return json_response(wire.tag_to_json(tag), headers=NO_STORE)


@router.get("/tags/{name}/iovs", response_model=list[IoVOut], responses=READ_ERRORS)
def list_iovs(request: Request, name: str,
              payload: str | None = Query(None, max_length=200, pattern=PRINTABLE,
                                          description="only this payload name"),
              exp: int | None = Query(None, ge=0, le=INT32_MAX),
              run: int | None = Query(None, ge=0, le=INT32_MAX),
              limit: int | None = PageLimit, offset: int = PageOffset,
              store: Store = Depends(get_store)):
    """IoVs of a tag, optionally only for one payload name and/or one (exp, run); with
    ``limit``, one page of them (follow the ``Link: rel="next"`` header). Answers are
    kept per worker while the tag's change serial is unchanged (listing_cache)."""
    tag_version = getattr(store, "tag_version", None)
    version = tag_version(name) if callable(tag_version) else None
    cache = request.app.state.listing_cache
    key = (name, payload, exp, run, limit, offset)
    if version is not None:
        cached = cache.get(key, version)
        if cached is not None:
            body, link = cached
            return raw_json_response(body, headers={**metadata_headers(request), **link})
    page = getattr(store, "iovs_page", None)
    records, link = paged(
        request, limit, offset,
        (lambda **slice_: page(name, name=payload, exp=exp, run=run, **slice_)) if page else None,
        lambda: store.iovs(name, name=payload, exp=exp, run=run))
    body = dumps([wire.iov_record_to_json(r) for r in records])
    if version is not None:
        cache.put(key, version, body, link)
    return raw_json_response(body, headers={**metadata_headers(request), **link})


@router.post("/tags/{name}/iovs", status_code=201, response_model=IoVOut, responses=WRITE_ERRORS)
def add_iov(request: Request, name: str, body: IoVCreate, store: Store = Depends(get_store),
            token: TokenInfo = Depends(current_token)):
    """Make payload revision ``revision`` valid for ``iov`` in tag ``name``."""
    auth.require_tag_scope(token, name, "add IoVs")
    iov = IntervalOfValidity(**body.iov.model_dump())
    record = store.add_iov(name, body.payload, body.revision, iov, user=token.name)
    _forget(request, name)
    return json_response(wire.iov_record_to_json(record), status_code=201, headers=NO_STORE)


@router.get("/diff", response_model=DiffOut, responses=READ_ERRORS)
def diff(request: Request, tag_a: str = Query(..., max_length=200), tag_b: str = Query(..., max_length=200),
         exp: int | None = Query(None, ge=0, le=INT32_MAX), run: int | None = Query(None, ge=0, le=INT32_MAX),
         store: Store = Depends(get_store)):
    """IoVs in one tag and not the other, optionally restricted to one (exp, run)."""
    result = store.diff(tag_a, tag_b, exp=exp, run=run)
    return json_response(wire.diff_to_json(result), headers=metadata_headers(request))
