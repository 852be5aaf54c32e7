"""What a client can make the server do before a route runs: auth before the body, body
caps, a body that stops arriving, and clients that keep trying wrong tokens.

:class:`RequestGuard` is plain ASGI middleware (it sees the request before FastAPI reads
any body). Every request that may carry a body (POST, PUT, PATCH, DELETE) to a route
under ``/api/`` is a write and needs a token (true of the whole native API); for those:

1. a client that failed authentication too often lately gets 429 with ``Retry-After``
   (its token is not even looked at);
2. the bearer token is checked: a missing, unknown or revoked one is answered 401 at once,
   and the connection is closed, so not one byte of the body is read;
3. the body is capped by its declared length (413 at once) and by the bytes that really
   arrive: a payload upload at ``max_upload_bytes`` (the route streams it to disk), any
   other body at ``max_json_bytes``, read here (at most that much is ever held) and
   handed on to the route;
4. a body that stops arriving for ``body_timeout`` seconds is answered 408.

Every refusal carries ``Connection: close``: the server does not read on to find where
a refused body ends. The token found is left in ``scope["state"]["token"]``, so the
route's dependency does not ask the database again.

Failed authentications are counted per client address (one :class:`FailedAuthTracker`
per worker process) and logged with the address and the count in the window.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from starlette.concurrency import run_in_threadpool

log = logging.getLogger("conditions.server.auth")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UPLOAD_PATH = re.compile(r"^/api/v1/payloads/[^/]+/?$")


class FailedAuthTracker:
    """Failed authentications per client address in a sliding window.

    After ``limit`` failures within ``window`` seconds a client is refused (429) until
    its oldest counted failure leaves the window. At most ``max_clients`` addresses are
    remembered (the least recently failing are forgotten first), so a flood of addresses
    cannot grow memory without bound.
    """

    def __init__(self, *, limit: int = 10, window: float = 60.0, max_clients: int = 10_000):
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, ()) if now - t < self.window]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def retry_after(self, client: str) -> float | None:
        """Seconds this client must wait before its token is checked again, or None."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.limit:
                return None
            return max(1.0, self.window - (now - times[-self.limit]))

    def record(self, client: str, why: str) -> int:
        """Count one failure of ``client``; log it. Returns the failures in the window."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            times.append(now)
            self._failures[client] = times
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
            count = len(times)
        # Every failure up to the limit is logged; beyond it (a client hammering away),
        # one line per doubling keeps the log readable.
        if count <= self.limit or count & (count - 1) == 0:
            log.warning("failed authentication from %s: %s (%d in the last %.0f s%s)", client, why, count,
                        self.window, "; now slowed down" if count >= self.limit else "")
        return count


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def bearer_secret(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and secret.strip():
                return secret.strip()
            return None
    return None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_error(send: Send, status: int, code: str, message: str, *,
                     headers: dict[str, str] | None = None) -> None:
    """A JSON error answer (as the app's error handlers give) that closes the connection."""
    body = json.dumps({"code": code, "reason": http.HTTPStatus(status).phrase, "message": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"cache-control", b"no-store"), (b"connection", b"close")]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyTimeout(Exception):
    """The client stopped sending its body."""


def timed_receive(receive: Receive, timeout: float | None) -> Receive:
    """``receive`` that raises BodyTimeout when no message comes for ``timeout`` seconds."""
    if not timeout:
        return receive

    async def wrapped() -> Message:
        try:
            return await asyncio.wait_for(receive(), timeout)
        except asyncio.TimeoutError:
            raise BodyTimeout(f"no request body data for {timeout:g} s") from None

    return wrapped


class RequestGuard:
    """See the module docstring. ``authenticate(secret)`` returns a token or None (it
    runs on the threadpool); ``settings`` supplies the caps and the body timeout."""

    def __init__(self, app, *, authenticate: Callable[[str], Any], settings: Any, failures: FailedAuthTracker,
                 routes: Callable[[], list]):
        self.app = app
        self.authenticate = authenticate
        self.settings = settings
        self.failures = failures
        self.routes = routes

    def _routed(self, scope: Scope) -> bool:
        """Whether a route will take this request (else it is a 404 or 405, which read no
        body). ``BaseRoute.matches`` is Starlette's public matching, whatever the router."""
        from starlette.routing import Match

        return any(route.matches(scope)[0] == Match.FULL for route in self.routes())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in _BODY_METHODS
                or not scope["path"].startswith("/api/") or not self._routed(scope)):
            await self.app(scope, receive, send)
            return
        if await self._authenticated(scope, send):
            await self._capped(scope, receive, send)

    async def _authenticated(self, scope: Scope, send: Send) -> bool:
        """Check the token (answering 429 or 401 when that fails); True when it is good."""
        client = client_address(scope)
        wait = self.failures.retry_after(client)
        if wait is not None:
            await send_error(send, 429, "too_many_failures",
                             f"too many failed authentications from {client}; retry in {wait:.0f} s",
                             headers={"Retry-After": str(int(wait + 0.999))})
            return False
        secret = bearer_secret(scope)
        if secret is None:
            await send_error(send, 401, "unauthenticated",
                             "this operation needs a token: send 'Authorization: Bearer <secret>'",
                             headers={"WWW-Authenticate": "Bearer"})
            return False
        token = await run_in_threadpool(self.authenticate, secret)
        if token is None or getattr(token, "revoked", False):
            self.failures.record(client, f"unknown or revoked token on {scope['method']} {scope['path']}")
            await send_error(send, 401, "unauthenticated", "unknown or revoked token",
                             headers={"WWW-Authenticate": "Bearer"})
            return False
        scope.setdefault("state", {})["token"] = token
        return True

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body capped (and its stalls timed)."""
        upload = scope["method"] == "POST" and bool(_UPLOAD_PATH.match(scope["path"]))
        cap = self.settings.max_upload_bytes if upload else self.settings.max_json_bytes
        code = "payload_too_large" if upload else "request_too_large"
        declared = _declared_length(scope)
        if declared is not None and declared > cap:
            await send_error(send, 413, code, f"request body of {declared} bytes is over the server's cap of {cap} bytes")
            return
        timeout = self.settings.body_timeout
        if upload:
            # The route streams the body to disk and enforces the cap chunk by chunk.
            await self.app(scope, timed_receive(receive, timeout), send)
            return
        chunks, size = [], 0
        timed = timed_receive(receive, timeout)
        while True:
            try:
                message = await timed()
            except BodyTimeout as error:
                await send_error(send, 408, "request_timeout", str(error))
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                await send_error(send, 413, code, f"request body is over the server's cap of {cap} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as ASGI does

        await self.app(scope, replay, send)
