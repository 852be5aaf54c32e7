"""What one client may make the server do: the limits ``conditionsdb serve`` applies.

Kept apart from the server code (no FastAPI or uvicorn import), so the CLI can show the
defaults in ``--help`` cheaply. README, "Running the server in production", says how
to choose them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Per worker process. Defaults suit one server behind a reverse proxy."""

    #: connections plus requests in flight before requests get 503 (uvicorn
    #: ``limit_concurrency``, which counts open connections too: set it below
    #: ``max_connections`` and idle or slow connections turn real requests away)
    limit_concurrency: int | None = 2048
    #: open connections; one more is answered 503 and closed at once
    max_connections: int = 2048
    #: seconds an idle keep-alive connection stays open (uvicorn ``timeout_keep_alive``)
    timeout_keep_alive: int = 5
    #: seconds a client has to send its request headers (408 after)
    header_timeout: float = 10.0
    #: bytes of request line and headers (431 beyond)
    max_header_bytes: int = 64 * 1024
    #: seconds a request body may stall (408 after)
    body_timeout: float = 60.0
    #: cap of request bodies other than payload uploads (413 beyond)
    max_json_bytes: int = 1024**2
    #: connections the kernel queues before the server accepts them (listen backlog)
    backlog: int = 2048


DEFAULT_LIMITS = Limits()
