"""FastAPI dependencies: the store, the server settings, and the caller's token."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..exceptions import AuthenticationError, TooManyFailedLoginsError
from ..store.base import Store, TokenInfo
from .limits import DEFAULT_LIMITS

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="API token from `conditionsdb token create`; needed for every write",
)


@dataclass(frozen=True)
class Settings:
    """How this server instance behaves; fixed when the app is created."""

    max_upload_bytes: int = 2 * 1024**3
    #: max-age (seconds) of metadata answers: proxies may serve them this long.
    metadata_max_age: int = 60
    #: base URL clients use to reach this server (behind a proxy); None = from the request
    public_url: str | None = None
    #: directory for uploads in flight (None: the system temp dir)
    upload_dir: str | None = None
    #: seconds a worker trusts its cached view of a tag's state (resolve fast path)
    state_ttl: float = 2.0
    #: cap of every request body other than a payload upload (JSON documents)
    max_json_bytes: int = DEFAULT_LIMITS.max_json_bytes
    #: seconds a request body may stall before the request is answered 408
    body_timeout: float = DEFAULT_LIMITS.body_timeout
    #: failed authentications per client within ``auth_window`` before it gets 429
    auth_failure_limit: int = 10
    auth_window: float = 60.0


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def current_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
) -> TokenInfo:
    """The caller's live token; AuthenticationError (401) when missing, unknown or revoked.

    Requests with a body were authenticated by the RequestGuard middleware before their
    body was read; its answer is reused."""
    checked = getattr(request.state, "token", None)
    if checked is not None:
        return checked
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("this operation needs a token: send 'Authorization: Bearer <secret>'")
    return authenticate_secret(request, credentials.credentials)


def authenticate_secret(request: Request, secret: str) -> TokenInfo:
    """The live token behind ``secret``. Failures are counted per client address (and
    logged); a client with too many recent failures gets TooManyFailedLoginsError (429)
    without its secret even being looked up."""
    client = request.client.host if request.client else "unknown"
    tracker = getattr(request.app.state, "failed_auth", None)
    wait = tracker.retry_after(client) if tracker is not None else None
    if wait is not None:
        raise TooManyFailedLoginsError(f"too many failed authentications from {client}; retry in {wait:.0f} s",
                                       retry_after=wait)
    token = get_store(request).authenticate(secret)
    if token is None or token.revoked:
        if tracker is not None:
            tracker.record(client, f"unknown or revoked token on {request.method} {request.url.path}")
        raise AuthenticationError("unknown or revoked token")
    return token


def upload_directory(request: Request) -> str | None:
    """Where uploads in flight are written: the configured directory, else the store's
    payload temp area (same file system as the payloads, found by `conditionsdb check`)."""
    configured = get_settings(request).upload_dir
    if configured is not None:
        return configured
    blobs = getattr(get_store(request), "blobs", None)
    if blobs is None:
        return None
    blobs.temp_dir.mkdir(parents=True, exist_ok=True)
    return str(blobs.temp_dir)


def metadata_headers(request: Request) -> dict[str, str]:
    """Cache headers for metadata answers: short-lived, shareable by proxies."""
    return {"Cache-Control": f"public, max-age={get_settings(request).metadata_max_age}"}


NO_STORE = {"Cache-Control": "no-store"}
