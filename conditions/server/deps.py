"""FastAPI dependencies: the store, the server settings, and the caller's token."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..exceptions import AuthenticationError
from ..store.base import Store, TokenInfo

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


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def current_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
) -> TokenInfo:
    """The caller's live token; AuthenticationError (401) when missing, unknown or revoked."""
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("this operation needs a token: send 'Authorization: Bearer <secret>'")
    token = get_store(request).authenticate(credentials.credentials)
    if token is None or token.revoked:
        raise AuthenticationError("unknown or revoked token")
    return token


def metadata_headers(request: Request) -> dict[str, str]:
    """Cache headers for metadata answers: short-lived, shareable by proxies."""
    return {"Cache-Control": f"public, max-age={get_settings(request).metadata_max_age}"}


NO_STORE = {"Cache-Control": "no-store"}
