"""``conditionsdb`` commands one by one: usage errors (exit 2, with a message that says what
to write instead), dry runs that change nothing, the iov/clone/diff commands, and that
``--help`` stays light (no torch, no FastAPI)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conditions.cli import main
from conditions.iov import IntervalOfValidity as IoV
from conditions.store import open_store
from conditions.tags import GlobalTagState

from .cli_helpers import ROOT, cli_env, run_cli, write_testing_payloads


@pytest.fixture
def invoke(tmp_path):
    """In-process ``conditionsdb`` (click's runner), isolated like the subprocess helper."""
    runner = CliRunner()
    env = {k: None for k in ("CONDITIONSDB_URL", "CONDITIONSDB_TOKEN", "CONDITIONSDB_TOKEN_FILE",
                             "CONDITIONSDB_PAYLOAD_DIR")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), CONDITIONS_CACHE_DIR=str(tmp_path / "cache"))

    def run(*args: str, code: int = 0, input: str | None = None):
        result = runner.invoke(main, list(args), env=env, input=input, catch_exceptions=False)
        assert result.exit_code == code, (args, result.exit_code, result.output)
        return result

    return run


@pytest.fixture
def filled(tmp_path):
    """An SQLite store with OPEN tag ``gt``: P r1 for experiment 0 runs 0-10 and 11-, Q r1 always."""
    path = tmp_path / "conditions.db"
    with open_store(path) as store:
        store.create_tag("gt", "for the tests")
        store.upload("gt", "P", b"p one", IoV(0, 0, 0, 10))
        store.add_iov("gt", "P", 1, IoV(0, 11, 0, -1))
        store.upload("gt", "Q", b"q one", IoV(0, 0, -1, -1))
    return path


USAGE_ERRORS = [
    (["upload", "gt", "{file}", "--name", "P", "--iov", "1,2,3"], ["--iov", "four integers", "example: 1,0,1,-1"]),
    (["upload", "gt", "{file}", "--name", "P", "--iov", "3,0,1,0"], ["--iov", "after its final point"]),
    (["upload", "gt", "{file}", "--name", "P", "--iov", "a,b,c,d"], ["--iov", "four integers"]),
    (["upload", "gt", "{file}", "--name", "P"], ["both --name and --iov"]),
    (["upload", "gt", "{file}", "--name", "P", "--iov", "0,0,-1,-1", "--meta", "novalue"],
     ["--meta", "key=value"]),
    (["tag", "state", "gt", "DONE"], ["'DONE' is not a global tag state", "PUBLISHED"]),
    (["tag", "list", "--state", "nope"], ["--state", "OPEN, TESTING"]),
    (["iov", "list", "gt", "--run", "1"], ["--run"]),
    (["iov", "add", "gt", "P", "0", "--iov", "0,0,-1,-1"], ["REVISION"]),
    (["iov", "modify", "1", "--iov", "0,-1,0,0"], ["--iov", ">= 0"]),
    (["iov", "delete", "gt"], ["either IoV ids or --runs"]),
    (["iov", "delete", "gt", "1", "--runs", "0,0,0,-1"], ["either IoV ids or --runs"]),
    (["iov", "delete", "gt", "1", "--name", "P"], ["--name only applies together with --runs"]),
    (["resolve", "gt", "P", "-1", "0"], ["EXP"]),
    (["download", "gt"], ["-o"]),
    (["verify"], ["--cache"]),
    (["verify", "--repair", "{tmp}"], ["--repair only applies to --cache"]),
    (["diff", "gt"], ["TAG_B"]),
]


