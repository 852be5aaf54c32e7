"""Resolve: which payload revision is valid for (tags, name, exp, run).

The hot path of every job. Answers that cannot change unnoticed (see resolve_cache) are served
by the ResolveFastPath middleware before FastAPI even parses the request; this
``async`` handler runs the store lookup on the threadpool otherwise.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ...exceptions import InvalidNameError
from .. import wire
from ..deps import get_settings, get_store
from ..responses import dumps, raw_json_response
from ..schemas import INT32_MAX, ResolvedOut
from ._common import READ_ERRORS, ErrorBody

router = APIRouter(prefix="/api/v1", tags=["resolve"])


@router.get("/resolve", response_model=ResolvedOut,
            responses={**READ_ERRORS, 409: {"model": ErrorBody, "description": "tag state not usable"}})
async def resolve(
    request: Request,
    name: str = Query(..., min_length=1, max_length=200, description="payload name"),
    exp: int = Query(..., ge=0, le=INT32_MAX),
    run: int = Query(..., ge=0, le=INT32_MAX),
    tag: list[str] = Query(..., description="global tags, highest priority first (repeat the parameter)"),
    allow_open: bool = Query(False, description="also use OPEN tags"),
):
    """The payload ``name`` valid at (exp, run): the first tag holding a matching IoV
    decides, and within it the highest revision. 404 when none matches, 409 when a tag's
    state may not be used for processing."""
    if not tag or len(tag) > 50 or any(not t or len(t) > 200 for t in tag):
        raise InvalidNameError("give 1 to 50 global tag names of 1 to 200 characters")
    tags = tuple(tag)
    key = (tags, name, exp, run, allow_open)
    cache = request.app.state.resolve_cache
    headers = {"Cache-Control": f"public, max-age={get_settings(request).metadata_max_age}"}
    body = cache.lookup(key, tags)
    if body is None:
        body = await run_in_threadpool(_resolve_blocking, request, key)
    return raw_json_response(body, headers=headers)


def _resolve_blocking(request: Request, key) -> bytes:
    tags, name, exp, run, allow_open = key
    store = get_store(request)
    # The versions of the tag rows the answer came from decide whether (and for how long)
    # the fast path may repeat it: see resolve_cache.
    resolved, used = store.resolve_versioned(list(tags), name, exp, run, allow_open=allow_open)
    body = dumps(wire.resolved_to_json(resolved))
    request.app.state.resolve_cache.remember(key, tags, resolved.tag, body, used)
    return body
