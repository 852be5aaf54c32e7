"""The FastAPI application: wiring of settings, store, routers and error handlers."""

from __future__ import annotations

import os

from fastapi import FastAPI

from ..store.base import Store
from .deps import Settings
from .errors import install_error_handlers
from .guard import FailedAuthTracker, RequestGuard
from .limits import DEFAULT_LIMITS
from .listing_cache import ListingCache
from .resolve_cache import ResolveCache, ResolveFastPath
from .routers import ALL as ALL_ROUTERS
from .routers import ui as ui_pages

#: Environment variables through which ``conditionsdb serve`` configures worker processes.
ENV_DB = "CONDITIONSDB_SERVE_DB"
ENV_PAYLOADS = "CONDITIONSDB_SERVE_PAYLOADS"
ENV_MAX_UPLOAD = "CONDITIONSDB_SERVE_MAX_UPLOAD"
ENV_PUBLIC_URL = "CONDITIONSDB_SERVE_PUBLIC_URL"
ENV_MAX_AGE = "CONDITIONSDB_SERVE_MAX_AGE"
ENV_MAX_JSON = "CONDITIONSDB_SERVE_MAX_JSON"
ENV_BODY_TIMEOUT = "CONDITIONSDB_SERVE_BODY_TIMEOUT"

DESCRIPTION = """\
A conditions database: global tags, immutable payloads, intervals of validity.

* `/api/v1/...`: the native API. Reads are anonymous; writes need
  `Authorization: Bearer <token>` (scopes `admin`, or `iov:<tag glob>`).
  Errors are JSON `{code, reason, message}`.
* `/v2/...` and `/files/...`: read-only endpoints for basf2's central metadata provider.
* `/ui/`: read-only web pages; `/api/v1/browse/...` answers their data as JSON.

Payload downloads carry `ETag` (SHA-256) and are cacheable for ever; metadata answers
for a short while (`Cache-Control: max-age`), so HTTP proxies such as Squid can serve jobs.
"""


def create_app(
    store: Store,
    *,
    max_upload_bytes: int = 2 * 1024**3,
    metadata_max_age: int = 60,
    public_url: str | None = None,
    upload_dir: str | None = None,
    state_ttl: float = 2.0,
    max_json_bytes: int = DEFAULT_LIMITS.max_json_bytes,
    body_timeout: float = DEFAULT_LIMITS.body_timeout,
    close_store_on_shutdown: bool = False,
) -> FastAPI:
    """The REST service over ``store``.

    ``max_upload_bytes`` caps uploads (413 beyond); ``max_json_bytes`` caps every other
    request body; ``body_timeout`` is how long a request body may stall (408 after);
    ``metadata_max_age`` is the ``Cache-Control: max-age`` of metadata answers;
    ``public_url`` is the base URL clients reach the server under (for basf2's
    ``baseUrl``; default: from each request); ``upload_dir`` is where uploads in flight
    are written (default: the store's own payload temp directory, else the system's);
    ``state_ttl`` is how long a worker trusts a cached tag state on the resolve fast path.
    """
    app = FastAPI(title="conditionsdb", version="1", description=DESCRIPTION,
                  openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs", redoc_url=None)
    app.state.store = store
    app.state.settings = Settings(max_upload_bytes=max_upload_bytes, metadata_max_age=metadata_max_age,
                                  public_url=public_url, upload_dir=upload_dir, state_ttl=state_ttl,
                                  max_json_bytes=max_json_bytes, body_timeout=body_timeout)
    app.state.resolve_cache = ResolveCache(store, state_ttl=state_ttl)
    app.state.listing_cache = ListingCache()
    settings = app.state.settings
    app.state.failed_auth = FailedAuthTracker(limit=settings.auth_failure_limit, window=settings.auth_window)
    app.add_middleware(ResolveFastPath, cache=app.state.resolve_cache, max_age=metadata_max_age)
    # Outermost: a request with a body is authenticated and capped before anything reads it.
    app.add_middleware(RequestGuard, authenticate=store.authenticate, settings=settings,
                       failures=app.state.failed_auth, routes=lambda: app.router.routes)
    install_error_handlers(app)
    for router in ALL_ROUTERS:
        app.include_router(router)
    ui_pages.install(app)  # the web pages at /ui/ (and / redirecting there)
    if close_store_on_shutdown:
        app.router.on_shutdown.append(store.close)
    return app


def app_from_environment() -> FastAPI:
    """App factory for uvicorn worker processes (``--factory``): each worker opens its
    own store from the ``CONDITIONSDB_SERVE_*`` environment set by ``conditionsdb serve``."""
    from ..store import open_store

    url = os.environ.get(ENV_DB)
    if not url:
        raise RuntimeError(f"{ENV_DB} is not set: start the server with `conditionsdb serve --db URL`")
    store = open_store(url, payload_dir=os.environ.get(ENV_PAYLOADS) or None, create=False)
    # Error messages name the store by its description; anonymous clients need not learn
    # the server's file paths or database host from them.
    store.description = "the server's conditions database"
    options = {}
    if os.environ.get(ENV_MAX_UPLOAD):
        options["max_upload_bytes"] = int(os.environ[ENV_MAX_UPLOAD])
    if os.environ.get(ENV_MAX_AGE):
        options["metadata_max_age"] = int(os.environ[ENV_MAX_AGE])
    if os.environ.get(ENV_MAX_JSON):
        options["max_json_bytes"] = int(os.environ[ENV_MAX_JSON])
    if os.environ.get(ENV_BODY_TIMEOUT):
        options["body_timeout"] = float(os.environ[ENV_BODY_TIMEOUT])
    return create_app(store, public_url=os.environ.get(ENV_PUBLIC_URL) or None,
                      close_store_on_shutdown=True, **options)
