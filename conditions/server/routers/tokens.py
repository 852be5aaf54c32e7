"""API tokens over HTTP (admin only); `conditionsdb token` does the same on the database."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam

from ...store.base import Store, TokenInfo
from .. import auth, wire
from ..deps import NO_STORE, current_token, get_store
from ..responses import json_response
from ..schemas import TokenCreate, TokenCreated, TokenOut
from ._common import WRITE_ERRORS

router = APIRouter(prefix="/api/v1", tags=["tokens"])


@router.get("/tokens", response_model=list[TokenOut], responses=WRITE_ERRORS)
def list_tokens(store: Store = Depends(get_store), token: TokenInfo = Depends(current_token)):
    auth.require_admin(token, "list tokens")
    return json_response([wire.token_to_json(t) for t in store.list_tokens()], headers=NO_STORE)


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=WRITE_ERRORS)
def create_token(body: TokenCreate, store: Store = Depends(get_store), token: TokenInfo = Depends(current_token)):
    """A new token; the answer holds its secret, which is never shown again."""
    auth.require_admin(token, "create tokens")
    info, secret = store.create_token(body.name, body.scopes, user=token.name)
    return json_response({"token": wire.token_to_json(info), "secret": secret}, status_code=201, headers=NO_STORE)


@router.delete("/tokens/{token_id}", response_model=TokenOut, responses=WRITE_ERRORS)
def revoke_token(token_id: int = PathParam(..., ge=1, le=2**63 - 1), store: Store = Depends(get_store),
                 token: TokenInfo = Depends(current_token)):
    auth.require_admin(token, "revoke tokens")
    return json_response(wire.token_to_json(store.revoke_token(token_id, user=token.name)), headers=NO_STORE)
