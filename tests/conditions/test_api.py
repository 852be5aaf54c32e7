"""open_source / open_chain / get_payload_file: every kind of spec, and the bad ones."""

from __future__ import annotations

import os

import pytest

from conditions.api import get_payload_file, open_chain, open_source
from conditions.cache import PayloadCache
from conditions.exceptions import NotAStoreError, ReadOnlyStoreError
from conditions.iov import IntervalOfValidity as IoV
from conditions.snapshot import SnapshotSource, export_snapshot
from conditions.store import SqlStore
from conditions.testing_payloads import TestingPayloadsSource


@pytest.fixture
def files(tmp_path, sqlite_store):
    sqlite_store.add_payload("BeamSpot", b"beam spot bytes", filename="bs.root")
    sqlite_store.create_tag("prod")
    sqlite_store.add_iov("prod", "BeamSpot", 1, IoV(0, 0, -1, -1))
    sqlite_store.set_tag_state("prod", "RUNNING")
    export_snapshot(sqlite_store, "prod", tmp_path / "snap")
    over = tmp_path / "over"
    over.mkdir()
    (over / "dbstore_BeamSpot_rev_7.root").write_bytes(b"override bytes")
    (over / "database.txt").write_text("dbstore/BeamSpot 7 3,0,3,-1\n")
    return {
        "store": tmp_path / "conditions.db",
        "snapdir": tmp_path / "snap",
        "snapfile": tmp_path / "snap" / "metadata.sqlite",
        "txt": over / "database.txt",
        "txtdir": over,
    }


def test_each_kind_of_spec(files, tmp_path):
    cases = [
        (str(files["store"]), SqlStore),
        (f"sqlite:///{files['store']}", SqlStore),
        (files["snapdir"], SnapshotSource),
        (str(files["snapfile"]), SnapshotSource),
        (f"sqlite:///{files['snapfile']}", SnapshotSource),
        (f"file://{files['snapfile']}", SnapshotSource),
        (files["txt"], TestingPayloadsSource),
        (files["txtdir"], TestingPayloadsSource),
    ]
    for spec, kind in cases:
        source = open_source(spec, payload_dir=tmp_path / "conditions.db.payloads")
        try:
            assert isinstance(source, kind), spec
            exp = 3 if kind is TestingPayloadsSource else 1  # the override only covers exp 3
            got = source.resolve("prod", "BeamSpot", exp, 1)
            assert get_payload_file(source, got, PayloadCache(tmp_path / "cache")).read_bytes() in (
                b"beam spot bytes", b"override bytes")
        finally:
            source.close()


def test_read_only_sources_refuse_writable(files):
    for spec in (files["snapdir"], files["snapfile"], f"sqlite:///{files['snapfile']}", files["txt"]):
        with pytest.raises(ReadOnlyStoreError):
            open_source(spec, writable=True)
    store = open_source(files["store"], writable=True)
    assert isinstance(store, SqlStore)
    store.close()


def test_not_a_store(tmp_path):
    junk = tmp_path / "random.db"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(NotAStoreError):
        open_source(junk)
    with pytest.raises(NotAStoreError, match="no such file"):
        open_source(tmp_path / "missing.db")
    with pytest.raises(NotAStoreError, match="unknown kind"):
        open_source("ftp://example.org/x")
    with pytest.raises(NotAStoreError, match="directory"):
        open_source(tmp_path)
    with pytest.raises(NotAStoreError):
        open_source("sqlite://")
    # an SQLite file that is some other application's database
    import sqlite3
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(NotAStoreError):
        open_source(other)


def test_empty_files(tmp_path):
    empty_txt = tmp_path / "database.txt"
    empty_txt.write_text("")
    source = open_source(empty_txt)
    assert isinstance(source, TestingPayloadsSource) and source.entries == []
    empty_db = tmp_path / "empty.db"
    empty_db.write_bytes(b"")
    with pytest.raises(NotAStoreError, match="empty"):
        open_source(empty_db)
    assert empty_db.read_bytes() == b""  # reading never turns a file into a database
    store = open_source(empty_db, writable=True)
    assert isinstance(store, SqlStore)
    store.close()


def test_writable_creates_a_new_store(tmp_path):
    store = open_source(tmp_path / "new.db", writable=True)
    try:
        assert isinstance(store, SqlStore)
        store.create_tag("fresh")
    finally:
        store.close()
    assert isinstance(open_source(tmp_path / "new.db"), SqlStore)


def test_open_chain_and_get_payload_file(files, tmp_path):
    chain = open_chain([files["txt"], files["snapdir"], files["store"]])
    cache = PayloadCache(tmp_path / "cache")
    try:
        got = chain.resolve("prod", "BeamSpot", 3, 1)
        assert got.source.startswith("testing-payloads:")
        assert get_payload_file(chain, got, cache).read_bytes() == b"override bytes"
        got = chain.resolve("prod", "BeamSpot", 4, 1)
        assert got.source.startswith("snapshot:")
        assert get_payload_file(chain, got, cache).read_bytes() == b"beam spot bytes"
    finally:
        chain.close()


def test_open_chain_closes_what_it_opened_on_failure(files, tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(SnapshotSource, "close", lambda self: closed.append(self.path))
    with pytest.raises(NotAStoreError):
        open_chain([files["snapdir"], tmp_path / "missing.db"])
    assert closed == [files["snapfile"]]


def test_http_spec_goes_to_the_rest_client():
    source = open_source("http://127.0.0.1:9/", offline=True)
    try:
        assert "127.0.0.1:9" in source.description
        assert type(source).__name__ == "ConditionsClient"
    finally:
        source.close()


@pytest.mark.postgres
def test_postgresql_url(postgres_database, tmp_path):
    store = open_source(postgres_database, payload_dir=tmp_path / "payloads")
    try:
        assert isinstance(store, SqlStore)
        store.create_tag("pg")
    finally:
        store.close()
