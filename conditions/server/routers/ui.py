"""The read-only web pages under ``/ui/`` (server-rendered HTML, a little JavaScript).

Every page shows what its JSON twin answers (linked at the bottom of each page) and takes
the same query parameters, so a page URL can be pasted into an e-log and turned into an
API call by changing its prefix. Pages are anonymous like every read. Templates escape
everything they print (Jinja2 autoescaping), and a strict Content-Security-Policy allows
only this server's own script and style files, so a tag description or payload metadata
holding HTML shows as text and could not run even if it slipped through.
"""

from __future__ import annotations

import hashlib
import http
import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ... import exceptions as exc
from ...store.base import Store
from ...tags import GlobalTagState
from .. import browse, timeline_chart
from ..deps import get_store
from ..errors import status_for
from ..schemas import INT32_MAX
from ._common import PRINTABLE
from .browse import DIGITS, diff_params, get_browse_cache, optional_int, tag_view_params, tags_filter

PREFIX = "/ui"
UI_DIR = Path(__file__).resolve().parent.parent / "ui"
STATIC_DIR = UI_DIR / "static"
#: Only this server's own files; inline SVG markup is not script or style, so it stays allowed.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".svg": "image/svg+xml"}

router = APIRouter(prefix=PREFIX, include_in_schema=False)


# -- templates --------------------------------------------------------------------------------------

def q(value: Any) -> str:
    """One URL path segment: everything but unreserved characters percent-encoded."""
    return quote(str(value), safe="")


def url(path: str, **params: Any) -> str:
    """``path`` with the non-empty ``params`` as its query string."""
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return path + ("?" + urlencode(kept) if kept else "")


def tag_url(name: str, **params: Any) -> str:
    return url(f"{PREFIX}/tags/{q(name)}", **params)


def payload_url(name: str, revision: int | None = None) -> str:
    return f"{PREFIX}/payloads/{q(name)}" + (f"/{int(revision)}" if revision is not None else "")


def iov_text(iov: dict[str, int]) -> str:
    return f"{iov['first_exp']},{iov['first_run']},{iov['final_exp']},{iov['final_run']}"


def when(value: str | None) -> str:
    """An ISO time from the API as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if not value:
        return "–"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def size_text(size: int | None) -> str:
    if size is None:
        return "–"
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= factor:
            return f"{size / factor:.1f} {unit} ({size:,} bytes)"
    return f"{size} bytes"


def pretty(value: Any) -> str:
    """Any JSON value as indented text (escaped by the template like everything else)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@lru_cache(maxsize=None)
