"""Bits shared by the routers: documented error answers and small lookups."""

from __future__ import annotations

from typing import Any, Callable, Sequence
from urllib.parse import urlencode

from fastapi import Query, Request

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


#: Largest page a listing answers at once.
MAX_PAGE = 10_000

#: The paging parameters of a listing. Without ``limit`` the whole list comes back (as
#: always); with it, one page, and a ``Link: <...>; rel="next"`` header while more remain.
PageLimit = Query(None, ge=1, le=MAX_PAGE, description=f"page size (1 to {MAX_PAGE}); omit for the whole list")
PageOffset = Query(0, ge=0, le=2**31 - 1, description="index of the first item of the page")


def paged(request: Request, limit: int | None, offset: int, page: Callable[..., Sequence[Any]] | None,
          everything: Callable[[], Sequence[Any]]) -> tuple[Sequence[Any], dict[str, str]]:
    """The items of one page and its ``Link`` header. ``page(limit=, offset=)`` asks the
    store for just that page (one row more, to know whether another page follows);
    stores without it are sliced here."""
    if limit is None:
        return everything(), {}
    if page is not None:
        items = list(page(limit=limit + 1, offset=offset))
    else:
        items = list(everything())[offset:offset + limit + 1]
    headers = {}
    if len(items) > limit:
        items = items[:limit]
        query = dict(request.query_params)
        query.update(limit=str(limit), offset=str(offset + limit))
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return items, headers