@pytest.mark.parametrize("args, words", USAGE_ERRORS, ids=[" ".join(a[:3]) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_and_say_what_to_do(invoke, tmp_path, filled, args, words):
    payload = tmp_path / "p.bin"
    payload.write_bytes(b"new bytes")
    args = [a.format(file=payload, tmp=tmp_path) for a in args]
    with open_store(filled) as store:
        before = (store.iovs("gt"), store.list_payloads(), store.get_tag("gt"))
    result = invoke("--db", str(filled), *args, code=2)
    for word in words:
        assert word in result.output, (word, result.output)
    assert "Traceback" not in result.output
    with open_store(filled) as store:
        assert (store.iovs("gt"), store.list_payloads(), store.get_tag("gt")) == before


def test_global_usage_errors(invoke, tmp_path):
    result = invoke("tag", "list", code=2)
    assert "--db" in result.output and "CONDITIONSDB_URL" in result.output
    result = invoke("--db", str(tmp_path / "c.db"), "--token-file", str(tmp_path / "nope"), "tag", "list", code=2)
    assert "--token-file" in result.output and "does not exist" in result.output
    # reading a store that is not there creates nothing, and says how to create one
    # (and neither does a change: only `tag create` and `token create` start a new store)
    for args in (["tag", "list"], ["upload", "gt", __file__, "--name", "P", "--iov", "0,0,-1,-1", "--dry-run"],
                 ["upload", "gt", __file__, "--name", "P", "--iov", "0,0,-1,-1"], ["tag", "state", "gt", "TESTING"],
                 ["iov", "delete", "gt", "1"]):
        result = invoke("--db", str(tmp_path / "typo.db"), *args, code=1)
        assert "no conditions store at" in result.output and "tag create" in result.output
    assert not (tmp_path / "typo.db").exists()


def test_bad_arguments_as_a_real_process(tmp_path, filled):
    """The installed entry point's exit statuses: 2 for usage, 1 for a refused operation."""
    env = cli_env(tmp_path)
    r = run_cli("--db", str(filled), "iov", "add", "gt", "P", "1", "--iov", "0,0,1", env=env, check=2)
    assert "Invalid value for '--iov'" in r.stderr and "FIRST_EXP,FIRST_RUN,FINAL_EXP,FINAL_RUN" in r.stderr
    r = run_cli("--db", str(filled), "iov", "add", "gt", "P", "7", "--iov", "1,0,1,-1", env=env, check=1)
    assert r.stderr.startswith("error: ") and "hint: " in r.stderr and "Traceback" not in r.stderr


def test_iov_delete_dry_run_then_for_real(tmp_path, filled):
    env = cli_env(tmp_path)
    g = ["--db", str(filled)]
    with open_store(filled) as store:
        before = store.iovs("gt")
    ids = {(r.payload.name, r.iov.as_tuple()): r.iov_id for r in before}

    out = run_cli(*g, "iov", "delete", "gt", "--runs", "0,0,0,-1", "--dry-run", env=env).stdout
    assert "would delete 2 IoVs of gt" in out and "kept 1 IoV reaching beyond 0,0,0,-1" in out
    with open_store(filled) as store:
        assert store.iovs("gt") == before

    r = run_cli(*g, "iov", "delete", "gt", str(ids[("P", (0, 0, 0, 10))]), "9999", env=env, check=1)
    assert "no IoV with id 9999" in r.stderr and "nothing was deleted" in r.stderr
    with open_store(filled) as store:
        assert store.iovs("gt") == before

    data = json.loads(run_cli(*g, "--json", "iov", "delete", "gt", "--runs", "0,0,0,-1", "--name", "P",
                              env=env).stdout)
    assert sorted(r["iov_id"] for r in data["deleted"]) == sorted([ids[("P", (0, 0, 0, 10))],
                                                                    ids[("P", (0, 11, 0, -1))]])
    with open_store(filled) as store:
        assert [(r.payload.name, r.iov.as_tuple()) for r in store.iovs("gt")] == [("Q", (0, 0, -1, -1))]


def test_iov_add_modify_list_clone_diff(invoke, tmp_path, filled):
    g = ["--db", str(filled)]
    added = json.loads(invoke(*g, "--json", "iov", "add", "gt", "P", "1", "--iov", "1,0,1,-1").output)
    assert added["iov"] == [1, 0, 1, -1]
    out = invoke(*g, "iov", "modify", str(added["iov_id"]), "--iov", "1,0,1,99").output
    assert "is now valid for 1,0,1,99" in out
    listed = invoke(*g, "iov", "list", "gt", "--run", "1", "50").output.splitlines()
    assert listed[0].split()[:3] == ["ID", "PAYLOAD", "REV"] and len(listed) == 3  # header, P, Q
    assert json.loads(invoke(*g, "--json", "iov", "list", "gt", "--name", "Q").output)[0]["payload"]["name"] == "Q"

    out = invoke(*g, "tag", "clone", "gt", "gt2", "-d", "a copy").output
    assert "cloned gt into gt2 (OPEN, 4 IoVs)" in out
    assert "have the same IoVs" in invoke(*g, "diff", "gt", "gt2", "--exit-code").output
    invoke(*g, "iov", "delete", "gt2", str(added["iov_id"] + 4))  # the clone's copy of the new IoV
    result = invoke(*g, "diff", "gt", "gt2", "--exit-code", code=1)
    assert "--- gt (1 IoVs only here)" in result.output and "1,0,1,99" in result.output
    assert "have the same IoVs at experiment 0, run 5" in invoke(*g, "diff", "gt", "gt2", "--run", "0", "5").output

    listing = invoke(*g, "tag", "list", "--pattern", "gt*", "--state", "open").output
    assert [line.split()[0] for line in listing.splitlines()] == ["NAME", "gt", "gt2"]
    # --yes skips the retyping; a refused transition asks nothing and changes nothing
    invoke(*g, "tag", "state", "gt2", "RUNNING")
    result = invoke(*g, "tag", "state", "gt2", "PUBLISHED", code=1)
    assert "cannot go from RUNNING to PUBLISHED" in result.output and "Retype" not in result.output
    invoke(*g, "tag", "state", "gt2", "INVALID", "--yes")
    with open_store(filled) as store:
        assert store.get_tag("gt2").state is GlobalTagState.INVALID


def test_batch_upload_into_a_frozen_tag_stores_nothing(invoke, tmp_path, filled):
    database = write_testing_payloads(tmp_path / "localdb", "Frozen")
    with open_store(filled) as store:
        store.set_tag_state("gt", "TESTING")
    result = invoke("--db", str(filled), "upload", "gt", str(database), "--dry-run")
    assert "would upload 3 of 3" in result.output and "gt is TESTING" in result.output
    assert "would be refused" in result.output
    result = invoke("--db", str(filled), "upload", "gt", str(database), code=1)
    assert "TESTING" in result.output and "nothing was uploaded" in result.output and "clone" in result.output
    with open_store(filled) as store:
        assert not [p for p in store.list_payloads() if p.name.startswith("Frozen")]
    # a file that is not a testing-payloads list says which line is wrong
    bad = tmp_path / "bad.txt"
    bad.write_text("dbstore/X 1 0,0\n")
    result = invoke("--db", str(filled), "upload", "gt", str(bad), "--dry-run", code=1)
    assert f"{bad}:1" in result.output


def test_help_is_quick_and_imports_nothing_heavy(tmp_path):
    env = cli_env(tmp_path)
    result = run_cli("--help", env=env)
    for command in ("tag", "diff", "iov", "upload", "resolve", "download", "verify", "serve", "token"):
        assert f"  {command} " in result.stdout
    import subprocess

    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "conditions.cli", "--help"],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in probe.stderr.splitlines() if "|" in line}
    assert imported & {"torch", "fastapi", "uvicorn", "starlette", "pydantic", "tqdm"} == set()
    assert "conditions" in imported


