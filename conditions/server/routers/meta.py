"""Service health and the caller's identity."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ...store.base import TokenInfo
from .. import wire
from ..deps import NO_STORE, current_token
from ..responses import json_response
from ..schemas import Health, TokenOut
from ._common import WRITE_ERRORS

API_VERSION = "1"
router = APIRouter(prefix="/api/v1", tags=["service"])


@router.get("/health", response_model=Health)
def health():
    """Liveness: answers as soon as the server accepts requests."""
    return json_response({"status": "ok", "api_version": API_VERSION}, headers=NO_STORE)


@router.get("/whoami", response_model=TokenOut, responses=WRITE_ERRORS)
def whoami(token: TokenInfo = Depends(current_token)):
    """The token the request authenticated with (never its secret)."""
    return json_response(wire.token_to_json(token), headers=NO_STORE)
