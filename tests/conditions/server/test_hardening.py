"""A server stays up and honest whatever a client sends (issue 11, items 3, 4, 5 and 7).

Every test talks to a real server process (``python -m conditions.server`` under uvicorn on
a loopback port) over real sockets: bodies that never end, headers that trickle in, tokens
that are wrong, metadata nested too deep, payload bytes damaged on the server's disk, a
disk that is full, a database that goes away. Socket counts and waits are small and bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import sqlite3
import time
from pathlib import Path

import pytest
import requests

from conditions.store import open_store

from .conftest import start_server

LIMITS = ("--header-timeout", "1", "--max-connections", "30", "--max-json-bytes", "65536",
          "--max-upload-bytes", "3000000", "--body-timeout", "2")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with small limits on an SQLite store holding one payload, and an admin token."""
    workdir = tmp_path_factory.mktemp("hardening")
    url, payloads = f"sqlite:///{workdir / 'conditions.db'}", workdir / "payloads"
    with open_store(url, payloads) as store:
        _, secret = store.create_token("admin", ["admin"])
        store.add_payload("Good", b"good bytes" * 1000)
    running = start_server(url, payloads, workdir / "server.log", extra=LIMITS)
    yield running, url, payloads, secret
    running.stop()


def _port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _connect(server, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=timeout)
    return sock


