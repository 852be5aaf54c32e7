"""The ``conditionsdb`` command, run as a real subprocess (``python -m conditions.cli``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, db: str | None = None, env_db: str | None = None, check: int | None = 0):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDITIONSDB_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if env_db:
        env["CONDITIONSDB_URL"] = env_db
    command = [sys.executable, "-m", "conditions.cli"]
    if db:
        command += ["--db", db]
    result = subprocess.run(command + list(args), capture_output=True, text=True, env=env, timeout=120)
    if check is not None:
        assert result.returncode == check, (args, result.stdout, result.stderr)
    return result


def test_create_upload_publish_resolve(tmp_path):
    db = str(tmp_path / "conditions.db")
    payload = tmp_path / "beamspot.root"
    payload.write_bytes(b"beam spot constants v1")
    cli("tag", "create", "main", "-d", "main tag", db=db)
    out = cli("upload", "main", str(payload), "--name", "BeamSpot", "--iov", "1,0,1,-1",
              "--meta", "calibrated_by=alice", "--meta", "runs=12", db=db).stdout
    assert "BeamSpot r1" in out and "1,0,1,-1" in out
    cli("tag", "state", "main", "TESTING", db=db)
    # the env var works as well as --db, and resolve prints the verified local file
    path = Path(cli("resolve", "main", "BeamSpot", "1", "55", env_db=db).stdout.strip())
    assert path.read_bytes() == b"beam spot constants v1"
    assert path.is_relative_to(tmp_path / "conditions.db.payloads")
    data = json.loads(cli("--json", "resolve", "main", "BeamSpot", "1", "55", db=db).stdout)
    payload_info = data["resolved"]["payload"]
    assert payload_info["checksum"] == hashlib.md5(b"beam spot constants v1").hexdigest()
    assert payload_info["metadata"] == {"calibrated_by": "alice", "runs": 12, "filename": "beamspot.root"}
    assert payload_info["url"].endswith("/BeamSpot_r1.root")
    assert data["resolved"]["iov"] == [1, 0, 1, -1]
    listing = json.loads(cli("--json", "tag", "list", db=db).stdout)
    assert [(t["name"], t["state"]) for t in listing] == [("main", "TESTING")]
    shown = cli("tag", "show", "main", db=db).stdout
    assert "TESTING" in shown and "BeamSpot" in shown and "1,0,1,-1" in shown


def test_errors_say_what_went_wrong_and_what_to_do(tmp_path):
    db = str(tmp_path / "conditions.db")
    payload = tmp_path / "p.txt"
    payload.write_bytes(b"x")
    r = cli("tag", "create", "bad name", db=db, check=1)
    assert "invalid global tag name" in r.stderr
    r = cli("tag", "state", "missing", "TESTING", db=db, check=1)
    assert "no global tag named 'missing'" in r.stderr and "conditionsdb tag list" in r.stderr
    cli("tag", "create", "gt", db=db)
    cli("tag", "state", "gt", "TESTING", db=db)
    r = cli("upload", "gt", str(payload), "--name", "P", "--iov", "0,0,-1,-1", db=db, check=1)
    assert "TESTING" in r.stderr and "clone" in r.stderr
    r = cli("upload", "gt", str(payload), "--name", "../../etc/passwd", "--iov", "0,0,-1,-1", db=db, check=1)
    assert "invalid payload name" in r.stderr
    # a malformed IoV is a usage error (2), caught before the store is touched
    r = cli("upload", "gt", str(payload), "--name", "P", "--iov", "3,0,1,0", db=db, check=2)
    assert "after its final point" in r.stderr and "--iov" in r.stderr
    r = cli("tag", "state", "gt", "PUBLISHED", db=db, check=1)
    assert "cannot go from TESTING to PUBLISHED" in r.stderr
    r = cli("resolve", "gt", "P", "1", "1", db=db, check=1)
    assert "no IoV of payload 'P'" in r.stderr


def test_not_a_store_and_usage_errors(tmp_path):
    db = str(tmp_path / "conditions.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(1000))
    r = cli("tag", "list", db=str(junk), check=1)
    assert "not a conditions store" in r.stderr and "--db" in r.stderr
    assert "Traceback" not in r.stderr
    # usage errors are click's exit status 2
    r = cli("tag", "list", check=2)
    assert "CONDITIONSDB_URL" in r.stderr
    cli("resolve", "gt", "P", "one", "1", db=db, check=2)
    cli("upload", "gt", str(tmp_path / "missing.txt"), "--name", "P", "--iov", "0,0,-1,-1", db=db, check=2)


def test_verbose_shows_traceback_and_help_works(tmp_path):
    db = str(tmp_path / "conditions.db")
    # reading a store that does not exist is an error, and creates no file (a typo in --db
    # must not leave empty stores behind)
    r = cli("-v", "tag", "show", "missing", db=db, check=1)
    assert "Traceback" in r.stderr and "NotAStoreError" in r.stderr and "no conditions store" in r.stderr
    assert not Path(db).exists()
    out = cli("--help").stdout
    for command in ("tag", "upload", "resolve"):
        assert command in out


def test_damaged_payload_file_is_refused(tmp_path):
    db = str(tmp_path / "conditions.db")
    payload = tmp_path / "p.bin"
    payload.write_bytes(b"original")
    cli("tag", "create", "gt", db=db)
    cli("upload", "gt", str(payload), "--name", "P", "--iov", "0,0,-1,-1", db=db)
    path = Path(cli("resolve", "--allow-open", "gt", "P", "0", "0", db=db).stdout.strip())
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # blobs are read-only
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    r = cli("resolve", "--allow-open", "gt", "P", "0", "0", db=db, check=1)
    assert "does not match" in r.stderr
