"""The whole ``conditionsdb`` cycle, as an operator runs it, on each kind of --db: an SQLite
file, PostgreSQL, and a live server (uvicorn on a loopback port, reached over HTTP with a
token from the default token file):

upload (dry run, then a testing-payloads batch, then one file) -> state changes (with the
retype confirmation) -> resolve -> download a basf2 snapshot -> open it as a store ->
verify it, damage it, resume the download to repair it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conditions.api import open_source
from conditions.snapshot import SnapshotSource, verify_snapshot
from conditions.store import open_store
from conditions.tags import GlobalTagState

from .cli_helpers import cli_env, run_cli, write_testing_payloads
from .server.conftest import LiveServer, start_server


@dataclass
class Backend:
    kind: str
    args: list[str]  # global options naming the store
    store_url: str  # the database behind it, for checks made directly
    payload_dir: Path
    token: str | None = None  # for a server: written to the default token file
    extra: dict = field(default_factory=dict)

    def open(self):
        return open_store(self.store_url, self.payload_dir)


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    """A server on an SQLite store with an admin token and one limited to iov:PXD* tags."""
    workdir = tmp_path_factory.mktemp("cli-server")
    url, payloads = f"sqlite:///{workdir / 'conditions.db'}", workdir / "payloads"
    store = open_store(url, payloads)
    try:
        _, admin = store.create_token("cli-admin", ["admin"])
        _, limited = store.create_token("pxd-only", ["iov:PXD*"])
    finally:
        store.close()
    server: LiveServer = start_server(url, payloads, workdir / "server.log")
    try:
        yield {"server": server, "url": url, "payloads": payloads, "admin": admin, "limited": limited}
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "server", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "conditions.db"
        return Backend("sqlite", ["--db", str(path)], f"sqlite:///{path}", tmp_path / "conditions.db.payloads")
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_database")
        payloads = tmp_path / "pg-payloads"
        return Backend("postgresql", ["--db", url, "--payload-dir", str(payloads)], url, payloads)
    info = request.getfixturevalue("cli_server")
    return Backend("server", ["--db", info["server"].url], info["url"], info["payloads"], token=info["admin"])


def test_upload_publish_resolve_download_cycle(backend: Backend, tmp_path):
    env = cli_env(tmp_path)
    if backend.token:  # the default token file, private to its owner
        token_file = tmp_path / "config" / "conditionsdb" / "token"
        token_file.parent.mkdir(parents=True)
        token_file.write_text(f"# API token\n{backend.token}\n")
        token_file.chmod(0o600)
    g = backend.args
    tag, prefix = f"cycle_{backend.kind}", f"Cyc{backend.kind.capitalize()}"
    database = write_testing_payloads(tmp_path / "localdb", prefix)

    run_cli(*g, "tag", "create", tag, "-d", "the CLI cycle", env=env)

    # A dry run reports the plan and changes nothing.
    out = run_cli(*g, "upload", tag, str(database), "--dry-run", env=env).stdout
    assert "would upload 3 of 3 distinct payloads" in out and "would add 4 IoVs" in out
    with backend.open() as store:
        assert store.iovs(tag) == []
        assert not [p for p in store.list_payloads() if p.name.startswith(prefix)]

    # The batch: each distinct payload once, each distinct IoV once.
    data = json.loads(run_cli(*g, "--json", "upload", tag, str(database), env=env).stdout)
    assert [(p["name"], p["revision"], p["stored_before"]) for p in data["payloads"]] == [
        (f"{prefix}A", 1, False), (f"{prefix}B", 1, False), (f"{prefix}C", 1, False)]
    assert len(data["iov_ids"]) == 4 and None not in data["iov_ids"]
    # Running it again finds everything in place.
    out = run_cli(*g, "upload", tag, str(database), env=env).stdout
    assert "uploaded 0 of 3 distinct payloads (3 already stored), added 0 IoVs" in out

    single = tmp_path / "beamspot.root"
    single.write_bytes(b"beam spot " + prefix.encode())
    out = run_cli(*g, "upload", tag, str(single), "--name", f"{prefix}BeamSpot", "--iov", "2,0,2,-1",
                  "--meta", "calibrated_by=alice", "--meta", "runs=12", env=env).stdout
    assert f"{prefix}BeamSpot r1" in out and "2,0,2,-1" in out
    with backend.open() as store:
        assert len(store.iovs(tag)) == 5
        beamspot = store.get_payload(f"{prefix}BeamSpot")
        assert beamspot.metadata["calibrated_by"] == "alice" and beamspot.metadata["runs"] == 12
        if backend.kind == "server":  # the server signs changes with the token's name
            assert {entry.who for entry in store.audit(tag=tag)} == {"cli-admin"}

    # Lifecycle: lower case works; PUBLISHED wants the tag name retyped.
    run_cli(*g, "tag", "state", tag, "testing", env=env)
    with backend.open() as store:
        store.set_tag_state(tag, GlobalTagState.VALIDATED)
    refused = run_cli(*g, "tag", "state", tag, "PUBLISHED", input="not-the-tag\n", env=env, check=1)
    assert "nothing changed" in refused.stderr
    with backend.open() as store:
        assert store.get_tag(tag).state is GlobalTagState.VALIDATED
    run_cli(*g, "tag", "state", tag, "PUBLISHED", input=f"{tag}\n", env=env)

    # resolve prints a verified local file (a server's goes into the payload cache).
    path = Path(run_cli(*g, "resolve", tag, f"{prefix}A", "0", "15", env=env).stdout.strip())
    assert path.read_bytes() == b"alpha constants " + prefix.encode()
    if backend.kind == "server":
        assert path.is_relative_to(tmp_path / "cache")

    # download: a basf2 snapshot, usable as a store.
    snap = tmp_path / "snapshot"
    out = run_cli(*g, "download", tag, "-o", str(snap), env=env).stdout
    assert "5 IoVs, 4 payloads; 4 payload files written" in out
    with SnapshotSource(snap) as snapshot, backend.open() as store:
        assert snapshot.tag_state(tag) is GlobalTagState.PUBLISHED
        assert len(snapshot.iovs(tag)) == 5
        for name, exp, run in [(f"{prefix}A", 0, 3), (f"{prefix}A", 0, 99), (f"{prefix}B", 7, 7),
                               (f"{prefix}C", 1, 1), (f"{prefix}BeamSpot", 2, 5)]:
            ours, theirs = snapshot.resolve(tag, name, exp, run), store.resolve(tag, name, exp, run)
            assert (ours.payload.checksum, ours.iov) == (theirs.payload.checksum, theirs.iov)
            local = snapshot.local_path(ours.payload)
            assert hashlib.md5(local.read_bytes()).hexdigest() == ours.payload.checksum
    # ... and by the CLI, through --db
    snap_path = Path(run_cli("--db", str(snap), "resolve", tag, f"{prefix}C", "1", "3", env=env).stdout.strip())
    assert snap_path.is_relative_to(snap) and snap_path.read_bytes() == b"gamma constants " + prefix.encode()
    with open_source(snap) as source:
        assert source.resolve([tag], f"{prefix}B", 0, 0).payload.name == f"{prefix}B"

    # verify: clean, then a damaged file is found (exit 1), and a resumed download repairs it.
    assert "4 files, 4 ok" in run_cli("verify", str(snap), env=env).stdout
    damaged = snap_path
    damaged.chmod(0o644)
    damaged.write_bytes(b"damaged")
    out = run_cli("verify", str(snap), env=env, check=1).stdout
    assert "1 corrupt" in out and str(damaged) in out
    out = run_cli(*g, "download", tag, "-o", str(snap), env=env).stdout
    assert "1 payload files written, 3 already there and verified" in out
    assert verify_snapshot(snap).ok
    assert damaged.read_bytes() == b"gamma constants " + prefix.encode()
    assert not [p for p in snap.rglob(".tmp-*")], "no temp files left behind"
    assert os.path.exists(snap / "metadata.sqlite")


def test_wrong_or_missing_token_exits_1_and_writes_nothing(cli_server, tmp_path):
    env = cli_env(tmp_path)  # no default token file in this private config directory
    g = ["--db", cli_server["server"].url]
    database = write_testing_payloads(tmp_path / "localdb", "PXDToken")
    with open_store(cli_server["url"], cli_server["payloads"]) as store:
        store.create_tag("tokens_other")
        store.create_tag("PXDtokens")

    def nothing_written():
        with open_store(cli_server["url"], cli_server["payloads"]) as store:
            assert not [p for p in store.list_payloads() if p.name.startswith("PXDToken")]
            assert store.iovs("tokens_other") == [] and store.iovs("PXDtokens") == []
            assert [t.name for t in store.list_tags(pattern="*tokens*")] == ["PXDtokens", "tokens_other"]

    r = run_cli(*g, "tag", "create", "tokens_new", env=env, check=1)
    assert "needs an API token, and none was given" in r.stderr and "--token" in r.stderr
    assert "token create" in r.stderr  # how to get one
    r = run_cli(*g, "--token", "not-a-token", "upload", "tokens_other", str(database), env=env, check=1)
    assert "refused the API token from --token or CONDITIONSDB_TOKEN" in r.stderr
    assert "unknown or revoked token" in r.stderr and "Traceback" not in r.stderr
    bad_file = tmp_path / "token"
    bad_file.write_text("stale-secret\n")
    r = run_cli(*g, "upload", "tokens_other", str(database), env=dict(env, CONDITIONSDB_TOKEN_FILE=str(bad_file)),
                check=1)
    assert f"token file {bad_file}" in r.stderr and "readable by others" in r.stderr
    # a valid token whose scopes (iov:PXD*) do not cover the tag: refused before any upload
    r = run_cli(*g, "--token", cli_server["limited"], "upload", "tokens_other", str(database), env=env, check=1)
    assert "may not upload payloads and add IoVs in global tag 'tokens_other'" in r.stderr
    nothing_written()
    # ... and the same token where it may write
    out = run_cli(*g, "upload", "PXDtokens", str(database), env=dict(env, CONDITIONSDB_TOKEN=cli_server["limited"]),
                  ).stdout
    assert "uploaded 3 of 3 distinct payloads" in out and "added 4 IoVs to PXDtokens" in out
