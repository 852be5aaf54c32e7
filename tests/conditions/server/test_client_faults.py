"""The client against misbehaving servers (pytest-httpserver and raw sockets)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from conditions.cache import PayloadCache
from conditions.client import ConditionsClient
from conditions.exceptions import (AllServersFailedError, ChecksumMismatchError, ConditionsError,
                                   OfflineError, UnknownTagError)
from conditions.payload import PayloadInfo
from conditions.tags import GlobalTagState

TAG = {"name": "gt", "state": "TESTING", "description": "", "tag_id": 1, "created": None,
       "modified": None, "created_by": None, "modified_by": None}
DATA = b"payload bytes " * 64
PAYLOAD = PayloadInfo(name="Foo", revision=1, checksum=hashlib.md5(DATA).hexdigest(),
                      sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA))
DATA_PATH = "/api/v1/payloads/Foo/1/data"


def fast_client(*servers, **options) -> ConditionsClient:
    options.setdefault("timeout", (0.5, 1.0))
    options.setdefault("retries", 3)
    options.setdefault("backoff_factor", 0.01)
    options.setdefault("total_timeout", 10)
    return ConditionsClient(list(servers), **options)


@pytest.fixture
def second_server():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def counting(responses: list[Response]):
    """A handler answering ``responses`` in turn (the last one for ever), counting calls."""
    calls = []

    def handler(request: Request) -> Response:
        calls.append(request.path)
        return responses[min(len(calls), len(responses)) - 1]

    return handler, calls


@pytest.mark.parametrize("status", [503, 429, 500, 502, 504])
def test_503_twice_then_200_is_retried(httpserver, status):
    handler, calls = counting([Response("busy", status=status, headers={"Retry-After": "0"}),
                               Response("busy", status=status),
                               Response(json.dumps(TAG), content_type="application/json")])
    httpserver.expect_request("/api/v1/tags/gt").respond_with_handler(handler)
    assert fast_client(httpserver.url_for("")).tag_state("gt") is GlobalTagState.TESTING
    assert len(calls) == 3


def test_retries_are_bounded_in_total_time(httpserver):
    handler, calls = counting([Response("busy", status=503, headers={"Retry-After": "3600"})])
    httpserver.expect_request("/api/v1/tags/gt").respond_with_handler(handler)
    client = fast_client(httpserver.url_for(""), retries=50, backoff_factor=0.2, total_timeout=1.5)
    start = time.monotonic()
    with pytest.raises(AllServersFailedError) as caught:
        client.get_tag("gt")
    assert time.monotonic() - start < 4  # neither 50 retries nor an hour of Retry-After
    assert "503" in caught.value.attempts[0][1] and len(calls) >= 2


def test_a_hanging_server_times_out_and_fails_over(second_server):
    hanging = socket.socket()  # accepts connections (kernel backlog) but never answers
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)
    try:
        hang_url = f"http://127.0.0.1:{hanging.getsockname()[1]}"
        second_server.expect_request("/api/v1/tags/gt").respond_with_json(TAG)
        client = fast_client(hang_url, second_server.url_for(""), timeout=(0.5, 0.3), retries=1)
        start = time.monotonic()
        assert client.get_tag("gt").name == "gt"
        assert time.monotonic() - start < 5
        with pytest.raises(AllServersFailedError) as caught:
            fast_client(hang_url, timeout=(0.5, 0.3), retries=1).get_tag("gt")
        assert caught.value.attempts == [(hang_url, "read timed out (server did not answer in time)")]
    finally:
        hanging.close()


def test_failover_to_the_second_server_and_stay_there(second_server):
    dead = dead_url()
    handler, calls = counting([Response(json.dumps(TAG), content_type="application/json")])
    second_server.expect_request("/api/v1/tags/gt").respond_with_handler(handler)
    client = fast_client(dead, second_server.url_for(""), retries=1)
    assert client.get_tag("gt").name == "gt"
    assert client.get_tag("gt").name == "gt"
    assert len(calls) == 2
    assert client.transport._order()[0] == second_server.url_for("").rstrip("/")


def test_every_server_failing_names_each_one(httpserver):
    dead = dead_url()
    httpserver.expect_request("/api/v1/tags/gt").respond_with_data("down", status=502)
    client = fast_client(dead, httpserver.url_for(""), retries=1)
    with pytest.raises(AllServersFailedError) as caught:
        client.get_tag("gt")
    servers = [server for server, _ in caught.value.attempts]
    assert servers == [dead, httpserver.url_for("").rstrip("/")]
    reasons = dict(caught.value.attempts)
    assert "connection failed" in reasons[dead] or "gave up" in reasons[dead]
    assert "HTTP 502" in reasons[httpserver.url_for("").rstrip("/")]
    assert dead in str(caught.value)


def test_malformed_json_is_not_trusted(httpserver, second_server):
    httpserver.expect_request("/api/v1/tags/gt").respond_with_data('{"name": "gt", "sta', content_type="application/json")
    with pytest.raises(AllServersFailedError, match="malformed JSON"):
        fast_client(httpserver.url_for("")).get_tag("gt")
    second_server.expect_request("/api/v1/tags/gt").respond_with_json(TAG)
    assert fast_client(httpserver.url_for(""), second_server.url_for("")).get_tag("gt").name == "gt"


def test_unknown_tag_is_a_typed_error_and_final(httpserver, second_server):
    httpserver.expect_request("/api/v1/tags/nope").respond_with_json(
        {"code": "unknown_tag", "reason": "Not Found", "message": "no global tag named 'nope'"}, status=404)
    handler, calls = counting([Response(json.dumps(TAG), content_type="application/json")])
    second_server.expect_request("/api/v1/tags/nope").respond_with_handler(handler)
    with pytest.raises(UnknownTagError, match="no global tag named 'nope'"):
        fast_client(httpserver.url_for(""), second_server.url_for("")).get_tag("nope")
    assert calls == []  # a definite answer is not asked again elsewhere


def test_writes_are_not_repeated_after_a_server_error(httpserver):
    handler, calls = counting([Response("oops", status=500)])
    httpserver.expect_request("/api/v1/tags", method="POST").respond_with_handler(handler)
    with pytest.raises(AllServersFailedError, match="may have applied it|HTTP 500"):
        fast_client(httpserver.url_for(""), token="t").create_tag("new")
    assert len(calls) == 1


def test_a_write_answered_badly_is_not_repeated_elsewhere(httpserver, second_server):
    # The first server created the tag, then sent garbage: sending the same POST to the
    # next server could apply it twice.
    httpserver.expect_request("/api/v1/tags", method="POST").respond_with_data(
        '{"name": "new", "sta', status=201, content_type="application/json")
    handler, calls = counting([Response(json.dumps(TAG), status=201, content_type="application/json")])
    second_server.expect_request("/api/v1/tags", method="POST").respond_with_handler(handler)
    with pytest.raises(AllServersFailedError, match="may have applied it"):
        fast_client(httpserver.url_for(""), second_server.url_for(""), token="t").create_tag("new")
    assert calls == []


def test_truncated_download_is_never_cached(httpserver, tmp_path):
    def truncated(request: Request) -> Response:
        response = Response(DATA[:100], content_type="application/octet-stream")
        response.headers["Content-Length"] = str(len(DATA))  # promise more than is sent
        response.direct_passthrough = True
        return response

    httpserver.expect_request(DATA_PATH).respond_with_handler(truncated)
    cache = PayloadCache(tmp_path / "cache")
    client = fast_client(httpserver.url_for(""), retries=1, cache=cache)
    with pytest.raises(AllServersFailedError) as caught:
        client.get_file(PAYLOAD)
    assert not cache.contains(PAYLOAD)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".locks" not in p.parts]
    assert "truncated" in caught.value.attempts[0][1] or "IncompleteRead" in caught.value.attempts[0][1], caught.value.attempts


def test_wrong_bytes_are_never_accepted_nor_cached(httpserver, second_server, tmp_path):
    evil = bytes(reversed(DATA))  # right size, wrong content
    httpserver.expect_request(DATA_PATH).respond_with_data(evil, content_type="application/octet-stream")
    cache = PayloadCache(tmp_path / "cache")
    with pytest.raises(AllServersFailedError, match="checksum mismatch"):
        fast_client(httpserver.url_for(""), cache=cache).get_file(PAYLOAD)
    assert not cache.contains(PAYLOAD)
    destination = tmp_path / "direct"
    with pytest.raises(ConditionsError):
        fast_client(httpserver.url_for("")).fetch_payload(PAYLOAD, destination)
    assert not destination.exists()

    # A good mirror behind the bad one delivers, and only the good bytes are cached.
    second_server.expect_request(DATA_PATH).respond_with_data(DATA, content_type="application/octet-stream")
    path = fast_client(httpserver.url_for(""), second_server.url_for(""), cache=cache).get_file(PAYLOAD)
    assert path.read_bytes() == DATA and cache.contains(PAYLOAD)


def test_the_cache_refuses_what_the_source_got_wrong(tmp_path):
    # Even a source that hands over wrong bytes without noticing cannot poison the cache.
    class Sloppy(ConditionsClient):
        def fetch_payload(self, payload, destination):
            destination.write_bytes(b"x" * payload.size)

    cache = PayloadCache(tmp_path / "cache")
    with pytest.raises(ChecksumMismatchError):
        cache.get(PAYLOAD, Sloppy(dead_url()))
    assert not cache.contains(PAYLOAD)


def test_offline_never_touches_the_network(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = fast_client(url, offline=True, cache=PayloadCache(tmp_path / "cache", offline=True))
        for call in (lambda: client.get_tag("gt"), lambda: client.resolve("gt", "Foo", 0, 0),
                     lambda: client.get_file(PAYLOAD), lambda: client.fetch_payload(PAYLOAD, tmp_path / "x")):
            with pytest.raises(OfflineError):
                call()
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()


def test_many_threads_share_one_client(httpserver):
    httpserver.expect_request("/api/v1/tags/gt").respond_with_json(TAG)
    client = fast_client(httpserver.url_for(""))
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(client.get_tag("gt").name)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == ["gt"] * 40


class _BusyThenHanging:
    """A raw HTTP server answering ``busy`` requests with 503 at once, then accepting
    requests and never answering: a server that collapses while the client retries."""

    def __init__(self, busy: int):
        self.busy = busy
        self.requests = 0
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._open: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                self.requests += 1
                if self.requests <= self.busy:
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        except OSError:
            pass

    def close(self) -> None:
        self._listener.close()
        for conn in self._open:
            conn.close()


@pytest.mark.parametrize("n_servers", [1, 2])
def test_total_time_bound_holds_when_a_retry_hangs(n_servers):
    # Each attempt may take a full read timeout (1 s); the call as a whole must still end
    # within total_timeout (1.5 s), not one read timeout after the last retry began.
    servers = [_BusyThenHanging(busy=2) for _ in range(n_servers)]
    try:
        client = fast_client(*[s.url for s in servers], timeout=(0.5, 1.0), retries=10,
                             backoff_factor=0.01, total_timeout=1.5)
        start = time.monotonic()
        with pytest.raises(AllServersFailedError) as caught:
            client.get_tag("gt")
        elapsed = time.monotonic() - start
        assert elapsed < 1.5 + 0.4, elapsed
        assert servers[0].requests >= 3  # the 503s were retried before the hang
        assert [server for server, _ in caught.value.attempts] == [s.url for s in servers]
    finally:
        for server in servers:
            server.close()


def test_an_upload_is_retried_with_its_whole_body(httpserver):
    # Uploads are idempotent (same bytes, same revision): a 503 is retried, and the
    # retry sends the whole file again, not what was left of the stream.
    bodies = []
    answer = {"name": "Foo", "revision": 1, "checksum": PAYLOAD.checksum, "sha256": PAYLOAD.sha256,
              "size": len(DATA), "metadata": {}, "url": None, "payload_id": 1, "created": None,
              "created_by": None}

    def handler(request: Request) -> Response:
        bodies.append(request.get_data())
        if len(bodies) == 1:
            return Response("busy", status=503)
        return Response(json.dumps(answer), status=201, content_type="application/json")

    httpserver.expect_request("/api/v1/payloads/Foo", method="POST").respond_with_handler(handler)
    info = fast_client(httpserver.url_for(""), token="t").add_payload("Foo", DATA)
    assert info.revision == 1 and bodies == [DATA, DATA]
