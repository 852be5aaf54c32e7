"""Bits shared by the routers: documented error answers and small lookups."""

from __future__ import annotations

from ...exceptions import UnknownIoVError
from ...payload import IoVRecord
from ...store.base import Store
from ..schemas import ErrorBody

#: OpenAPI descriptions of the error answers (all carry ErrorBody).
READ_ERRORS = {404: {"model": ErrorBody, "description": "unknown tag, payload or IoV"},
               422: {"model": ErrorBody, "description": "invalid input"}}
WRITE_ERRORS = {
    **READ_ERRORS,
    401: {"model": ErrorBody, "description": "no or unknown token"},
    403: {"model": ErrorBody, "description": "token outside its scope"},
    409: {"model": ErrorBody, "description": "lifecycle violation, frozen tag or concurrent change"},
}

#: Shape of free-text query parameters (no control characters).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


def find_iov(store: Store, iov_id: int) -> IoVRecord:
    """The IoV with this id, in whichever tag holds it (the scope check needs the tag)."""
    get_iov = getattr(store, "get_iov", None)
    if callable(get_iov):
        return get_iov(iov_id)
    for tag in store.list_tags():
        for record in store.iovs(tag.name):
            if record.iov_id == iov_id:
                return record
    raise UnknownIoVError(f"no IoV with id {iov_id}")
