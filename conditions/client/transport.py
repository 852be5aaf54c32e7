"""HTTP transport for the conditions client: retries, timeouts, failover.

Each server is tried up to ``retries + 1`` times: connection errors, timeouts and
429/5xx answers are retried with exponential backoff and jitter (``Retry-After`` is
honoured up to ``backoff_max``). When a server keeps failing, the next server in the list
is tried. Everything one call does, retries and failover included, stays inside
``total_timeout`` seconds: every attempt's connect and read timeouts are cut to the time
left, and each server gets a fair share of it so failover still has time. When every
server failed, :class:`~conditions.exceptions.AllServersFailedError` names each server
and why.

The retry loop is ours, not urllib3's: urllib3 reuses one timeout for all its retries, so
a retry begun just before the deadline could outlast it by a whole read timeout.

Writes (POST, PATCH) are never repeated once they may have reached a server, because
the server may have applied them; they fail over only when the connection could not
even be opened, or the server said 429/503 (it did not take the request). Calls known to
be idempotent (a payload upload: the same bytes give the same revision) may say so and
are retried like reads.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence, TypeVar

import requests
from requests.adapters import HTTPAdapter

from ..exceptions import AllServersFailedError, OfflineError

T = TypeVar("T")

#: Answers that mean "this server cannot answer right now": retried, then failed over.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Answers meaning the server did not take the request: a write may go elsewhere.
NOT_TAKEN_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

#: Seconds an attempt needs at least; no attempt is started with less time left.
_MIN_ATTEMPT = 0.05


class BadAnswer(Exception):
    """An answer this server should not have given (malformed JSON, truncated or wrong
    bytes): try the next server."""


@dataclass
class _Outcome:
    """Why one server did not give a usable answer."""

    server: str
    reason: str
    retry_elsewhere: bool = True  # False: the request may have been applied; stop


class Transport:
    """Sends requests to a list of servers with retries and failover."""

    def __init__(self, servers: str | Sequence[str], *, token: str | None = None,
                 timeout: float | tuple[float, float] = (3.05, 30.0), retries: int = 3,
                 backoff_factor: float = 0.25, backoff_max: float = 10.0, total_timeout: float = 120.0,
                 offline: bool = False, user_agent: str = "conditionsdb-client/1"):
        if isinstance(servers, str):
            servers = [s for s in servers.replace(",", " ").split() if s]
        self.servers = [s.rstrip("/") for s in servers]
        if not self.servers:
            raise ValueError("give at least one server URL")
        for server in self.servers:
            if not server.startswith(("http://", "https://")):
                raise ValueError(f"server URL must start with http:// or https://: {server!r}")
        self.token = token
        self.timeout = timeout if isinstance(timeout, tuple) else (float(timeout), float(timeout))
        self.total_timeout = float(total_timeout)
        self.retries = max(0, int(retries))
        self.backoff_factor = float(backoff_factor)
        self.backoff_max = float(backoff_max)
        self.offline = offline
        self._preferred = 0
        #: The server that gave the last accepted answer (None before the first).
        self.last_server: str | None = None
        self._lock = threading.Lock()
        self._session = requests.Session()
        # No retries below us: each attempt is one request, with its own clamped timeouts.
        adapter = HTTPAdapter(max_retries=0, pool_connections=len(self.servers), pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = user_agent
        self._session.headers["Accept"] = "application/json"

    def close(self) -> None:
        self._session.close()

    @property
    def description(self) -> str:
        return ", ".join(self.servers)

    def _order(self) -> list[str]:
        start = self._preferred
        return self.servers[start:] + self.servers[:start]

    def backoff(self, retry: int, response: requests.Response | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...): the server's
        Retry-After if it sent one, else exponential backoff; plus jitter; at most
        ``backoff_max``."""
        wait = None
        if response is not None:
            wait = _retry_after(response)
        if wait is None:
            wait = self.backoff_factor * (2 ** (retry - 1))
        wait += random.uniform(0, self.backoff_factor)
        return min(max(0.0, wait), self.backoff_max)

    def call(
        self,
        method: str,
        path: str,
        handle: Callable[[requests.Response], T],
        *,
        params: Any = None,
        json: Any = None,
        data: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = False,
        idempotent: bool | None = None,
        stream: bool = False,
        token: str | None = None,
    ) -> T:
        """Send the request to the servers in turn until ``handle`` accepts an answer.

        ``handle`` gets every answer that is not a 429/5xx; it returns the result, raises
        a ConditionsError (a definite answer: no failover) or BadAnswer (try the next
        server). ``auth`` adds the bearer token.
        """
        if self.offline:
            raise OfflineError(f"offline mode: not contacting {self.description} for {method} {path}")
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        send_headers = dict(headers or {})
        secret = token if token is not None else self.token
        if auth and secret:
            send_headers["Authorization"] = f"Bearer {secret}"
        deadline = time.monotonic() + self.total_timeout
        outcomes: list[_Outcome] = []
        order = self._order()
        for position, server in enumerate(order):
            remaining = deadline - time.monotonic()
            if remaining <= _MIN_ATTEMPT:
                outcomes.append(_Outcome(server, "not tried: total time budget used up"))
                continue
            # Each server gets a fair share of what is left, so failover still has time.
            server_deadline = time.monotonic() + remaining / (len(order) - position)
            outcome = None
            retry = 0
            while True:
                left = server_deadline - time.monotonic()
                timeout = (min(self.timeout[0], left), min(self.timeout[1], left))
                if _is_stream(data):
                    data.seek(0)
                response = None
                try:
                    response = self._session.request(method, server + path, params=params, json=json,
                                                     data=data, headers=send_headers, timeout=timeout,
                                                     stream=stream)
                except requests.RequestException as error:
                    outcome = _Outcome(server, _describe(error))
                    if not idempotent and not _never_sent(error):
                        outcome.reason += " (not repeated: the server may have applied it)"
                        outcome.retry_elsewhere = False
                        break
                else:
                    if response.status_code not in RETRY_STATUSES:
                        break  # an answer for ``handle``
                    outcome = _Outcome(server, f"HTTP {response.status_code} {response.reason}"
                                               f"{_brief_body(response)}")
                    response.close()
                    if not idempotent:
                        # Only "not taken" answers let a write go to another server.
                        outcome.retry_elsewhere = response.status_code in NOT_TAKEN_STATUSES
                        break
                retry += 1
                if retry > self.retries:
                    break
                # Never sleep past this server's share: leave time for one more attempt.
                wait = min(self.backoff(retry, response), server_deadline - time.monotonic() - _MIN_ATTEMPT)
                if wait < 0:
                    outcome.reason += " (time budget used up while retrying)"
                    break
                time.sleep(wait)
            if response is None or response.status_code in RETRY_STATUSES:
                outcomes.append(outcome)
                if not outcome.retry_elsewhere:
                    break
                continue
            try:
                try:
                    result = handle(response)
                except (BadAnswer, requests.RequestException) as error:  # (the latter: while streaming)
                    reason = str(error) if isinstance(error, BadAnswer) else _describe(error)
                    outcomes.append(_Outcome(server, reason))
                    if not idempotent:
                        # The server took the write and then answered badly: it may have
                        # applied it, so another server must not apply it a second time.
                        outcomes[-1].reason += " (not repeated: the server may have applied it)"
                        break
                    continue
            finally:
                response.close()
            with self._lock:
                self._preferred = self.servers.index(server)
                self.last_server = server
            return result
        tried = "; ".join(f"{o.server}: {o.reason}" for o in outcomes)
        raise AllServersFailedError(
            f"{method} {path} failed on every conditions server ({len(outcomes)} tried): {tried}",
            [(o.server, o.reason) for o in outcomes],
        )

    def download(self, path: str, destination: Path, handle_error: Callable[[requests.Response], None], *,
                 size: int | None, md5: str | None, sha256: str | None) -> None:
        """Stream ``path`` into ``destination``; an answer is accepted only if complete and
        matching the expected size and hashes, else the next server is tried."""

        # The same budget as the call: a slowly trickling body cannot extend it.
        deadline = time.monotonic() + self.total_timeout

        def receive(response: requests.Response) -> None:
            handle_error(response)
            declared = response.headers.get("Content-Length")
            got = 0
            h_md5, h_sha = hashlib.md5(), hashlib.sha256()
            with open(destination, "wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    got += len(chunk)
                    h_md5.update(chunk)
                    h_sha.update(chunk)
                    out.write(chunk)
                    if time.monotonic() > deadline:
                        raise BadAnswer("download too slow: total time budget used up")
            if declared is not None and declared.isdigit() and int(declared) != got:
                raise BadAnswer(f"truncated download: {got} of {declared} bytes")
            if size is not None and got != size:
                raise BadAnswer(f"wrong size: got {got} bytes, expected {size}")
            if md5 and h_md5.hexdigest() != md5.lower():
                raise BadAnswer(f"checksum mismatch: MD5 {h_md5.hexdigest()}, expected {md5}")
            if sha256 and h_sha.hexdigest() != sha256.lower():
                raise BadAnswer(f"checksum mismatch: SHA-256 {h_sha.hexdigest()}, expected {sha256}")

        try:
            self.call("GET", path, receive, stream=True, headers={"Accept": "application/octet-stream"})
        except BaseException:
            # Never leave bytes that failed verification where someone might use them.
            Path(destination).unlink(missing_ok=True)
            raise


def _retry_after(response: requests.Response) -> float | None:
    """The answer's Retry-After in seconds (delta or HTTP date), None if absent or odd."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_stream(data: Any) -> bool:
    return data is not None and hasattr(data, "read") and hasattr(data, "seek")


def _never_sent(error: requests.RequestException) -> bool:
    """True when the request certainly did not reach a server (safe to send elsewhere)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    text = repr(error)
    return isinstance(error, requests.ConnectionError) and (
        "NewConnectionError" in text or "Connection refused" in text or "Name or service not known" in text
    )


def _describe(error: requests.RequestException) -> str:
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

    cause = _root_cause_error(error)
    if isinstance(cause, NewConnectionError):  # (a ConnectTimeoutError subclass in urllib3)
        return f"connection failed: {cause}"
    if isinstance(error, requests.ConnectTimeout) or isinstance(cause, ConnectTimeoutError):
        return "connection timed out"
    if isinstance(error, requests.ReadTimeout) or isinstance(cause, ReadTimeoutError):
        return "read timed out (server did not answer in time)"
    if isinstance(error, requests.exceptions.RetryError):
        return f"gave up after retries: {_root_cause(error)}"
    if isinstance(error, requests.ConnectionError):
        return f"connection failed: {_root_cause(error)}"
    return f"{type(error).__name__}: {_root_cause(error)}"


def _root_cause_error(error: BaseException) -> BaseException:
    seen = error
    for _ in range(5):
        inner = getattr(seen, "reason", None)
        if not isinstance(inner, BaseException):
            inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        if inner is None:
            break
        seen = inner
    return seen


def _root_cause(error: BaseException) -> str:
    text = str(_root_cause_error(error))
    return text if len(text) < 300 else text[:300] + "..."


def _brief_body(response: requests.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and data.get("message"):
            return f": {str(data['message'])[:200]}"
    except ValueError:
        pass
    return ""
