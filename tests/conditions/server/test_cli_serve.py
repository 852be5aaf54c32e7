"""`conditionsdb token` and `conditionsdb serve` as an operator uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner

from conditions.cli import main
from conditions.client import ConditionsClient
from conditions.exceptions import AuthenticationError

from .conftest import REPO, free_port


def test_token_commands(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    runner = CliRunner()
    created = runner.invoke(main, ["--db", db, "--json", "token", "create", "alice", "--scope", "iov:PXD*"])
    assert created.exit_code == 0, created.output
    answer = json.loads(created.output)
    assert answer["secret"] and answer["token"]["scopes"] == ["iov:PXD*"]
    listed = runner.invoke(main, ["--db", db, "token", "list"])
    assert "alice" in listed.output and answer["secret"] not in listed.output
    bad = runner.invoke(main, ["--db", db, "token", "create", "bob", "--scope", "root"])
    assert bad.exit_code != 0 and "admin" in bad.output
    assert runner.invoke(main, ["--db", db, "token", "revoke", str(answer["token"]["token_id"])]).exit_code == 0
    assert "revoked" in runner.invoke(main, ["--db", db, "token", "list"]).output


def test_serve_with_two_workers(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    runner = CliRunner()
    made = runner.invoke(main, ["--db", db, "--json", "token", "create", "ops", "--scope", "admin"])
    secret = json.loads(made.output)["secret"]
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "conditions.cli", "--db", db, "serve", "--port", str(port),
                                "--workers", "2", "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/api/v1/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        client = ConditionsClient(url, token=secret, timeout=(2, 10))
        client.create_tag("gt")
        assert client.whoami().name == "ops"
        # Both workers see the same database: every request agrees.
        assert {ConditionsClient(url).get_tag("gt").name for _ in range(10)} == {"gt"}
        with pytest.raises(AuthenticationError):
            ConditionsClient(url, token="wrong").create_tag("x")
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
