"""Every error leaves the server as JSON ``{code, reason, message}`` with a fitting status.

``code`` is the ConditionsError's machine-readable code (the client maps it back to the
same exception class), ``reason`` the HTTP reason phrase, ``message`` the human text.
Client input never produces a 500: malformed requests are 422, unknown things 404,
lifecycle violations 409, and database errors caused by odd values are 422 as well.
"""

from __future__ import annotations

import http
import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import exceptions as exc

log = logging.getLogger(__name__)

#: HTTP status per exception class; the first matching base class in this order wins.
STATUS_FOR_ERROR: list[tuple[type[exc.ConditionsError], int]] = [
    (exc.AuthenticationError, 401),
    (exc.PermissionDeniedError, 403),
    (exc.UnknownTagError, 404),
    (exc.UnknownPayloadError, 404),
    (exc.UnknownIoVError, 404),
    (getattr(exc, "UnknownTokenError", exc.UnknownIoVError), 404),
    (exc.NoPayloadFoundError, 404),
    (exc.PayloadTooLargeError, 413),
    (exc.InvalidNameError, 422),
    (exc.InvalidIoVError, 422),
    (exc.ChecksumMismatchError, 422),
    (getattr(exc, "InvalidValueError", exc.InvalidIoVError), 422),
    (exc.TagExistsError, 409),
    (exc.TagStateError, 409),
    (exc.FrozenTagError, 409),
    (exc.UnusableTagError, 409),
    (exc.ConcurrentModificationError, 409),
    (exc.ReadOnlyStoreError, 409),
]


def status_for(error: exc.ConditionsError) -> int:
    for cls, status in STATUS_FOR_ERROR:
        if isinstance(error, cls):
            return status
    return 400


def error_response(status: int, code: str, message: str, *, extra: dict | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"code": code, "reason": http.HTTPStatus(status).phrase, "message": message}
    if extra:
        body.update(extra)
    all_headers = {"Cache-Control": "no-store"}
    all_headers.update(headers or {})
    return JSONResponse(body, status_code=status, headers=all_headers)


async def _conditions_error(request: Request, error: exc.ConditionsError) -> JSONResponse:
    status = status_for(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, error.code, str(error), headers=headers)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    try:
        detail = jsonable_encoder(error.errors(), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})
    except Exception:  # never let the error report itself fail
        detail = [str(e) for e in error.errors()]
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    message = "invalid request: " + ("; ".join(parts) or "validation failed")
    return error_response(422, "validation_error", message, extra={"detail": detail})


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    message = error.detail if isinstance(error.detail, str) else http.HTTPStatus(error.status_code).phrase
    return error_response(error.status_code, code, message, headers=getattr(error, "headers", None))


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    # Database errors caused by values the validation let through (a NUL byte in a
    # description on PostgreSQL, an out-of-range number) are the client's input, not a crash.
    try:
        from sqlalchemy.exc import DataError, IntegrityError
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        DataError = IntegrityError = ()  # type: ignore[assignment]
    if isinstance(error, DataError):
        return error_response(422, "invalid_value", f"the database refused a value: {error.orig}")
    if isinstance(error, IntegrityError):
        return error_response(409, "concurrent_modification",
                              "the change conflicts with another one; retry the operation")
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", f"internal server error ({type(error).__name__})")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(exc.ConditionsError, _conditions_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