def static_version(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def static(name: str) -> str:
    """URL of a static file, versioned by its content so browsers may cache it for ever."""
    return f"{PREFIX}/static/{name}?v={static_version(name)}"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(UI_DIR / "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.globals.update(url=url, tag_url=tag_url, payload_url=payload_url, q=q, static=static,
                       states=[s.value for s in GlobalTagState], prefix=PREFIX)
    env.filters.update(iov=iov_text, when=when, size=size_text, pretty=pretty, number=number)
    return env


def page(template: str, *, json_url: str | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    body = environment().get_template(template).render(json_url=json_url, **context)
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


def json_twin(path: str, request: Request) -> str:
    """The API URL answering the same data as this page, with the page's query string."""
    query = request.url.query
    return path + ("?" + query if query else "")


# -- pages ------------------------------------------------------------------------------------------

@router.get("/", response_class=HTMLResponse)
@router.get("/tags", response_class=HTMLResponse)
def tags_page(request: Request, params: dict = Depends(tags_filter), store: Store = Depends(get_store)):
    view = browse.tags_page(store, **params)
    return page("tags.html", json_url=json_twin("/api/v1/browse/tags", request), view=view)


@router.get("/tags/{name}", response_class=HTMLResponse)
def tag_page(request: Request, name: str, params: dict = Depends(tag_view_params),
             store: Store = Depends(get_store), cache: browse.BrowseCache = Depends(get_browse_cache)):
    view = browse.tag_page(store, cache, name, **params)
    chart = timeline_chart.chart(view["timeline"], cursor_run=params["run"])
    here = {"exp": view["timeline"]["exp"], "run": params["run"], "payload": params["payload"],
            "from": params["run_from"], "to": params["run_to"],
            "per_page": params["per_page"] if params["per_page"] != browse.DEFAULT_PAGE_SIZE else None}
    return page("tag.html", json_url=json_twin(f"/api/v1/browse/tags/{q(name)}", request), view=view,
                chart=chart, here=here)


@router.get("/payloads/{name}", response_class=HTMLResponse)
def payload_revisions(request: Request, name: str, store: Store = Depends(get_store)):
    revisions = store.list_payloads(name)
    if not revisions:
        raise exc.UnknownPayloadError(f"no payload named {name!r}")
    return page("payload_revisions.html", json_url=url("/api/v1/payloads", name=name), name=name,
                revisions=[browse.wire.payload_to_json(p) for p in revisions])


@router.get("/payloads/{name}/{revision}", response_class=HTMLResponse)
def payload_page(request: Request, name: str, revision: int = PathParam(..., ge=1, le=INT32_MAX),
                 store: Store = Depends(get_store), cache: browse.BrowseCache = Depends(get_browse_cache)):
    view = browse.payload_page(store, cache, name, revision)
    return page("payload.html", json_url=f"/api/v1/browse/payloads/{q(name)}/{revision}", view=view)


@router.get("/diff", response_class=HTMLResponse)
def diff_page(request: Request, tag_a: str | None = Query(None, max_length=200, pattern=PRINTABLE),
              tag_b: str | None = Query(None, max_length=200, pattern=PRINTABLE),
              exp: str | None = Query(None, pattern=DIGITS), run: str | None = Query(None, pattern=DIGITS),
              store: Store = Depends(get_store), cache: browse.BrowseCache = Depends(get_browse_cache)):
    tags = [t.name for t in store.list_tags()]
    view = None
    if tag_a and tag_b:
        view = browse.diff_page(store, cache, **diff_params(tag_a=tag_a, tag_b=tag_b, exp=exp, run=run))
    twin = json_twin("/api/v1/browse/diff", request) if view else None
    return page("diff.html", json_url=twin, view=view, tags=tags,
                form={"tag_a": tag_a or "", "tag_b": tag_b or "", "exp": optional_int(exp, "exp"),
                      "run": optional_int(run, "run")})


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, tag: str | None = Query(None, max_length=200, pattern=PRINTABLE),
               user: str | None = Query(None, max_length=200, pattern=PRINTABLE),
               limit: int = Query(100, ge=1, le=10_000), store: Store = Depends(get_store)):
    view = browse.audit_page(store, tag=tag or None, user=user or None, limit=limit)
    return page("audit.html", json_url=json_twin("/api/v1/audit", request), view=view)


@router.get("/static/{name}")
def static_file(name: str = PathParam(..., pattern=r"^[a-z0-9_\-]+\.(css|js|svg)$")):
    # Names are a fixed pattern and only files directly in STATIC_DIR are served.
    path = STATIC_DIR / name
    if not path.is_file():
        raise StarletteHTTPException(404, f"no static file {name!r}")
    return Response(path.read_bytes(), media_type=_STATIC_TYPES[path.suffix],
                    headers={"Cache-Control": "public, max-age=31536000, immutable",
                             "X-Content-Type-Options": "nosniff"})


# -- wiring -----------------------------------------------------------------------------------------

def _is_page(request: Request) -> bool:
    path = request.url.path
    return (path == PREFIX or path.startswith(PREFIX + "/")) and not path.startswith(PREFIX + "/static/")


def _error_page(status: int, message: str) -> HTMLResponse:
    return page("error.html", json_url=None, status_code=status, status=status,
                reason=http.HTTPStatus(status).phrase, message=message)


def install(app: FastAPI) -> None:
    """Serve the pages: the router, ``/`` redirecting to ``/ui/``, the per-worker browse
    cache, and HTML error pages for ``/ui/`` paths (JSON everywhere else, as before)."""
    app.state.browse_cache = browse.BrowseCache(app.state.store)
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def home():
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @app.get(PREFIX, include_in_schema=False)
    def ui_root():
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    json_handlers = dict(app.exception_handlers)

    def html_or_json(kind: type, describe):
        original = json_handlers[kind]

        async def handler(request: Request, error: Exception):
            if _is_page(request):
                status, message = describe(error)
                return _error_page(status, message)
            return await original(request, error)

        app.add_exception_handler(kind, handler)

    html_or_json(exc.ConditionsError, lambda e: (status_for(e), str(e)))
    html_or_json(RequestValidationError, lambda e: (422, "invalid request: " + "; ".join(
        f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg', 'invalid')}" for item in e.errors())))
    html_or_json(StarletteHTTPException, lambda e: (e.status_code, e.detail if isinstance(e.detail, str)
                                                    else http.HTTPStatus(e.status_code).phrase))


