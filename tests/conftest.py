"""Shared fixtures: real conditions stores on SQLite files and on a throwaway PostgreSQL
cluster that the test session starts itself.

Fixtures
--------
``postgres_url`` (session)
    ``postgresql://postgres@127.0.0.1:PORT/postgres`` of a cluster made with initdb and
    started with pg_ctl in a temporary directory (trust auth, loopback only, socket in
    the temp dir), stopped and deleted at the end of the session. Each pytest-xdist worker
    starts its own. Skips, with the reason, only when the server binaries are absent.
``postgres_database``
    A fresh, empty database in that cluster (unique name), dropped after the test.
``store_url``
    Parametrized over ``sqlite`` and ``postgresql``: a :class:`StoreLocation` for a fresh,
    empty store (``.url``, ``.payload_dir``, ``.backend``, ``.open(**options)``).
``store``
    An open :class:`conditions.store.SqlStore` at ``store_url`` (so also both backends).
``sqlite_store``
    An open SQLite-file store in ``tmp_path`` (for tests that need one backend only).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

_PG_MISSING = "PostgreSQL server binaries (initdb, pg_ctl) not found in PATH or /usr/lib/postgresql/*/bin"


def _postgres_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl (and postgres), or None."""
    found = shutil.which("initdb")
    if found:
        bindir = Path(os.path.realpath(found)).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")],
    )
    for initdb in reversed(candidates):
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    """A throwaway PostgreSQL cluster. initdb refuses to run as root, so when we are root
    the cluster belongs to the unprivileged ``postgres`` user (or ``nobody``)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        # Not under pytest's tmp dirs: those are 0700 root-owned, which the server user
        # cannot enter, and unix socket paths must stay short.
        self.root = Path(tempfile.mkdtemp(prefix="condpg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.sockets.mkdir()
        self.run_as: str | None = None
        if os.geteuid() == 0:
            self.run_as = _unprivileged_user()
            entry = pwd.getpwnam(self.run_as)
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(self.root, 0o700)
        self.port: int | None = None
        self.watchdog: subprocess.Popen | None = None

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as is None:
            return list(args)
        return ["runuser", "-u", self.run_as, "--", *args]

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout,
                                cwd=self.root)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}"
            )

    def _start_watchdog(self) -> None:
        """A tiny process that stops the cluster if this test process dies without
        running its finalizers (SIGKILL, a timeout), so no server is ever left behind."""
        stop = self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        code = (
            "import os, shutil, subprocess, sys, time\n"
            "parent, root, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3:]\n"
            "while True:\n"
            "    try:\n"
            "        os.kill(parent, 0)\n"
            "    except ProcessLookupError:\n"
            "        break\n"
            "    if not os.path.isdir(root):\n"
            "        sys.exit(0)\n"
            "    time.sleep(1)\n"
            "subprocess.run(stop, capture_output=True)\n"
            "shutil.rmtree(root, ignore_errors=True)\n"
        )
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", code, str(os.getpid()), str(self.root), *stop],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start(self) -> str:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "--encoding=UTF8", "--no-locale")
        last_error = None
        for _attempt in range(3):  # the free port may be taken by someone else in between
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c shared_buffers=16MB -c max_connections=80"
            )
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                          "-l", str(self.log), "-w", "-t", "60", "start")
                self._start_watchdog()
                return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
            except RuntimeError as error:
                last_error = error
        raise RuntimeError(f"could not start PostgreSQL: {last_error}")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self.watchdog is not None:
                self.watchdog.kill()
                self.watchdog.wait()


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user to own the test cluster")


@pytest.fixture(scope="session")
def postgres_url():
    """URL of the session's throwaway PostgreSQL cluster (maintenance database)."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip(_PG_MISSING)
    cluster = _Cluster(bindir)
    try:
        url = cluster.start()
    except BaseException:
        cluster.stop()
        raise
    try:
        yield url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_database(postgres_url):
    """URL of a fresh, empty database in the session cluster; dropped afterwards."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _ = postgres_url.rsplit("/", 1)
    yield f"{base}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class StoreLocation:
    """Where a fresh test store lives: the database URL and its payload directory."""

    url: str
    payload_dir: Path
    backend: str  # "sqlite" or "postgresql"

    def open(self, **options):
        from conditions.store import open_store

        return open_store(self.url, self.payload_dir, **options)

    def __str__(self) -> str:
        return self.url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> StoreLocation:
    """A fresh store location, once on SQLite and once on PostgreSQL."""
    payload_dir = tmp_path / "payloads"
    if request.param == "sqlite":
        return StoreLocation(f"sqlite:///{tmp_path / 'conditions.db'}", payload_dir, "sqlite")
    url = request.getfixturevalue("postgres_database")
    return StoreLocation(url, payload_dir, "postgresql")


@pytest.fixture
def store(store_url):
    """An open SqlStore on each backend."""
    opened = store_url.open()
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path):
    """An open SqlStore in an SQLite file (payloads in ``tmp_path/conditions.db.payloads``)."""
    from conditions.store import open_store

    opened = open_store(tmp_path / "conditions.db")
    yield opened
    opened.close()