def test_verify_cache_reports_damage(invoke, tmp_path):
    cache = tmp_path / "cache"
    good = b"cached bytes"
    import hashlib

    md5 = hashlib.md5(good).hexdigest()
    (cache / md5[:2]).mkdir(parents=True)
    (cache / md5[:2] / md5).write_bytes(good)
    assert "1 files, 1 ok" in invoke("verify", "--cache").output
    bad_md5 = hashlib.md5(b"other").hexdigest()
    (cache / bad_md5[:2]).mkdir(exist_ok=True)
    (cache / bad_md5[:2] / bad_md5).write_bytes(b"not other")
    result = invoke("verify", "--cache", code=1)
    assert "corrupt" in result.output and "--repair" in result.output
    invoke("verify", "--cache", "--repair", code=1)
    assert not (cache / bad_md5[:2] / bad_md5).exists() and (cache / md5[:2] / md5).exists()
    assert "1 files, 1 ok" in invoke("verify", "--cache").output


def test_batch_upload_keeps_file_order_and_warns_where_basf2_would_differ(invoke, tmp_path, filled):
    """Lines X, Y, X of one name: X is uploaded once (r1), Y is r2. The IoVs go in in file
    order, which a RUNNING tag needs (each must start after the previous ones); and where
    an earlier, higher revision would now win an overlap that basf2 gave the later line,
    the command says so."""
    local = tmp_path / "localdb"
    local.mkdir()
    for revision, data in [(1, b"X"), (2, b"Y"), (3, b"X")]:
        (local / f"dbstore_R_rev_{revision}.root").write_bytes(data)
    (local / "database.txt").write_text("dbstore/R 1 0,0,0,5\ndbstore/R 2 0,6,0,10\ndbstore/R 3 0,11,0,20\n")
    with open_store(filled) as store:
        store.create_tag("run")
        store.set_tag_state("run", "RUNNING")
    result = invoke("--db", str(filled), "upload", "run", str(local / "database.txt"))
    assert "uploaded 2 of 2 distinct payloads" in result.output and "added 3 IoVs" in result.output
    assert "warning" not in result.output
    with open_store(filled) as store:
        assert [(r.payload.revision, r.iov.as_tuple()) for r in store.iovs("run")] == [
            (1, (0, 0, 0, 5)), (2, (0, 6, 0, 10)), (1, (0, 11, 0, 20))]

    (local / "overlap.txt").write_text("dbstore/R 1 0,0,-1,-1\ndbstore/R 2 0,5,0,10\ndbstore/R 3 0,8,0,8\n")
    invoke("--db", str(filled), "tag", "create", "overlap")
    result = invoke("--db", str(filled), "upload", "overlap", str(local / "overlap.txt"))
    assert "warning: R: where 0,8,0,8 overlaps 0,5,0,10" in result.output


