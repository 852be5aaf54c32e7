"""The JSON twins of the web pages (``/ui/...``): the same data the pages show.

Tags, their IoVs, payloads, diffs and the audit log have their plain endpoints elsewhere;
these add what the pages need on top: counts, the timeline of one experiment, the winners
at one run, what a payload's bytes hold and its validation reports.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from ...exceptions import InvalidValueError
from ...store.base import Store
from ...tags import GlobalTagState
from .. import browse
from ..deps import get_store, metadata_headers
from ..responses import json_response
from ..schemas import INT32_MAX
from ._common import PRINTABLE, READ_ERRORS

router = APIRouter(prefix="/api/v1/browse", tags=["browse (the web pages' data)"])

IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
_IMAGE = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,120}\.png$"


def get_browse_cache(request: Request) -> browse.BrowseCache:
    return request.app.state.browse_cache


# Query parameters shared with the HTML pages (routers/ui.py), so both accept the same URLs.
# HTML forms send empty fields as empty strings: those mean "not given", for numbers too.
DIGITS = r"^[0-9]{0,10}$"


def optional_int(value: str | None, name: str) -> int | None:
    """An optional non-negative 32-bit query number ('' is None)."""
    if value is None or value == "":
        return None
    number = int(value)
    if number > INT32_MAX:
        raise InvalidValueError(f"{name} must be at most {INT32_MAX}, got {number}")
    return number


def tags_filter(state: str | None = Query(None, max_length=20, pattern=r"^[A-Za-z]*$",
                                          description="only tags in this state"),
                q: str | None = Query(None, max_length=200, pattern=PRINTABLE,
                                      description="name filter: a substring, or a glob with * ? []")):
    if state and state.upper() not in GlobalTagState.__members__:
        raise InvalidValueError(f"unknown global tag state {state!r}; states are "
                                + ", ".join(s.value for s in GlobalTagState))
    return {"state": GlobalTagState.parse(state) if state else None, "q": q or None}


def tag_view_params(exp: str | None = Query(None, pattern=DIGITS, description="experiment of the timeline"),
                    run: str | None = Query(None, pattern=DIGITS, description="show the winners at (exp, run)"),
                    page: int = Query(1, ge=1, le=10**9, description="page of the IoV table"),
                    per_page: int = Query(browse.DEFAULT_PAGE_SIZE, ge=1, le=browse.MAX_PAGE_SIZE),
                    payload: str | None = Query(None, max_length=200, pattern=PRINTABLE,
                                                description="IoV table: only this payload name"),
                    run_from: str | None = Query(None, pattern=DIGITS, alias="from",
                                                 description="timeline: first run shown"),
                    run_to: str | None = Query(None, pattern=DIGITS, alias="to",
                                               description="timeline: last run shown")):
    return {"exp": optional_int(exp, "exp"), "run": optional_int(run, "run"), "page": page, "per_page": per_page,
            "payload": payload or None, "run_from": optional_int(run_from, "from"),
            "run_to": optional_int(run_to, "to")}


def diff_params(tag_a: str = Query(..., max_length=200, pattern=PRINTABLE),
                tag_b: str = Query(..., max_length=200, pattern=PRINTABLE),
                exp: str | None = Query(None, pattern=DIGITS), run: str | None = Query(None, pattern=DIGITS)):
    return {"tag_a": tag_a, "tag_b": tag_b, "exp": optional_int(exp, "exp"), "run": optional_int(run, "run")}


@router.get("/tags", responses=READ_ERRORS)
def tags(request: Request, params: dict = Depends(tags_filter), store: Store = Depends(get_store)):
    """Global tags with their IoV and payload-name counts and last change (the tags page)."""
    return json_response(browse.tags_page(store, **params), headers=metadata_headers(request))


@router.get("/tags/{name}", responses=READ_ERRORS)
def tag(request: Request, name: str, params: dict = Depends(tag_view_params), store: Store = Depends(get_store),
        cache: browse.BrowseCache = Depends(get_browse_cache)):
    """One tag: counts, the timeline of one experiment (per payload name, the runs where each
    IoV wins and the IoVs it overrides), the winners at (exp, run), one page of IoVs."""
    return json_response(browse.tag_page(store, cache, name, **params), headers=metadata_headers(request))


@router.get("/payloads/{name}/{revision}", responses=READ_ERRORS)
def payload(request: Request, name: str, revision: int = PathParam(..., ge=1, le=INT32_MAX),
                  store: Store = Depends(get_store), cache: browse.BrowseCache = Depends(get_browse_cache)):
    """One payload revision: record, tags using it, what its bytes hold (safetensors header,
    manifest), and its validation reports."""
    return json_response(browse.payload_page(store, cache, name, revision), headers=metadata_headers(request))


@router.get("/payloads/{name}/{revision}/reports/{report_revision}/{image}",
            responses={**READ_ERRORS, 200: {"content": {"image/png": {}}}})
def report_image(name: str, revision: int = PathParam(..., ge=1, le=INT32_MAX),
                       report_revision: int = PathParam(..., ge=1, le=INT32_MAX),
                       image: str = PathParam(..., pattern=_IMAGE), store: Store = Depends(get_store),
                       cache: browse.BrowseCache = Depends(get_browse_cache)):
    """A plot of a validation report (PNG; immutable, as payloads are)."""
    data = browse.report_image(store, cache, name, revision, report_revision, image)
    return Response(data, media_type="image/png",
                    headers={**IMMUTABLE, "X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "default-src 'none'"})


@router.get("/diff", responses=READ_ERRORS)
def diff(request: Request, params: dict = Depends(diff_params), store: Store = Depends(get_store),
         cache: browse.BrowseCache = Depends(get_browse_cache)):
    """``/api/v1/diff``, plus at (exp, run) which revision each tag gives per payload name."""
    return json_response(browse.diff_page(store, cache, **params), headers=metadata_headers(request))
