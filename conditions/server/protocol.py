"""The HTTP protocol of the server: uvicorn's httptools protocol with limits on slow and
greedy clients.

uvicorn bounds the idle time between requests of a keep-alive connection
(``timeout_keep_alive``) and the requests processed at once (``limit_concurrency``), but
not the time a client may take to send its request headers, nor their size, nor the
number of open connections: a client that opens many sockets and sends a few header
bytes now and then holds them for ever. This protocol adds, per worker process:

* ``header_timeout``: seconds from the connection (or from the first byte of a next
  request on a keep-alive connection) until the request headers are complete; after that
  the client gets 408 and the connection is closed;
* ``max_header_bytes``: request line plus headers; beyond it the client gets 431 and
  the connection is closed (nothing more of it is buffered);
* ``max_connections``: open connections; one more is answered 503 and closed at once,
  before any of it is read.

The limits come from the environment (``CONDITIONSDB_SERVE_HEADER_TIMEOUT``,
``..._MAX_HEADER_BYTES``, ``..._MAX_CONNECTIONS``), which ``conditionsdb serve`` sets for
its worker processes (a worker reads them at import).
"""

from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import DEFAULT_LIMITS

ENV_HEADER_TIMEOUT = "CONDITIONSDB_SERVE_HEADER_TIMEOUT"
ENV_MAX_HEADER_BYTES = "CONDITIONSDB_SERVE_MAX_HEADER_BYTES"
ENV_MAX_CONNECTIONS = "CONDITIONSDB_SERVE_MAX_CONNECTIONS"

DEFAULT_HEADER_TIMEOUT = DEFAULT_LIMITS.header_timeout
DEFAULT_MAX_HEADER_BYTES = DEFAULT_LIMITS.max_header_bytes
DEFAULT_MAX_CONNECTIONS = DEFAULT_LIMITS.max_connections


def _env_number(name: str, default: float, kind=float):
    value = os.environ.get(name)
    return kind(value) if value else default


def _raw_response(status: bytes, message: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n" + extra
            + b"\r\n" + message)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def load_limits(cls) -> type["LimitedHttpToolsProtocol"]:
        """Read the limits from the environment (at import, and again by ``serve``)."""
        cls.header_timeout = _env_number(ENV_HEADER_TIMEOUT, DEFAULT_HEADER_TIMEOUT)
        cls.max_header_bytes = _env_number(ENV_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_BYTES, int)
        cls.max_connections = _env_number(ENV_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, int)
        return cls

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._headers_done = False
        self._header_bytes = 0

    # -- connections -----------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections and len(self.connections) > self.max_connections:
            self.logger.warning("refused a connection: %d open, the limit is %d",
                                len(self.connections) - 1, self.max_connections)
            self._refuse(b"503 Service Unavailable", b"too many open connections; retry later",
                         b"retry-after: 5\r\n")
            return
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _refuse(self, status: bytes, message: bytes, extra: bytes = b"") -> None:
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, message, extra))
            self.transport.close()

    # -- request headers: time and size ---------------------------------------------------
    def _arm_header_timer(self) -> None:
        if self._header_timer is None and self.header_timeout:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_time_up)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_time_up(self) -> None:
        self._header_timer = None
        if not self._headers_done:
            self.logger.info("closed a connection from %s: request headers incomplete after %g s",
                             self.client[0] if self.client else "?", self.header_timeout)
            self._refuse(b"408 Request Timeout", b"request headers not received in time")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False
        self._header_bytes = 0
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._disarm_header_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        waiting = not self._headers_done
        super().data_received(data)
        # Bytes of a chunk that completed the headers may be body: only chunks that leave
        # the headers still incomplete count against the header limit.
        if waiting and not self._headers_done and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self.logger.info("closed a connection from %s: request headers over %d bytes",
                                 self.client[0] if self.client else "?", self.max_header_bytes)
                self._refuse(b"431 Request Header Fields Too Large", b"request headers too large")


LimitedHttpToolsProtocol.load_limits()
