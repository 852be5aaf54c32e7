"""Snapshots: export from a real store, open, resolve exactly as the store does; resume;
read-only; not-a-snapshot; verification."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from conditions.cache import PayloadCache, forget_verified
from conditions.exceptions import (
    ChecksumMismatchError,
    ConditionsError,
    NoPayloadFoundError,
    NotAStoreError,
    ReadOnlyStoreError,
    UnknownTagError,
    UnusableTagError,
)
from conditions.iov import IntervalOfValidity as IoV
from conditions.snapshot import (
    APPLICATION_ID,
    METADATA_FILE,
    SnapshotSource,
    export_snapshot,
    is_snapshot_file,
    verify_snapshot,
)

# (exp, run) points that probe every IoV edge used below
POINTS = [(e, r) for e in range(0, 6) for r in (0, 1, 5, 9, 10, 11, 99, 100, 101, 5000, 10**6)]


def _outcome(source, tags, name, exp, run, allow_open=False):
    try:
        got = source.resolve(tags, name, exp, run, allow_open=allow_open)
    except (NoPayloadFoundError, UnknownTagError, UnusableTagError) as exc:
        return type(exc).__name__
    return (got.payload.name, got.payload.revision, got.payload.checksum, got.iov.as_tuple(), got.tag)


def _fill(store) -> dict[str, bytes]:
    """Three tags in three states, several revisions, IoVs spanning experiments, single runs,
    open runs and open experiments."""
    blobs = {}

    def upload(name, data, filename):
        blobs[name + str(len(blobs))] = data
        return store.add_payload(name, data, filename=filename)

    calib1 = upload("BeamSpot", b"beamspot v1" * 100, "beamspot.root")
    calib2 = upload("BeamSpot", b"beamspot v2" * 100, "beamspot.root")
    gen1 = upload("PXDBackgroundGenerator_resnet", os.urandom(50_000), "ckpt.safetensors")
    gen2 = upload("PXDBackgroundGenerator_resnet", os.urandom(50_000), "ckpt.safetensors")

    store.create_tag("main")
    store.add_iov("main", "BeamSpot", calib1.revision, IoV(0, 0, -1, -1))
    store.add_iov("main", "BeamSpot", calib2.revision, IoV(1, 10, 3, 100))  # spans experiments
    store.add_iov("main", "PXDBackgroundGenerator_resnet", gen1.revision, IoV(0, 0, 2, -1))  # open run
    store.add_iov("main", "PXDBackgroundGenerator_resnet", gen2.revision, IoV(4, 5, 4, 5))  # one run
    for state in ("TESTING", "VALIDATED", "PUBLISHED"):
        store.set_tag_state("main", state)

    store.create_tag("online")
    store.add_iov("online", "BeamSpot", calib2.revision, IoV(5, 0, -1, -1))  # open experiment
    store.add_iov("online", "PXDBackgroundGenerator_resnet", gen2.revision, IoV(2, 100, 3, -1))
    store.set_tag_state("online", "RUNNING")

    store.create_tag("staging")
    store.add_iov("staging", "BeamSpot", calib1.revision, IoV(3, 0, 3, 9))
    return blobs


TAG_LISTS = [["main"], ["online"], ["online", "main"], ["main", "online"]]


def test_export_then_resolve_equals_the_store(store, tmp_path):
    _fill(store)
    out = tmp_path / "snap"
    seen = []
    report = export_snapshot(store, ["main", "online", "staging"], out,
                             progress=lambda done, total, p: seen.append((done, total)))
    assert report.metadata_file == out / METADATA_FILE and is_snapshot_file(report.metadata_file)
    assert report.payloads == 4 and report.copied == 4 and report.present == 0
    assert seen[-1] == (4, 4)

    forget_verified()
    cache = PayloadCache(tmp_path / "cache")
    with SnapshotSource(out) as snap:
        compared = 0
        for tags in TAG_LISTS:
            for name in ("BeamSpot", "PXDBackgroundGenerator_resnet", "Nothing"):
                for exp, run in POINTS:
                    expected = _outcome(store, tags, name, exp, run)
                    assert _outcome(snap, tags, name, exp, run) == expected, (tags, name, exp, run)
                    compared += 1
        # OPEN tags need the opt-in in both, and then agree too
        for exp, run in POINTS:
            assert _outcome(snap, ["staging"], "BeamSpot", exp, run) == "UnusableTagError"
            assert (_outcome(snap, ["staging", "main"], "BeamSpot", exp, run, allow_open=True)
                    == _outcome(store, ["staging", "main"], "BeamSpot", exp, run, allow_open=True))
        assert compared == len(TAG_LISTS) * 3 * len(POINTS)
        # the bytes from the snapshot are the store's bytes, verified by MD5
        for exp, run in POINTS:
            try:
                got = snap.resolve(["online", "main"], "PXDBackgroundGenerator_resnet", exp, run)
            except NoPayloadFoundError:
                continue
            path = cache.get(got.payload, snap)
            assert path.parent.parent == out  # served in place, from the hashed layout
            # under the name basf2's PayloadProvider looks for, whatever the content
            assert path.relative_to(out).as_posix() == (
                f"{got.payload.checksum[:2]}/PXDBackgroundGenerator_resnet_r{got.payload.revision}.root")
            want = store.resolve(["online", "main"], "PXDBackgroundGenerator_resnet", exp, run).payload
            assert hashlib.sha256(path.read_bytes()).hexdigest() == want.sha256
        assert snap.get_tag("online").state.value == "RUNNING"
        assert {t.name for t in snap.list_tags()} == {"main", "online", "staging"}
        assert len(snap.iovs("main")) == 4 and len(snap.iovs("main", name="BeamSpot", exp=2, run=0)) == 2
        assert snap.diff("main", "main").identical
        assert not snap.diff("main", "online").identical


def test_export_is_resumable_and_repairs_damage(sqlite_store, tmp_path):
    _fill(sqlite_store)
    out = tmp_path / "snap"
    first = export_snapshot(sqlite_store, ["main", "online"], out)
    again = export_snapshot(sqlite_store, ["main", "online"], out)
    assert (again.copied, again.present) == (0, first.copied)
    victim = first.files[0]
    victim.write_bytes(b"damaged")
    leftover = victim.parent / ".tmp-killed-export"
    leftover.write_bytes(b"partial")
    forget_verified()
    healed = export_snapshot(sqlite_store, ["main", "online"], out)
    assert healed.copied == 1
    report = verify_snapshot(out)
    assert report.ok and report.count("ok") == first.payloads


def test_metadata_only_export_and_verify_reports_missing(sqlite_store, tmp_path):
    _fill(sqlite_store)
    out = tmp_path / "meta-only"
    export_snapshot(sqlite_store, "main", out, payloads=False)
    with SnapshotSource(out / METADATA_FILE) as snap:
        got = snap.resolve("main", "BeamSpot", 0, 0)
        assert snap.local_path(got.payload) is None
        with pytest.raises(ConditionsError, match="missing"):
            PayloadCache(tmp_path / "cache").get(got.payload, snap)
    report = verify_snapshot(out)
    assert not report.ok and report.count("missing") == 4


def test_exported_file_has_basf2_layout(sqlite_store, tmp_path):
    _fill(sqlite_store)
    out = tmp_path / "snap"
    export_snapshot(sqlite_store, ["main", "online"], out)
    db = sqlite3.connect(out / METADATA_FILE)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID == 0xB2CDB
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    objects = dict(db.execute("SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
    assert objects == {"baseUrls": "table", "payloadNames": "table", "payloads": "table",
                       "globaltags": "table", "iovs": "table", "iov_index": "index",
                       "full_payloads": "view", "iov_payloads": "view"}
    columns = [r[1] for r in db.execute("PRAGMA table_info(iov_payloads)")]
    assert columns == ["globalTagName", "payloadId", "payloadName", "revision", "checksum", "firstExp",
                       "firstRun", "finalExp", "finalRun", "payloadUrl", "baseUrl"]
    assert dict(db.execute("SELECT globalTagName, globalTagStatus FROM globaltags")) == {
        "main": "PUBLISHED", "online": "RUNNING"}
    # the query basf2's LocalMetadataProvider runs (our transcription) finds the payloads
    rows = db.execute(
        "SELECT payloadName, payloadUrl, checksum, revision FROM iov_payloads WHERE globalTagName = ? "
        "AND ((firstExp = ? AND firstRun <= ?) OR firstExp < ?) AND (finalExp < 0 OR (finalRun < 0 AND "
        "finalExp >= ?) OR finalExp > ? OR (finalExp = ? AND finalRun >= ?))",
        ("main", 4, 5, 4, 4, 4, 4, 5)).fetchall()
    assert {r[0] for r in rows} == {"BeamSpot", "PXDBackgroundGenerator_resnet"}
    for name, url, checksum, revision in rows:
        # basf2's PayloadProvider: {md5[:2]}/{name}_r{revision}.root beside the metadata file,
        # whatever payloadUrl (the location on the server) says
        local = out / checksum[:2] / f"{name}_r{revision}.root"
        assert local.is_file() and url == sqlite_store.get_payload(name, revision).url
        assert hashlib.md5(local.read_bytes()).hexdigest() == checksum
    stored_url = sqlite_store.get_payload("BeamSpot", 1).url
    assert db.execute("SELECT payloadUrl FROM full_payloads WHERE payloadName='BeamSpot' AND revision=1"
                      ).fetchone()[0] == stored_url


def test_snapshot_is_read_only(sqlite_store, tmp_path):
    _fill(sqlite_store)
    export_snapshot(sqlite_store, "main", tmp_path / "snap")
    snap = SnapshotSource(tmp_path / "snap")
    for call in (lambda: snap.create_tag("x"), lambda: snap.set_tag_state("main", "INVALID"),
                 lambda: snap.add_payload("X", b"data"), lambda: snap.add_iov("main", "BeamSpot", 1, IoV(0, 0)),
                 lambda: snap.delete_iov(1), lambda: snap.create_token("me", ["admin"])):
        with pytest.raises(ReadOnlyStoreError):
            call()
    assert snap.audit() == [] and snap.authenticate("secret") is None
    # the file itself is opened read-only: even raw SQL through our connection cannot write
    with pytest.raises(sqlite3.OperationalError):
        snap._db().execute("DELETE FROM iovs")
    snap.close()


def test_unknown_tags_and_empty_tag_list(sqlite_store, tmp_path):
    _fill(sqlite_store)
    export_snapshot(sqlite_store, "main", tmp_path / "snap")
    with SnapshotSource(tmp_path / "snap") as snap:
        with pytest.raises(UnknownTagError, match="nope"):
            snap.resolve(["main", "nope"], "BeamSpot", 0, 0)
        with pytest.raises(UnknownTagError):
            snap.resolve([], "BeamSpot", 0, 0)
        with pytest.raises(UnknownTagError):
            snap.iovs("nope")
    with pytest.raises(UnknownTagError):
        export_snapshot(sqlite_store, ["main", "nope"], tmp_path / "snap2")
    assert not (tmp_path / "snap2" / METADATA_FILE).exists()


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"SQLite format 3\x00" + b"\x00" * 84])
def test_not_a_snapshot(tmp_path, content):
    path = tmp_path / "thing.sqlite"
    path.write_bytes(content)
    with pytest.raises(NotAStoreError):
        SnapshotSource(path)
    with pytest.raises(NotAStoreError):
        SnapshotSource(tmp_path / "missing-dir")


def test_plain_sqlite_store_is_not_a_snapshot(sqlite_store):
    db_file = Path(str(sqlite_store.engine.url.database))
    assert not is_snapshot_file(db_file)
    with pytest.raises(NotAStoreError, match="0xb2cdb"):
        SnapshotSource(db_file)


def test_corrupt_snapshot_payload_is_refused(sqlite_store, tmp_path):
    _fill(sqlite_store)
    report = export_snapshot(sqlite_store, "main", tmp_path / "snap")
    forget_verified()
    with SnapshotSource(tmp_path / "snap") as snap:
        got = snap.resolve("main", "BeamSpot", 0, 0)
        path = snap.local_path(got.payload)
        path.write_bytes(b"x" * 10)
        with pytest.raises(ChecksumMismatchError):
            PayloadCache(tmp_path / "cache").get(got.payload, snap)
    assert report.payloads == 4


def test_append_keeps_the_other_tags(sqlite_store, tmp_path):
    _fill(sqlite_store)
    out = tmp_path / "snap"
    export_snapshot(sqlite_store, "main", out)
    with SnapshotSource(out) as snap:
        main_answer = _outcome(snap, "main", "BeamSpot", 2, 0)
    export_snapshot(sqlite_store, "online", out, append=True)
    with SnapshotSource(out) as snap:
        assert {t.name for t in snap.list_tags()} == {"main", "online"}
        assert _outcome(snap, "main", "BeamSpot", 2, 0) == main_answer
        for exp, run in POINTS:
            assert (_outcome(snap, ["online", "main"], "PXDBackgroundGenerator_resnet", exp, run)
                    == _outcome(sqlite_store, ["online", "main"], "PXDBackgroundGenerator_resnet", exp, run))
    export_snapshot(sqlite_store, "online", out)  # without append: only what was asked for
    with SnapshotSource(out) as snap:
        assert {t.name for t in snap.list_tags()} == {"online"}


def test_payload_and_base_urls_are_kept(sqlite_store, tmp_path):
    _fill(sqlite_store)
    export_snapshot(sqlite_store, "main", tmp_path / "snap", base_url="https://conditions.example/files/")
    db = sqlite3.connect(tmp_path / "snap" / METADATA_FILE)
    rows = db.execute("SELECT payloadName, revision, payloadUrl, baseUrl FROM full_payloads").fetchall()
    db.close()
    for name, revision, url, base in rows:
        assert url == sqlite_store.get_payload(name, revision).url
        assert base == "https://conditions.example/files/"