def _read_answer(sock: socket.socket, limit: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``limit`` s pass)."""
    sock.settimeout(limit)
    data = b""
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def _status(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None


def _body(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


# -- 3. auth before the body, body caps ------------------------------------------------------

@pytest.mark.parametrize("token", [None, "cdb_wrong"])
def test_a_write_without_a_valid_token_is_refused_before_its_body_is_read(server, token):
    """An endless chunked body with no (or a wrong) token: 401 arrives while the client is
    still sending, and the connection is closed (the body is never read)."""
    running = server[0]
    sock = _connect(running)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(f"POST /api/v1/tags HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"%x\r\n%s\r\n" % (65536, b"[" * 65536)
    sock.sendall(chunk)  # 64 KiB of a body that would never end
    answer = _read_answer(sock)
    sock.close()
    assert _status(answer) == 401, answer[:300]
    assert b"connection: close" in answer.lower()
    assert _body(answer)["code"] == "unauthenticated"


def test_json_bodies_are_capped_by_declared_and_by_streamed_length(server):
    running, _url, _payloads, secret = server
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    big = json.dumps({"name": "x", "description": "d" * 100_000})
    declared = requests.post(running.url + "/api/v1/tags", data=big, headers=headers, timeout=10)
    assert declared.status_code == 413 and declared.json()["code"] == "request_too_large"

    def chunks():  # no Content-Length: the cap counts what arrives
        for _ in range(40):
            yield b" " * 4096

    streamed = requests.post(running.url + "/api/v1/tags", data=chunks(), headers=headers, timeout=10)
    assert streamed.status_code == 413
    # A body within the cap still works, and the server is fine afterwards.
    ok = requests.post(running.url + "/api/v1/tags", json={"name": "capped_ok"}, headers=headers, timeout=10)
    assert ok.status_code == 201, ok.text


def test_a_stalled_body_is_answered_408(server):
    running, _url, _payloads, secret = server
    sock = _connect(running)
    sock.sendall(f"POST /api/v1/tags HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na".encode())
    started = time.monotonic()
    answer = _read_answer(sock, limit=6.0)
    sock.close()
    assert _status(answer) == 408 and time.monotonic() - started < 5.5


# -- 4. metadata depth and size ---------------------------------------------------------------

def _nested(depth: int) -> str:
    """A JSON object nested ``depth`` levels deep (lists inside one object: short as a URL)."""
    return '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("depth", [253, 5000])
def test_deep_metadata_is_refused_before_anything_is_stored(server, depth):
    running, url, payloads, secret = server
    answer = requests.post(running.url + "/api/v1/payloads/Deep", data=b"bytes of a deep payload",
                           params={"metadata": _nested(depth)}, timeout=10,
                           headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/octet-stream"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_metadata"
    with open_store(url, payloads, create=False) as store:
        assert store.list_payloads("Deep") == []
    listing = requests.get(running.url + "/api/v1/payloads", timeout=10)
    assert listing.status_code == 200 and [p["name"] for p in listing.json()] == ["Good"]


def test_listings_survive_rows_that_are_already_bad(tmp_path):
    """A row stored before the checks (here written into the database directly) must not
    turn every listing into a 500: its metadata is shown as a placeholder."""
    url, payloads = f"sqlite:///{tmp_path / 'bad.db'}", tmp_path / "payloads"
    with open_store(url, payloads) as store:
        store.add_payload("Fine", b"fine")
        store.add_payload("Bad", b"bad")
    with sqlite3.connect(tmp_path / "bad.db") as db:
        db.execute("UPDATE payloads SET metadata_json = ? WHERE name = 'Bad'", (_nested(253),))
    running = start_server(url, payloads, tmp_path / "server.log")
    try:
        listing = requests.get(running.url + "/api/v1/payloads", timeout=10)
        assert listing.status_code == 200, listing.text
        by_name = {p["name"]: p for p in listing.json()}
        assert "unreadable_metadata" in by_name["Bad"]["metadata"]
        assert by_name["Fine"]["metadata"] == {"filename": "Fine"} or "unreadable_metadata" not in by_name["Fine"]["metadata"]
        assert requests.get(running.url + "/api/v1/payloads/Bad/1", timeout=10).status_code == 200
    finally:
        running.stop()


# -- 5. slow clients, big headers, connection flood, pagination -------------------------------

def test_partial_headers_are_cut_off_and_normal_requests_go_on(server):
    """20 sockets that send a few header bytes and then nothing: each is answered 408 and
    closed after the header timeout (1 s here), while a normal client is served."""
    running = server[0]
    slow = [_connect(running) for _ in range(20)]
    for sock in slow:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert requests.get(running.url + "/api/v1/health", timeout=5).status_code == 200
    time.sleep(1.5)
    answers = [_read_answer(sock, limit=3.0) for sock in slow]
    for sock in slow:
        sock.close()
    assert all(_status(a) == 408 for a in answers), [a[:60] for a in answers]


def test_oversized_headers_get_431(server):
    running = server[0]
    sock = _connect(running)
    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000)
    answer = _read_answer(sock)
    sock.close()
    assert _status(answer) == 431


def test_connections_beyond_the_limit_are_refused_at_once(server):
    running = server[0]
    held = [_connect(running) for _ in range(30)]
    try:
        time.sleep(0.2)
        extra = _connect(running)
        answer = _read_answer(extra, limit=3.0)
        extra.close()
        assert _status(answer) == 503 and b"retry-after" in answer.lower()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert requests.get(running.url + "/api/v1/health", timeout=5).status_code == 200


def test_large_listings_come_in_pages(server, monkeypatch):
    running, _url, _payloads, secret = server
    from conditions.client import client as client_module
    from conditions.client import ConditionsClient
    from conditions.iov import IntervalOfValidity as IoV

    client = ConditionsClient(running.url, token=secret)
    client.create_tag("paged")
    payload = client.add_payload("Paged", b"paged")
    for run in range(23):
        client.add_iov("paged", "Paged", payload.revision, IoV(1, run, 1, run))
    first = requests.get(running.url + "/api/v1/tags/paged/iovs", params={"limit": 10}, timeout=10)
    assert first.status_code == 200 and len(first.json()) == 10
    following = first.links["next"]["url"]
    assert "offset=10" in following and "limit=10" in following
    rest = requests.get(running.url + following, timeout=10).json()
    assert [r["iov"]["first_run"] for r in rest] == list(range(10, 20))
    last = requests.get(running.url + "/api/v1/tags/paged/iovs", params={"limit": 10, "offset": 20}, timeout=10)
    assert len(last.json()) == 3 and "next" not in last.links
    # The client follows the pages: every IoV, in order, none twice.
    monkeypatch.setattr(client_module, "LIST_PAGE", 4)
    assert [r.iov.first_run for r in client.iovs("paged")] == list(range(23))
    # Listings are kept per worker while the tag is unchanged; a change is seen at once.
    client.add_iov("paged", "Paged", payload.revision, IoV(1, 23, 1, 23))
    assert [r.iov.first_run for r in client.iovs("paged")] == list(range(24))
    assert len(requests.get(running.url + "/api/v1/tags/paged/iovs", timeout=10).json()) == 24
    client.close()


def test_serve_exposes_the_limits():
    from click.testing import CliRunner

    from conditions.cli import main

    text = CliRunner().invoke(main, ["serve", "--help"]).output
    for option in ("--limit-concurrency", "--max-connections", "--timeout-keep-alive", "--header-timeout",
                   "--max-header-bytes", "--body-timeout", "--max-json-bytes", "--backlog"):
        assert option in text


# -- 7. integrity and infrastructure failures -------------------------------------------------

def _blob(payloads: Path, sha256: str) -> Path:
    return payloads / "sha256" / sha256[:2] / sha256


def test_damaged_bytes_are_never_served(tmp_path):
    url, payloads = f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "payloads"
    data = os.urandom(50_000)
    with open_store(url, payloads) as store:
        info = store.add_payload("Blob", data)
    running = start_server(url, payloads, tmp_path / "server.log")
    try:
        path = f"{running.url}/api/v1/payloads/Blob/1/data"
        good = requests.get(path, timeout=10)
        assert good.status_code == 200 and good.content == data
        blob = _blob(payloads, info.sha256)
        os.chmod(blob, 0o644)
        with open(blob, "r+b") as f:  # one flipped byte, same size
            f.seek(1000)
            f.write(bytes([data[1000] ^ 0xFF]))
        for method in ("GET", "HEAD"):
            bad = requests.request(method, path, timeout=10)
            assert bad.status_code == 500, (method, bad.status_code)
            assert "immutable" not in bad.headers.get("Cache-Control", "")
        body = requests.get(path, timeout=10).json()
        assert body["code"] == "payload_damaged" and str(tmp_path) not in body["message"]
        assert "/" not in body["message"].replace("conditionsdb check", "")
        blob.unlink()
        missing = requests.get(path, timeout=10)
        assert missing.status_code == 500 and str(tmp_path) not in missing.text
        # basf2's download path is checked the same way.
        assert requests.get(f"{running.url}/files/{info.url}", timeout=10).status_code == 500
        assert requests.get(running.url + "/api/v1/health", timeout=5).status_code == 200
    finally:
        running.stop()
    assert str(payloads) in (tmp_path / "server.log").read_text()  # the operator's log has the path


def test_uploads_go_to_the_payload_directory_not_tmp(tmp_path):
    """A server killed in the middle of an upload leaves its temp file in the payload
    directory's temp area (where `conditionsdb check --repair` finds it), not in /tmp."""
    url, payloads = f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "payloads"
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    with open_store(url, payloads) as store:
        _, secret = store.create_token("up", ["admin"])
    running = start_server(url, payloads, tmp_path / "server.log", env={"TMPDIR": str(system_tmp)})
    try:
        sock = _connect(running)
        sock.sendall(f"POST /api/v1/payloads/Big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
                     "Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n".encode())
        sock.sendall(os.urandom(1_000_000))
        deadline = time.monotonic() + 10
        temp = []
        while time.monotonic() < deadline and not any(p.stat().st_size >= 500_000 for p in temp):
            temp = list((payloads / "tmp").glob("upload-*.tmp")) if (payloads / "tmp").exists() else []
            time.sleep(0.05)
        running.process.kill()
        running.process.wait(timeout=10)
        sock.close()
    finally:
        running.stop()
    assert temp, "no upload temp file in the payload directory"
    assert not list(system_tmp.iterdir())


