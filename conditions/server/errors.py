"""Every error leaves the server as JSON ``{code, reason, message}`` with a fitting status.

``code`` is the ConditionsError's machine-readable code (the client maps it back to the
same exception class), ``reason`` the HTTP reason phrase, ``message`` the human text.
Client input never produces a 500: malformed requests are 422, unknown things 404,
lifecycle violations 409, and database errors caused by odd values are 422 as well.
Infrastructure says what it is: a database that cannot be reached is 503 (with
``Retry-After``), a full disk or database 507, payload bytes damaged on the server 500.

No message names a path on the server: the store's description is generic, and any
absolute path left in a message (an OS error, a damaged blob) is replaced before it is
sent; the log keeps the full text.
"""

from __future__ import annotations

import errno
import http
import logging
import re

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import exceptions as exc
from .guard import BodyTimeout

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
    (exc.RequestTooLargeError, 413),
    (exc.TooManyFailedLoginsError, 429),
    (exc.DatabaseUnavailableError, 503),
    (exc.InsufficientStorageError, 507),
    (exc.DamagedPayloadError, 500),
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


#: An absolute POSIX path of at least one component (not inside a URL or a relative path).
_SERVER_PATH = re.compile(r"(?<![\w.:/~+-])/[^\s/'\"()\[\],;<>]+(?:/[^\s/'\"()\[\],;<>]*)*")
#: Errors after which the server stops reading the request: the connection is closed.
_CLOSE_AFTER = frozenset({408, 413, 429})
#: OS errors that mean "no room to store it".
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def scrub_paths(message: str) -> str:
    """``message`` with every absolute path replaced by ``<server path>``."""
    return _SERVER_PATH.sub("<server path>", message)


def error_response(status: int, code: str, message: str, *, extra: dict | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"code": code, "reason": http.HTTPStatus(status).phrase, "message": scrub_paths(message)}
    if extra:
        body.update(extra)
    all_headers = {"Cache-Control": "no-store"}
    if status in _CLOSE_AFTER:
        all_headers["Connection"] = "close"
    if status == 503:
        all_headers["Retry-After"] = "5"
    all_headers.update(headers or {})
    return JSONResponse(body, status_code=status, headers=all_headers)


async def _conditions_error(request: Request, error: exc.ConditionsError) -> JSONResponse:
    status = status_for(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 429:
        headers = {"Retry-After": str(int(getattr(error, "retry_after", 60) + 0.999))}
    if status >= 500:
        log.error("%s on %s %s: %s", error.code, request.method, request.url.path, error)
    return error_response(status, error.code, str(error), headers=headers)


async def _body_timeout(request: Request, error: BodyTimeout) -> JSONResponse:
    return error_response(408, "request_timeout", str(error))


def infrastructure_error(error: BaseException) -> exc.ConditionsError | None:
    """The ConditionsError an infrastructure failure stands for (a database that cannot be
    reached, a full disk), or None when ``error`` is something else."""
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
        return exc.InsufficientStorageError(
            f"the server has no room to store this ({error.strerror or 'no space left'}); nothing was stored")
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return None
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        text = str(getattr(error, "orig", error)).lower()
        if "disk is full" in text or "no space left" in text or "could not extend file" in text:
            return exc.InsufficientStorageError("the server's database is full; nothing was stored")
        return exc.DatabaseUnavailableError("the server's database cannot be reached right now; retry later")
    if isinstance(error, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return exc.DatabaseUnavailableError("the server's database cannot be reached right now; retry later")
    return None


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
    mapped = infrastructure_error(error)
    if mapped is not None:
        log.error("%s on %s %s: %s: %s", mapped.code, request.method, request.url.path, type(error).__name__, error)
        return error_response(status_for(mapped), mapped.code, str(mapped))
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", f"internal server error ({type(error).__name__})")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(exc.ConditionsError, _conditions_error)
    app.add_exception_handler(BodyTimeout, _body_timeout)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
