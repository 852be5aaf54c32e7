"""HTTP transport for the conditions client: retries, timeouts, failover.

Each server gets a ``requests.Session`` whose adapter retries (urllib3 ``Retry``)
connection errors, read timeouts, and 429/5xx answers with exponential backoff and
jitter. When a server keeps failing, the next server in the list is tried. Everything
one call does, retries and failover included, stays inside ``total_timeout`` seconds.
When every server failed, :class:`~conditions.exceptions.AllServersFailedError` names
each server and why.

Writes (POST, PATCH) are never repeated once they may have reached a server, because
the server may have applied them; they fail over only when the connection could not
even be opened. Calls known to be idempotent (a payload upload: the same bytes give the
same revision) may say so and are retried like reads.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from ..exceptions import AllServersFailedError, OfflineError

T = TypeVar("T")

#: Answers that mean "this server cannot answer right now": retried, then failed over.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

_deadline = threading.local()
#: Seconds an attempt needs at least; no retry is started with less time left.
_MIN_ATTEMPT = 0.05


class BadAnswer(Exception):
    """An answer this server should not have given (malformed JSON, truncated or wrong
    bytes): try the next server."""


class DeadlineRetry(Retry):
    """urllib3 Retry that gives up instead of sleeping past the caller's deadline, and
    never trusts a Retry-After longer than ``backoff_max``."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        deadline = getattr(_deadline, "value", None)
        if deadline is not None and time.monotonic() + _MIN_ATTEMPT >= deadline:
            raise MaxRetryError(_pool, url, error or ResponseError("time budget used up while retrying"))
        return new

    def get_retry_after(self, response):
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.backoff_max)

    def sleep(self, response=None):
        # Never sleep past the deadline: leave time for one more attempt.
        deadline = getattr(_deadline, "value", None)
        wait = None
        if self.respect_retry_after_header and response is not None:
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time()
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic() - _MIN_ATTEMPT))
        if wait > 0:
            time.sleep(wait)


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
        self.offline = offline
        self._preferred = 0
        self._lock = threading.Lock()
        retry = DeadlineRetry(
            total=retries, connect=retries, read=retries, status=retries, other=0,
            backoff_factor=backoff_factor, backoff_max=backoff_max, backoff_jitter=backoff_factor,
            status_forcelist=RETRY_STATUSES, allowed_methods=IDEMPOTENT_METHODS,
            raise_on_status=False, respect_retry_after_header=True,
        )
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry, pool_connections=len(self.servers), pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # An upload body cannot be re-read by urllib3's retries; such calls use this one.
        self._upload_session = requests.Session()
        once = HTTPAdapter(max_retries=DeadlineRetry(total=0, connect=0, read=0, status=0, other=0,
                                                     raise_on_status=False))
        self._upload_session.mount("http://", once)
        self._upload_session.mount("https://", once)
        self._session.headers["User-Agent"] = user_agent
        self._session.headers["Accept"] = "application/json"
        self._upload_session.headers.update(self._session.headers)

    def close(self) -> None:
        self._session.close()
        self._upload_session.close()

    @property
    def description(self) -> str:
        return ", ".join(self.servers)

    def _order(self) -> list[str]:
        start = self._preferred
        return self.servers[start:] + self.servers[:start]

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
        session = self._session if idempotent and not _is_stream(data) else self._upload_session
        deadline = time.monotonic() + self.total_timeout
        outcomes: list[_Outcome] = []
        order = self._order()
        for position, server in enumerate(order):
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                outcomes.append(_Outcome(server, "not tried: total time budget used up"))
                continue
            if _is_stream(data):
                data.seek(0)
            timeout = (min(self.timeout[0], remaining), min(self.timeout[1], remaining))
            # Each server gets a fair share of what is left, so failover still has time.
            _deadline.value = time.monotonic() + remaining / (len(order) - position)
            try:
                response = session.request(method, server + path, params=params, json=json, data=data,
                                           headers=send_headers, timeout=timeout, stream=stream)
            except requests.RequestException as error:
                outcome = _Outcome(server, _describe(error))
                if not idempotent and not _never_sent(error):
                    outcome.reason += " (not repeated elsewhere: the server may have applied it)"
                    outcome.retry_elsewhere = False
                outcomes.append(outcome)
                if not outcome.retry_elsewhere:
                    break
                continue
            finally:
                _deadline.value = None
            try:
                if response.status_code in RETRY_STATUSES:
                    outcomes.append(_Outcome(server, f"HTTP {response.status_code} {response.reason}"
                                             f"{_brief_body(response)}"))
                    if not idempotent and response.status_code not in (429, 503):
                        outcomes[-1].retry_elsewhere = False
                        break
                    continue
                try:
                    result = handle(response)
                except BadAnswer as error:
                    outcomes.append(_Outcome(server, str(error)))
                    continue
                except requests.RequestException as error:  # failures while streaming a body
                    outcomes.append(_Outcome(server, _describe(error)))
                    continue
            finally:
                response.close()
            with self._lock:
                self._preferred = self.servers.index(server)
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

        def receive(response: requests.Response) -> None:
            handle_error(response)
            declared = response.headers.get("Content-Length")
            got = 0
            h_md5, h_sha = hashlib.md5(), hashlib.sha256()
            deadline = time.monotonic() + self.total_timeout
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