def test_a_full_disk_is_507_and_the_next_request_works(tmp_path):
    """The server may write files of at most 1 MiB (RLIMIT_FSIZE: writes beyond fail with
    EFBIG, as on a full file system): a 2 MiB upload is 507, a small one still 201."""
    url, payloads = f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "payloads"
    with open_store(url, payloads) as store:
        _, secret = store.create_token("up", ["admin"])

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    running = start_server(url, payloads, tmp_path / "server.log", preexec_fn=small_files)
    try:
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/octet-stream"}
        full = requests.post(running.url + "/api/v1/payloads/Huge", data=os.urandom(2 << 20), headers=headers,
                             timeout=30)
        assert full.status_code == 507, full.text
        assert full.json()["code"] == "insufficient_storage" and str(tmp_path) not in full.text
        small = requests.post(running.url + "/api/v1/payloads/Small", data=b"small", headers=headers, timeout=10)
        assert small.status_code == 201, small.text
    finally:
        running.stop()


@pytest.mark.postgres
def test_a_database_that_is_down_gives_503_and_recovery(postgres_url, tmp_path):
    import uuid

    import psycopg

    name = "down_" + uuid.uuid4().hex[:10]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    with open_store(url, tmp_path / "payloads") as store:
        store.create_tag("t")
    running = start_server(url, tmp_path / "payloads", tmp_path / "server.log")
    try:
        assert requests.get(running.url + "/api/v1/tags", timeout=10).status_code == 200
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        down = requests.get(running.url + "/api/v1/tags", timeout=20)
        assert down.status_code == 503, down.text
        assert down.json()["code"] == "database_unavailable" and down.headers.get("Retry-After")
        assert "127.0.0.1" not in down.text and name not in down.text
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert requests.get(running.url + "/api/v1/tags", timeout=20).status_code == 200
    finally:
        running.stop()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_failed_authentication_is_logged_and_slowed_down(tmp_path):
    url, payloads = f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "payloads"
    with open_store(url, payloads) as store:
        _, secret = store.create_token("admin", ["admin"])
    running = start_server(url, payloads, tmp_path / "server.log")
    try:
        statuses = []
        for attempt in range(12):
            wrong = {"Authorization": f"Bearer cdb_guess{attempt}"}
            if attempt % 2:
                statuses.append(requests.post(running.url + "/api/v1/tags", json={"name": f"g{attempt}"},
                                              headers=wrong, timeout=10).status_code)
            else:
                statuses.append(requests.get(running.url + "/api/v1/whoami", headers=wrong, timeout=10).status_code)
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
        # Locked out for the window: even the right token waits (nothing is checked meanwhile).
        refused = requests.get(running.url + "/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"},
                               timeout=10)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        # Reads need no token and are not affected.
        assert requests.get(running.url + "/api/v1/tags", timeout=10).status_code == 200
    finally:
        running.stop()
    log = (tmp_path / "server.log").read_text()
    assert "failed authentication from 127.0.0.1" in log and "(10 in the last 60 s; now slowed down)" in log
    assert "cdb_guess" not in log  # the secrets tried are never logged


