"""The audit log: who changed what, when."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ...store.base import Store
from .. import wire
from ..deps import NO_STORE, get_store
from ..responses import json_response
from ..schemas import AuditOut
from ._common import PRINTABLE, READ_ERRORS

router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit", response_model=list[AuditOut], responses=READ_ERRORS)
def audit(tag: str | None = Query(None, max_length=200, pattern=PRINTABLE, description="only this tag"),
          user: str | None = Query(None, max_length=200, pattern=PRINTABLE, description="only changes by this user"),
          limit: int = Query(100, ge=1, le=10_000), store: Store = Depends(get_store)):
    """The most recent audit entries, newest first."""
    entries = store.audit(tag=tag, limit=limit, who=user)
    return json_response([wire.audit_to_json(e) for e in entries], headers=NO_STORE)
