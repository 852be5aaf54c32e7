"""The SQL store on both backends: tags, payloads, IoVs, state rules, audit, tokens, and
bad input (each a typed error, with nothing half-written)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import pytest

from conditions import (
    ConditionsError,
    FrozenTagError,
    IntervalOfValidity as IoV,
    InvalidIoVError,
    InvalidNameError,
    InvalidValueError,
    NoPayloadFoundError,
    TagExistsError,
    TagStateError,
    UnknownIoVError,
    UnknownPayloadError,
    UnknownTagError,
    UnusableTagError,
)
from conditions.exceptions import PayloadTooLargeError, UnknownTokenError
from conditions.payload import hash_file
from conditions.store import open_store
from conditions.tags import GlobalTagState as S


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def table_counts(store) -> dict[str, int]:
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("global_tags", "payloads", "iovs", "audit_log", "api_tokens")}


# -- tags --------------------------------------------------------------------------------------

def test_create_list_show_tags(store):
    info = store.create_tag("main", "the main tag", user="alice")
    assert info.state is S.OPEN and info.description == "the main tag"
    assert info.created_by == "alice" and info.created.tzinfo is not None
    store.create_tag("data_proc1")
    store.create_tag("data_proc2")
    store.set_tag_state("data_proc2", "TESTING")
    assert [t.name for t in store.list_tags()] == ["data_proc1", "data_proc2", "main"]
    assert [t.name for t in store.list_tags(pattern="data_*")] == ["data_proc1", "data_proc2"]
    assert [t.name for t in store.list_tags(state="testing")] == ["data_proc2"]
    assert store.get_tag("main").description == "the main tag"
    assert store.tag_state("data_proc2") is S.TESTING
    store.modify_tag("main", description="changed")
    assert store.get_tag("main").description == "changed"


def test_duplicate_and_invalid_tag_names(store):
    store.create_tag("main")
    with pytest.raises(TagExistsError):
        store.create_tag("main")
    for bad in ["", "has space", "../x", "a/b", "x" * 201]:
        with pytest.raises(InvalidNameError):
            store.create_tag(bad)
    assert [t.name for t in store.list_tags()] == ["main"]


def test_unknown_tag_everywhere(store):
    for call in (
        lambda: store.get_tag("nope"),
        lambda: store.tag_state("nope"),
        lambda: store.set_tag_state("nope", "TESTING"),
        lambda: store.modify_tag("nope", description="x"),
        lambda: store.iovs("nope"),
        lambda: store.clone_tag("nope", "other"),
        lambda: store.diff("nope", "nope"),
        lambda: store.resolve("nope", "X", 0, 0),
    ):
        with pytest.raises(UnknownTagError):
            call()
    assert store.list_tags() == []


def test_state_machine_in_store(store):
    store.create_tag("gt")
    store.set_tag_state("gt", "TESTING")
    store.set_tag_state("gt", S.OPEN)
    store.set_tag_state("gt", "TESTING")
    store.set_tag_state("gt", "VALIDATED")
    with pytest.raises(TagStateError):
        store.set_tag_state("gt", "RUNNING")
    store.set_tag_state("gt", "PUBLISHED")
    for bad in ("OPEN", "TESTING", "VALIDATED", "RUNNING", "PUBLISHED"):
        with pytest.raises(TagStateError):
            store.set_tag_state("gt", bad)
    store.set_tag_state("gt", "INVALID")
    for bad in S:
        with pytest.raises(TagStateError):
            store.set_tag_state("gt", bad)
    with pytest.raises(TagStateError, match="unknown global tag state"):
        store.set_tag_state("gt", "FROZEN")
    assert store.get_tag("gt").state is S.INVALID
    actions = [(e.action, e.details.get("to")) for e in reversed(store.audit(tag="gt"))]
    assert actions == [("tag.create", None), ("tag.state", "TESTING"), ("tag.state", "OPEN"),
                       ("tag.state", "TESTING"), ("tag.state", "VALIDATED"), ("tag.state", "PUBLISHED"),
                       ("tag.state", "INVALID")]


# -- payloads -------------------------------------------------------------------------------------

def test_payload_revisions_hashes_and_dedup(store, tmp_path):
    a = write(tmp_path / "a.root", b"first bytes")
    b = write(tmp_path / "b.root", b"second bytes")
    p1 = store.add_payload("BeamSpot", a, metadata={"comment": "first"}, user="bob")
    assert (p1.name, p1.revision) == ("BeamSpot", 1)
    hashes = hash_file(a)
    assert (p1.checksum, p1.sha256, p1.size) == (hashes.md5, hashes.sha256, hashes.size)
    assert p1.metadata == {"comment": "first", "filename": "a.root"}
    assert p1.creator == "bob" and p1.created.tzinfo is not None
    assert p1.url == f"{hashes.md5[:2]}/BeamSpot_r1.root"
    # the same bytes again, even from another file name, are the same payload
    again = store.add_payload("BeamSpot", write(tmp_path / "copy.bin", b"first bytes"))
    assert again.revision == 1 and again.payload_id == p1.payload_id
    p2 = store.add_payload("BeamSpot", io.BytesIO(b"second bytes"))
    assert p2.revision == 2 and p2.url.endswith("/BeamSpot_r2.bin")
    # the same bytes under another name are another payload (revision counted per name)
    other = store.add_payload("Other", b)
    assert other.revision == 1 and other.sha256 == p2.sha256
    assert [(p.name, p.revision) for p in store.list_payloads()] == [
        ("BeamSpot", 1), ("BeamSpot", 2), ("Other", 1)]
    assert store.get_payload("BeamSpot").revision == 2
    assert store.get_payload("BeamSpot", 1) == p1
    assert store.payload_by_url(p1.url) == p1
    # the bytes are where local_path says, and fetch_payload copies them
    assert store.local_path(p1).read_bytes() == b"first bytes"
    store.fetch_payload(p2, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"second bytes"
    assert store.verified_path(p1) == store.local_path(p1)


def test_unknown_payload(store):
    with pytest.raises(UnknownPayloadError):
        store.get_payload("Nothing")
    store.add_payload("Some", b"x")
    with pytest.raises(UnknownPayloadError):
        store.get_payload("Some", 2)
    store.create_tag("gt")
    with pytest.raises(UnknownPayloadError):
        store.add_iov("gt", "Some", 7, IoV.always())
    assert store.iovs("gt") == []


def test_payload_name_cannot_escape_the_payload_directory(store, tmp_path):
    before = sorted(str(p) for p in tmp_path.parent.rglob("*"))
    for bad in ("../../etc/passwd", "/etc/passwd", "a/../../b", "..", ".hidden", "x\x00y"):
        with pytest.raises(InvalidNameError):
            store.add_payload(bad, b"evil")
    assert store.list_payloads() == []
    # nothing was written anywhere (no staged temp files either)
    assert sorted(str(p) for p in tmp_path.parent.rglob("*")) == before
    assert not (Path("/etc/passwd").read_bytes() == b"evil")


def test_blob_paths_are_content_addressed_inside_the_directory(store):
    p = store.add_payload("Name_with-chars+1", b"content")
    path = store.local_path(p)
    root = store.payload_dir.resolve()
    assert path.resolve().is_relative_to(root)
    assert path.name == p.sha256
    with pytest.raises(ValueError):
        store.blobs.path_for("../../etc/passwd")


def test_metadata_must_be_json(store):
    with pytest.raises(InvalidValueError):
        store.add_payload("P", b"x", metadata={"obj": object()})
    with pytest.raises(InvalidValueError):
        store.add_payload("P", b"x", metadata={"nan": float("nan")})
    assert store.list_payloads() == []


def test_payload_size_limit(store_url):
    store = store_url.open(max_payload_size=10)
    try:
        with pytest.raises(PayloadTooLargeError):
            store.add_payload("Big", b"x" * 11)
        assert store.list_payloads() == []
        assert store.add_payload("Small", b"x" * 10).size == 10
    finally:
        store.close()


# -- IoVs and the state rules ----------------------------------------------------------------------

def test_iovs_listing_and_filters(store):
    store.create_tag("gt")
    store.add_payload("A", b"a1")
    store.add_payload("A", b"a2")
    store.add_payload("B", b"b1")
    r1 = store.add_iov("gt", "A", 1, IoV(1, 0, 1, -1))
    r2 = store.add_iov("gt", "A", 2, IoV(2, 0, 3, 10))
    r3 = store.add_iov("gt", "B", 1, IoV(0, 0, -1, -1))
    assert [r.iov_id for r in store.iovs("gt")] == [r1.iov_id, r2.iov_id, r3.iov_id]
    assert [r.iov_id for r in store.iovs("gt", name="A")] == [r1.iov_id, r2.iov_id]
    assert [r.iov_id for r in store.iovs("gt", exp=1, run=5)] == [r1.iov_id, r3.iov_id]
    assert [r.iov_id for r in store.iovs("gt", exp=3)] == [r2.iov_id, r3.iov_id]
    assert [r.iov_id for r in store.iovs("gt", exp=3, run=11)] == [r3.iov_id]
    assert store.iovs("gt", name="A", exp=4) == []
    with pytest.raises(InvalidValueError):
        store.iovs("gt", run=3)
    # adding exactly the same IoV again is a retry: no second row
    assert store.add_iov("gt", "A", 1, IoV(1, 0, 1, -1)).iov_id == r1.iov_id
    assert len(store.iovs("gt")) == 3


def test_modify_and_delete_iov_in_open_tag(store):
    store.create_tag("gt")
    store.add_payload("A", b"a")
    rec = store.add_iov("gt", "A", 1, IoV(1, 0, 1, -1))
    changed = store.modify_iov(rec.iov_id, IoV(1, 0, 2, -1))
    assert changed.iov == IoV(1, 0, 2, -1)
    assert store.resolve("gt", "A", 2, 7, allow_open=True).iov_id == rec.iov_id
    deleted = store.delete_iov(rec.iov_id)
    assert deleted.iov == IoV(1, 0, 2, -1)
    assert store.iovs("gt") == []
    with pytest.raises(UnknownIoVError):
        store.delete_iov(rec.iov_id)
    with pytest.raises(UnknownIoVError):
        store.modify_iov(99999, IoV.always())
    actions = [e.action for e in reversed(store.audit(tag="gt"))]
    assert actions == ["tag.create", "iov.add", "iov.modify", "iov.delete"]


@pytest.mark.parametrize("state_path", [["TESTING"], ["TESTING", "VALIDATED"], ["TESTING", "VALIDATED", "PUBLISHED"],
                                        ["RUNNING", "INVALID"]])
def test_frozen_tags_refuse_every_iov_change(store, state_path):
    store.create_tag("gt")
    store.add_payload("A", b"a")
    rec = store.add_iov("gt", "A", 1, IoV(1, 0, 1, -1))
    for state in state_path:
        store.set_tag_state("gt", state)
    before = store.iovs("gt")
    serial_audit = len(store.audit())
    with pytest.raises(FrozenTagError):
        store.add_iov("gt", "A", 1, IoV(5, 0, 5, -1))
    with pytest.raises(FrozenTagError):
        store.modify_iov(rec.iov_id, IoV(1, 0, 2, -1))
    with pytest.raises(FrozenTagError):
        store.delete_iov(rec.iov_id)
    with pytest.raises(FrozenTagError):
        store.upload("gt", "A", b"new bytes", IoV(9, 0, 9, -1))
    assert store.iovs("gt") == before
    assert len(store.audit()) == serial_audit
    # the refused upload did not create a payload revision either
    assert [p.revision for p in store.list_payloads("A")] == [1]


def test_running_tag_accepts_only_appends_after_last_covered_run(store):
    store.create_tag("run")
    store.add_payload("A", b"a1")
    store.add_payload("A", b"a2")
    store.add_payload("B", b"b1")
    store.add_iov("run", "A", 1, IoV(1, 0, 1, 100))
    rec = store.add_iov("run", "A", 1, IoV(1, 101, 1, 200))
    store.set_tag_state("run", "RUNNING")
    for past in (IoV(1, 200, 1, 300), IoV(1, 0, 1, 5), IoV(0, 0, -1, -1), IoV(1, 150, 2, 0)):
        with pytest.raises(FrozenTagError, match="RUNNING"):
            store.add_iov("run", "A", 2, past)
    with pytest.raises(FrozenTagError):
        store.modify_iov(rec.iov_id, IoV(1, 101, 1, 250))
    with pytest.raises(FrozenTagError):
        store.delete_iov(rec.iov_id)
    store.add_iov("run", "A", 2, IoV(1, 201, 1, -1))
    # after "every run of exp 1" the next allowed start is (2, 0)
    with pytest.raises(FrozenTagError):
        store.add_iov("run", "A", 2, IoV(1, 5000, 1, 5000))
    store.add_iov("run", "A", 1, IoV(2, 0, -1, -1))
    # open-ended: nothing can come after it
    with pytest.raises(FrozenTagError):
        store.add_iov("run", "A", 2, IoV(100, 0, 100, -1))
    # another payload name has its own history
    store.add_iov("run", "B", 1, IoV(0, 0, 0, 10))
    assert store.resolve("run", "A", 1, 300).payload.revision == 2
    assert store.resolve("run", "A", 7, 3).payload.revision == 1


def test_bad_iovs_in_store(store):
    store.create_tag("gt")
    store.add_payload("A", b"a")
    with pytest.raises(InvalidIoVError):
        store.add_iov("gt", "A", 1, (0, 0, -1, -1))
    with pytest.raises(InvalidIoVError):
        store.add_iov("gt", "A", 1, IoV(2, 0, 1, 0))
    assert store.iovs("gt") == []


def test_upload_is_one_transaction(store, tmp_path):
    store.create_tag("gt")
    rec = store.upload("gt", "Calib", write(tmp_path / "c.txt", b"calib"), IoV(0, 0, -1, -1),
                       metadata={"k": "v"})
    assert rec.payload.revision == 1 and rec.payload.metadata == {"k": "v", "filename": "c.txt"}
    with pytest.raises(UnknownTagError):
        store.upload("missing", "Calib", b"other", IoV.always())
    with pytest.raises(InvalidNameError):
        store.upload("gt", "../x", b"other", IoV.always())
    assert [p.revision for p in store.list_payloads()] == [1]


def test_failed_write_leaves_nothing_half_written(store, monkeypatch):
    """A database failure in the middle of an add leaves no payload row, no audit entry
    and no blob behind."""
    store.create_tag("gt")
    counts = table_counts(store)
    real_audit = store._audit

    def failing_audit(session, who, action, tag, details):
        real_audit(session, who, action, tag, details)
        if action == "payload.add":
            raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(store, "_audit", failing_audit)
    with pytest.raises(RuntimeError, match="simulated"):
        store.add_payload("P", b"doomed bytes")
    assert table_counts(store) == counts
    assert [p for p in store.payload_dir.rglob("*") if p.is_file() and "locks" not in p.parts] == []
    with pytest.raises(RuntimeError):
        store.upload("gt", "P", b"doomed bytes", IoV.always())
    assert table_counts(store) == counts
    monkeypatch.undo()
    assert store.add_payload("P", b"doomed bytes").revision == 1


def test_clone_and_diff(store):
    store.create_tag("a")
    for data in (b"1", b"2", b"3"):
        store.add_payload("X", data)
    store.add_iov("a", "X", 1, IoV(0, 0, 0, -1))
    store.add_iov("a", "X", 2, IoV(1, 0, 1, -1))
    store.set_tag_state("a", "TESTING")
    clone = store.clone_tag("a", "b", description="copy")
    assert clone.state is S.OPEN and clone.description == "copy"
    assert store.diff("a", "b").identical
    with pytest.raises(TagExistsError):
        store.clone_tag("a", "b")
    with pytest.raises(InvalidNameError):
        store.clone_tag("a", "no good")
    store.add_iov("b", "X", 3, IoV(2, 0, 2, -1))
    rec = [r for r in store.iovs("b") if r.payload.revision == 1][0]
    store.delete_iov(rec.iov_id)
    d = store.diff("a", "b")
    assert [(r.payload.revision, str(r.iov)) for r in d.only_a] == [(1, "0,0,0,-1")]
    assert [(r.payload.revision, str(r.iov)) for r in d.only_b] == [(3, "2,0,2,-1")]
    assert store.diff("a", "b", exp=1).identical
    assert [r.payload.revision for r in store.diff("a", "b", exp=2, run=5).only_b] == [3]
    # the source is untouched
    assert len(store.iovs("a")) == 2 and store.get_tag("a").state is S.TESTING
    assert store.audit(tag="b")[-1].action == "tag.clone"


# -- audit and tokens ---------------------------------------------------------------------------

def test_audit_default_user_and_limit(store):
    store.create_tag("gt")
    store.add_payload("P", b"p")
    entries = store.audit()
    assert [e.action for e in entries] == ["payload.add", "tag.create"]
    import getpass
    assert entries[0].who == getpass.getuser()
    assert len(store.audit(limit=1)) == 1


def test_tokens_are_stored_hashed(store):
    info, secret = store.create_token("alice", ["iov:data_*"], user="admin")
    assert info.scopes == ("iov:data_*",) and not info.revoked
    assert store.authenticate(secret) == info
    assert store.authenticate(secret + "x") is None
    assert store.authenticate("") is None
    from sqlalchemy import text
    with store.engine.connect() as conn:
        stored = conn.execute(text("SELECT secret_hash FROM api_tokens")).scalars().all()
    assert secret not in stored and len(stored[0]) == 64
    assert all(secret not in json.dumps(e.details) for e in store.audit())
    admin, admin_secret = store.create_token("root", ["admin"])
    assert [t.name for t in store.list_tokens()] == ["alice", "root"]
    assert store.revoke_token(info.token_id).revoked
    assert store.authenticate(secret) is None
    assert store.authenticate(admin_secret).name == "root"
    with pytest.raises(UnknownTokenError):
        store.revoke_token(12345)
    for bad in ([], ["superuser"], ["iov:"], ["iov:a b"]):
        with pytest.raises(InvalidValueError):
            store.create_token("x", bad)


# -- opening ------------------------------------------------------------------------------------

def test_reopen_sees_everything(store_url):
    first = store_url.open()
    first.create_tag("gt")
    p = first.add_payload("P", b"bytes")
    first.close()
    second = store_url.open()
    try:
        assert second.get_tag("gt").name == "gt"
        assert second.local_path(p).read_bytes() == b"bytes"
    finally:
        second.close()


def test_default_payload_dir_is_derived_from_the_database(tmp_path):
    from conditions.store import default_payload_dir

    db = tmp_path / "x.db"
    s = open_store(db)
    try:
        assert s.payload_dir == tmp_path / "x.db.payloads"
        p = s.add_payload("P", b"bytes")
    finally:
        s.close()
    # the same store through a sqlite:/// URL finds the same payloads
    s2 = open_store(f"sqlite:///{db}")
    try:
        assert s2.local_path(p).read_bytes() == b"bytes"
    finally:
        s2.close()
    pg = default_payload_dir("postgresql://u:secret@db.example:6543/conds")
    assert pg.name == "db.example_6543_conds" and "secret" not in str(pg)


def test_random_bytes_are_not_a_store(tmp_path):
    from conditions import NotAStoreError

    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    before = junk.read_bytes()
    with pytest.raises(NotAStoreError, match="not a conditions store"):
        open_store(junk)
    # an SQLite header followed by garbage
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    with pytest.raises(NotAStoreError):
        open_store(broken)
    assert junk.read_bytes() == before
    with pytest.raises(NotAStoreError):
        open_store(tmp_path)  # a directory
    with pytest.raises(NotAStoreError):
        open_store(tmp_path / "missing.db", create=False)
    with pytest.raises(NotAStoreError):
        open_store("mysql://somewhere/db")
    with pytest.raises(NotAStoreError):
        open_store("sqlite://")


def test_other_sqlite_database_is_not_a_store(tmp_path):
    from conditions import NotAStoreError

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(NotAStoreError, match="people"):
        open_store(other)
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("people",)]


def test_basf2_snapshot_opened_for_writing_is_read_only(tmp_path):
    from conditions import ReadOnlyStoreError

    snap = tmp_path / "metadata.sqlite"
    with sqlite3.connect(snap) as conn:
        conn.execute(f"PRAGMA application_id = {0xb2cdb}")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("CREATE TABLE baseUrls (baseUrlId INTEGER PRIMARY KEY, baseUrl TEXT)")
    before = snap.read_bytes()
    with pytest.raises(ReadOnlyStoreError, match="snapshot"):
        open_store(snap)
    assert snap.read_bytes() == before  # not even switched to WAL
    assert not Path(str(snap) + "-wal").exists()


def test_postgres_database_with_foreign_tables_is_not_a_store(postgres_database):
    import psycopg

    from conditions import NotAStoreError

    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(NotAStoreError, match="people"):
        open_store(postgres_database, "/tmp/unused-payloads-dir-never-created")


def test_unreachable_postgres_is_a_clear_error(tmp_path):
    from conditions import NotAStoreError

    with pytest.raises(NotAStoreError, match="cannot open"):
        open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", tmp_path / "p")


def test_migrations_create_exactly_the_orm_schema(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from conditions.store.tables import Base

    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diffs == []


def test_head_constant_matches_the_migration_scripts():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from conditions.store import migrations

    config = Config()
    config.set_main_option("script_location", migrations.SCRIPT_LOCATION)
    assert ScriptDirectory.from_config(config).get_current_head() == migrations.HEAD


def test_sqlite_pragmas(sqlite_store):
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert conn.exec_driver_sql("PRAGMA application_id").scalar() == 0x434F4E44


def test_all_errors_are_conditions_errors():
    from conditions import exceptions

    for name in dir(exceptions):
        obj = getattr(exceptions, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == exceptions.__name__:
            assert issubclass(obj, ConditionsError) and obj.code


def test_add_iovs_batch_is_all_or_nothing(store):
    store.create_tag("gt")
    for data in (b"1", b"2"):
        store.add_payload("X", data)
    records = store.add_iovs("gt", [("X", 1, IoV(0, 0, 0, -1)), ("X", 2, IoV(1, 0, 1, -1)),
                                    ("X", 1, IoV(0, 0, 0, -1))])
    assert [r.payload.revision for r in records] == [1, 2, 1]
    assert records[0].iov_id == records[2].iov_id and records[0].iov_id != records[1].iov_id
    assert len(store.iovs("gt")) == 2
    assert [r.iov_id for r in store.add_iovs("gt", [("X", 2, IoV(1, 0, 1, -1))])] == [records[1].iov_id]
    serial_entries = len(store.audit())
    with pytest.raises(UnknownPayloadError):
        store.add_iovs("gt", [("X", 1, IoV(5, 0, 5, -1)), ("X", 9, IoV(6, 0, 6, -1))])
    assert len(store.iovs("gt")) == 2 and len(store.audit()) == serial_entries
    store.set_tag_state("gt", "RUNNING")
    with pytest.raises(FrozenTagError):
        store.add_iovs("gt", [("X", 1, IoV(2, 0, 2, -1)), ("X", 2, IoV(2, 5, 2, 10))])
    assert len(store.iovs("gt")) == 2
    store.add_iovs("gt", [("X", 1, IoV(2, 0, 2, 4)), ("X", 2, IoV(2, 5, 2, 10))])
    assert store.resolve("gt", "X", 2, 7).payload.revision == 2
    store.set_tag_state("gt", "INVALID")
    with pytest.raises(FrozenTagError):
        store.add_iovs("gt", [("X", 1, IoV(9, 0, 9, -1))])


def test_blobs_are_read_only_and_stale_temp_files_are_cleaned(store_url):
    import stat
    import time

    store = store_url.open()
    try:
        p = store.add_payload("P", b"immutable")
        mode = store.local_path(p).stat().st_mode
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        tmp = store.payload_dir / "tmp"
        old, young = tmp / "upload-old.tmp", tmp / "upload-young.tmp"
        old.write_bytes(b"left by a killed writer")
        young.write_bytes(b"a live upload")
        past = time.time() - 2 * 24 * 3600
        os.utime(old, (past, past))
    finally:
        store.close()
    store_url.open().close()
    assert not old.exists() and young.exists()


def test_damaged_blob_is_detected_and_replaced_by_reupload(sqlite_store):
    from conditions import ChecksumMismatchError

    p = sqlite_store.add_payload("P", b"good bytes")
    path = sqlite_store.local_path(p)
    path.chmod(0o644)
    path.write_bytes(b"bad bytes!")
    with pytest.raises(ChecksumMismatchError):
        sqlite_store.verified_path(p)
    again = sqlite_store.add_payload("P", b"good bytes")
    assert again.revision == 1
    assert sqlite_store.verified_path(p).read_bytes() == b"good bytes"


def test_writer_blocked_by_another_gets_concurrent_modification_error(store_url):
    """A writer that cannot get the tag lock in time fails with a typed error and writes
    nothing; once the other writer is gone the same call succeeds."""
    from conditions import ConcurrentModificationError

    store = store_url.open(lock_timeout=0.5)
    store.create_tag("gt")
    store.add_payload("P", b"p")
    try:
        if store_url.backend == "sqlite":
            import sqlite3 as driver

            holder = driver.connect(store_url.url.removeprefix("sqlite:///"), isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            holder = psycopg.connect(store_url.url)
            holder.execute("SELECT id FROM global_tags WHERE name = 'gt' FOR UPDATE")
        try:
            with pytest.raises(ConcurrentModificationError, match="retry"):
                store.add_iov("gt", "P", 1, IoV.always())
        finally:
            holder.rollback()
            holder.close()
        assert store.iovs("gt") == []
        assert store.add_iov("gt", "P", 1, IoV.always()).payload.revision == 1
    finally:
        store.close()


def test_postgresql_urls_use_psycopg3():
    from conditions.store import normalize_url

    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("relative/file.db").database.endswith("relative/file.db")
    assert normalize_url("sqlite:///x.db").get_backend_name() == "sqlite"
