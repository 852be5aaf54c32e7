"""A real conditions server for the tests: uvicorn in a subprocess on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_server(db_url: str, payload_dir: Path | None, log: Path, *, workers: int = 1,
                 extra: tuple[str, ...] = (), timeout: float = 30.0, env: dict[str, str] | None = None,
                 preexec_fn=None) -> LiveServer:
    """Start ``python -m conditions.server`` and wait until it answers its health check.
    ``env`` adds environment variables; ``preexec_fn`` runs in the child before exec (e.g.
    to set resource limits)."""
    last_error = None
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        cmd = [sys.executable, "-m", "conditions.server", "--db", db_url, "--port", str(port),
               "--workers", str(workers), "--log-level", "warning", *extra]
        if payload_dir is not None:
            cmd += ["--payloads", str(payload_dir)]
        child_env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                         **(env or {}))
        out = open(log, "ab")
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env, cwd=REPO,
                                   preexec_fn=preexec_fn)
        out.close()
        server = LiveServer(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                last_error = f"server exited with {process.returncode}: {log.read_text()[-2000:]}"
                break
            try:
                if requests.get(server.url + "/api/v1/health", timeout=1).status_code == 200:
                    return server
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            server.stop()
            last_error = f"server did not come up in {timeout} s: {log.read_text()[-2000:]}"
    raise RuntimeError(last_error)


@dataclass(frozen=True)
class ServedStore:
    url: str
    payload_dir: Path
    backend: str

    def open(self):
        from conditions.store import open_store

        return open_store(self.url, self.payload_dir)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def live_server(request, tmp_path_factory):
    """A running server on a fresh store, once on SQLite and once on PostgreSQL, shared by
    the tests of one module (they use distinct tag and payload names), plus an admin token.

    Yields ``(server, store_location, admin_secret)``; the token is created directly in
    the database, as ``conditionsdb token create`` does.
    """
    workdir = tmp_path_factory.mktemp(f"live-{request.param}")
    database = None
    if request.param == "sqlite":
        location = ServedStore(f"sqlite:///{workdir / 'conditions.db'}", workdir / "payloads", "sqlite")
    else:
        import uuid

        import psycopg

        admin_url = request.getfixturevalue("postgres_url")
        database = "live_" + uuid.uuid4().hex[:12]
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        location = ServedStore(f"{admin_url.rsplit('/', 1)[0]}/{database}", workdir / "payloads", "postgresql")
    store = location.open()
    try:
        _, secret = store.create_token("admin-test", ["admin"])
    finally:
        store.close()
    server = start_server(location.url, location.payload_dir, workdir / "server.log",
                          extra=("--max-upload-bytes", "65536"))
    try:
        yield server, location, secret
    finally:
        server.stop()
        if database is not None:
            import psycopg

            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