def test_read_commands_never_turn_an_empty_file_into_a_store(tmp_path):
    from click.testing import CliRunner

    from conditions.cli import main

    empty = tmp_path / "empty.db"
    empty.touch()
    for command in (["tag", "list"], ["iov", "list", "x"], ["check"]):
        result = CliRunner().invoke(main, ["--db", str(empty), *command])
        assert result.exit_code == 1 and "empty file" in result.output, (command, result.output)
        assert empty.stat().st_size == 0
    with pytest.raises(RuntimeError, match="empty file"):
        start_server(str(empty), None, tmp_path / "server.log", timeout=15)
    assert empty.stat().st_size == 0
    # A command that creates a store may.
    assert CliRunner().invoke(main, ["--db", str(empty), "tag", "create", "first"]).exit_code == 0
    assert empty.stat().st_size > 0


def test_check_finds_and_repairs_what_lies_between_database_and_files(tmp_path):
    from click.testing import CliRunner

    from conditions.cli import main

    url, payloads = f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "payloads"
    with open_store(url, payloads) as store:
        damaged = store.add_payload("Damaged", b"will be damaged" * 100)
        lost = store.add_payload("Lost", b"will be lost")
        store.add_payload("Fine", b"stays fine")
    os.chmod(_blob(payloads, damaged.sha256), 0o644)
    _blob(payloads, damaged.sha256).write_bytes(b"x" * len(b"will be damaged" * 100))
    _blob(payloads, lost.sha256).unlink()
    orphan_bytes = b"nobody uses these bytes"
    orphan = _blob(payloads, hashlib.sha256(orphan_bytes).hexdigest())
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(orphan_bytes)
    stale = payloads / "tmp" / "upload-killed.tmp"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"half an upload")
    hour_ago = time.time() - 7200
    for path in (orphan, stale):
        os.utime(path, (hour_ago, hour_ago))

    run = CliRunner().invoke(main, ["--db", url, "--payload-dir", str(payloads), "check"])
    assert run.exit_code == 1, run.output
    for status, what in (("corrupt", "Damaged r1"), ("missing", "Lost r1"), ("orphan", orphan.name[:12]),
                         ("stale-temp", "upload-killed.tmp")):
        assert any(status in line and what in line for line in run.output.splitlines()), (status, run.output)
    assert "Fine" not in run.output.split("\n", 1)[1]

    repaired = CliRunner().invoke(main, ["--db", url, "--payload-dir", str(payloads), "--json", "check", "--repair"])
    report = json.loads(repaired.output)
    assert repaired.exit_code == 1 and report["counts"]["corrupt"] == 1
    assert not orphan.exists() and not stale.exists() and not _blob(payloads, damaged.sha256).exists()
    assert list((payloads / "quarantine").iterdir())

    again = CliRunner().invoke(main, ["--db", url, "--payload-dir", str(payloads), "--json", "check"])
    counts = json.loads(again.output)["counts"]
    assert counts == {"missing": 2, "corrupt": 0, "orphan": 0, "stale-temp": 0, "unexpected": 0}
    # Uploading the same bytes again restores a payload.
    with open_store(url, payloads) as store:
        store.add_payload("Lost", b"will be lost")
    final = json.loads(CliRunner().invoke(main, ["--db", url, "--payload-dir", str(payloads), "--json",
                                                 "check"]).output)
    assert final["counts"]["missing"] == 1 and final["verified"] == 2
