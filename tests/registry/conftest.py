"""Fixtures for the registry tests: small checkpoint files with manifests, and a payload
cache in the test's temp dir (never the user's real cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conditions.cache import PayloadCache
from registry import resolve
from registry.checkpoint import write_checkpoint
from registry.manifest import Manifest


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch, tmp_path):
    """No test sees the developer's environment, cache or another test's registries."""
    for name in (resolve.SOURCES_ENV, resolve.GLOBALTAGS_ENV, resolve.NO_EMBEDDED_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONDITIONS_CACHE_DIR", str(tmp_path / "payload-cache"))
    resolve.clear_cache()
    yield
    resolve.clear_cache()


@pytest.fixture
def payload_cache(tmp_path) -> PayloadCache:
    return PayloadCache(tmp_path / "cache")


@pytest.fixture
def make_checkpoint(tmp_path):
    """``make_checkpoint(model, value, **manifest_fields)`` -> path of a tiny safetensors
    checkpoint whose single tensor is filled with ``value`` (so tests can tell files apart)."""
    counter = iter(range(10**6))

    def make(model: str = "convnet", value: float = 1.0, *, architecture_version: int = 1,
             manifest: bool = True, **fields) -> Path:
        path = tmp_path / f"ckpt-{model}-{next(counter)}.safetensors"
        tensors = {"weight": torch.full((4,), float(value))}
        if manifest:
            write_checkpoint(path, tensors, Manifest(model=model, architecture_version=architecture_version, **fields))
        else:
            from safetensors.torch import save_file

            save_file(tensors, str(path))
        return path

    return make


# -- a real conditions server (uvicorn in a subprocess on a loopback port) ------------------

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``python -m conditions.server`` (what ``conditionsdb serve`` runs) on a free port."""

    def __init__(self, db: Path, log: Path, timeout: float = 60.0):
        import os
        import subprocess
        import sys
        import time

        import requests

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "conditions.server", "--db", str(db), "--port", str(self.port),
                 "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not come up: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``cli(*args)`` -> result of ``pxdbg ARGS`` in-process; ``--db`` comes from PXDBG_DB
    (``tmp_path/admin.db``), as an admin would set it."""
    from pxdbg.cli import main

    monkeypatch.setenv("PXDBG_DB", str(tmp_path / "admin.db"))
    monkeypatch.delenv("CONDITIONSDB_URL", raising=False)
    monkeypatch.delenv("CONDITIONSDB_TOKEN", raising=False)
    runner = CliRunner()

    def invoke(*args: str, status: int = 0):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == status, result.output
        return result

    return invoke