def test_batch_upload_keeps_the_last_of_duplicate_name_and_interval_lines(invoke, tmp_path, filled):
    """Mirrors framework/scripts/conditions_db/cli_upload.py (and ConditionsDB.upload in
    framework/scripts/conditions_db/__init__.py): ``sorted(set(reversed(entries)))`` with
    entries equal by (name, interval), i.e. the LAST line of a duplicate wins."""
    local = tmp_path / "localdb"
    local.mkdir()
    for revision, data in [(1, b"first"), (2, b"second"), (3, b"other run range")]:
        (local / f"dbstore_D_rev_{revision}.root").write_bytes(data)
    (local / "database.txt").write_text(
        "dbstore/D 1 0,0,0,-1\ndbstore/D 3 1,0,1,-1\ndbstore/D 2 0,0,0,-1   # supersedes line 1\n"
        "dbstore/D 9 5,0,4,0   # reversed: basf2 never uses it\n")
    invoke("--db", str(filled), "tag", "create", "dups")
    result = invoke("--db", str(filled), "upload", "dups", str(local / "database.txt"))
    assert "database.txt:1: replaced by line 3" in result.output
    assert "database.txt:4: skipped" in result.output
    assert "uploaded 2 of 2 distinct payloads" in result.output and "added 2 IoVs" in result.output
    with open_store(filled) as store:
        got = {r.iov.as_tuple(): store.local_path(r.payload).read_bytes() for r in store.iovs("dups")}
    assert got == {(0, 0, 0, -1): b"second", (1, 0, 1, -1): b"other run range"}


def test_batch_upload_refuses_lines_whose_file_is_missing(invoke, tmp_path, filled):
    local = tmp_path / "localdb"
    local.mkdir()
    (local / "dbstore_M_rev_1.root").write_bytes(b"here")
    (local / "database.txt").write_text("dbstore/M 1 0,0,0,-1\ndbstore/M 2 1,0,1,-1\n")
    result = invoke("--db", str(filled), "upload", "gt", str(local / "database.txt"), code=1)
    assert "database.txt:2" in result.output and "dbstore_M_rev_2.root" in result.output
    assert "nothing was uploaded" in result.output
    with open_store(filled) as store:
        assert not store.list_payloads("M")


def test_download_o_takes_a_metadata_file_path_like_basf2(invoke, tmp_path, filled):
    """``b2conditionsdb download -o conditions/metadata.sqlite`` (framework/scripts/
    conditions_db/cli_download.py): the payload files go beside the metadata file."""
    out = tmp_path / "snap" / "mytags.sqlite"
    result = invoke("--db", str(filled), "download", "gt", "-o", str(out))
    assert str(out) in result.output
    assert out.is_file() and not (out.parent / "metadata.sqlite").exists()
    from conditions.snapshot import SnapshotSource

    with SnapshotSource(out) as snap:
        found = snap.resolve("gt", "P", 0, 3, allow_open=True)
        local = snap.local_path(found.payload)
        assert local == out.parent / found.payload.checksum[:2] / "P_r1.root" and local.read_bytes() == b"p one"
    # a directory still means DIR/metadata.sqlite; an existing non-snapshot file is not overwritten
    invoke("--db", str(filled), "download", "gt", "-o", str(tmp_path / "dir"))
    assert (tmp_path / "dir" / "metadata.sqlite").is_file()
    result = invoke("--db", str(filled), "download", "gt", "-o", str(filled), code=2)
    assert "refusing to overwrite" in result.output
    with open_store(filled) as store:
        assert store.get_tag("gt").name == "gt"
