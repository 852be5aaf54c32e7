"""A snapshot written the way basf2's own tools write it must be readable.

The file below is built with hand-written SQL that follows what basf2's
``b2conditionsdb download`` does (framework/scripts/conditions_db/local_metadata.py):
views over NATURAL JOINs, the central server's ids kept, ``payloadUrl`` stored as NULL when
it follows ``dbstore/{name}/dbstore_{name}_rev_{revision}.root``, tag states as the
central server names them, ``INSERT OR REPLACE``, a final VACUUM, and payload files in
``{md5[:2]}/{name}_r{revision}.root`` beside ``metadata.sqlite``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from conditions.cache import PayloadCache
from conditions.exceptions import InvalidNameError, NoPayloadFoundError, UnusableTagError
from conditions.snapshot import SnapshotSource, verify_snapshot
from conditions.tags import GlobalTagState

BASF2_STYLE_SCHEMA = """
CREATE TABLE baseUrls (baseUrlId INTEGER PRIMARY KEY, baseUrl text UNIQUE);
CREATE TABLE payloadNames (payloadNameId INTEGER PRIMARY KEY, payloadName TEXT UNIQUE);
CREATE TABLE payloads (
    payloadId INTEGER PRIMARY KEY, payloadNameId INTEGER NOT NULL, revision INTEGER NOT NULL,
    checksum text NOT NULL, payloadUrl text DEFAULT NULL, baseUrlId INTEGER NOT NULL,
    CONSTRAINT name_rev UNIQUE (payloadNameId, revision),
    FOREIGN KEY (payloadNameId) REFERENCES payloadNames (payloadNameId) ON UPDATE CASCADE ON DELETE RESTRICT
    FOREIGN KEY (baseUrlId) REFERENCES baseUrls (baseUrlId) ON UPDATE CASCADE ON DELETE RESTRICT
);
CREATE VIEW full_payloads AS
    SELECT payloadId, payloadName, revision, checksum,
        ifnull(payloadUrl, 'dbstore/' || payloadName || '/dbstore_' || payloadName || '_rev_' || revision || '.root')
        as payloadUrl, baseUrl
    FROM payloads NATURAL JOIN payloadNames NATURAL JOIN baseUrls;
CREATE TABLE globaltags (globalTagId INTEGER PRIMARY KEY, globalTagName text UNIQUE, globalTagStatus text NOT NULL);
CREATE TABLE iovs (
    globalTagId INTEGER NOT NULL, payloadId INTEGER NOT NULL,
    firstExp INTEGER NOT NULL, firstRun INTEGER NOT NULL, finalExp INTEGER NOT NULL, finalRun INTEGER NOT NULL,
    FOREIGN KEY (globalTagId) REFERENCES globaltags (globalTagId) ON UPDATE CASCADE ON DELETE CASCADE,
    FOREIGN KEY (payloadId) REFERENCES payloads (payloadId) ON UPDATE CASCADE ON DELETE RESTRICT
);
CREATE UNIQUE INDEX iov_index on iovs (globalTagId, firstExp, firstRun, finalExp, finalRun, payloadId);
CREATE VIEW iov_payloads AS
    SELECT globalTagName, payloadId, payloadName, revision, checksum,
        firstExp, firstRun, finalExp, finalRun, payloadUrl, baseUrl
    FROM globaltags NATURAL JOIN iovs NATURAL JOIN full_payloads;
"""

BASE_URL = "http://belle2db.sdcc.bnl.gov/"

# central ids, names, revisions, bytes
PAYLOADS = {
    4711: ("BeamParameters", 3, b"beam parameters r3"),
    4712: ("BeamParameters", 4, b"beam parameters r4"),
    9001: ("PXDBackgroundGenerator_gan", 1, b"legacy torch checkpoint bytes"),
    9002: ("ECLCrystalEnergy", 12, b"ecl crystal energies"),
}
# central tag ids, names, states as the central server spells them
TAGS = [(1203, "data_reprocessing_proc13", "PUBLISHED"), (777, "online", "RUNNING"),
        (555, "broken_tag", "INVALID")]
IOVS = [
    (1203, 4711, 0, 0, -1, -1),
    (1203, 4712, 10, 0, 12, -1),  # r4 overrides r3 in exp 10..12: highest revision wins
    (1203, 9001, 0, 0, -1, -1),
    (777, 9002, 26, 0, 26, 100),
    (555, 4712, 0, 0, -1, -1),
]


def write_basf2_snapshot(directory: Path, *, flat: set[int] = frozenset()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    dbfile = directory / "metadata.sqlite"
    db = sqlite3.connect(dbfile)
    db.executescript(BASF2_STYLE_SCHEMA)
    db.execute(f"PRAGMA application_id = {0xB2CDB}")  # 732379, as basf2 formats it
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO baseUrls (baseUrlId, baseUrl) VALUES (?, ?)", (1, BASE_URL))
    name_ids: dict[str, int] = {}
    for payload_id, (name, revision, data) in PAYLOADS.items():
        if name not in name_ids:
            name_ids[name] = len(name_ids) + 1
            db.execute("INSERT INTO payloadNames (payloadNameId, payloadName) VALUES (?, ?)", (name_ids[name], name))
        checksum = hashlib.md5(data).hexdigest()
        # basf2 keeps a NULL payloadUrl when the central URL follows the default pattern;
        # one payload here has a non-standard URL to exercise both
        url = None if payload_id != 9002 else f"dbstore/{name}/special_{revision}.root"
        db.execute("INSERT OR REPLACE INTO payloads VALUES (?,?,?,?,?,?)",
                   (payload_id, name_ids[name], revision, checksum, url, 1))
        if payload_id in flat:
            target = directory / f"dbstore_{name}_rev_{revision}.root"
        else:
            target = directory / checksum[:2] / f"{name}_r{revision}.root"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
    for tag in TAGS:
        db.execute("INSERT OR REPLACE INTO globaltags VALUES (?,?,?)", tag)
    db.executemany("INSERT INTO iovs VALUES (?,?,?,?,?,?)", IOVS)
    db.commit()
    db.execute("VACUUM")
    db.close()
    return dbfile


def test_basf2_written_snapshot_resolves(tmp_path):
    write_basf2_snapshot(tmp_path / "conditions", flat={9001})
    cache = PayloadCache(tmp_path / "cache")
    with SnapshotSource(tmp_path / "conditions") as snap:
        assert snap.tag_state("data_reprocessing_proc13") is GlobalTagState.PUBLISHED
        assert snap.tag_state("online") is GlobalTagState.RUNNING
        tag = "data_reprocessing_proc13"
        for exp, run, revision in [(0, 0, 3), (9, 99999, 3), (10, 0, 4), (12, 7, 4), (13, 0, 3), (1000, 1, 3)]:
            got = snap.resolve(tag, "BeamParameters", exp, run)
            assert got.payload.revision == revision, (exp, run)
            assert got.payload.payload_id == (4711 if revision == 3 else 4712)
            assert got.payload.url == f"dbstore/BeamParameters/dbstore_BeamParameters_rev_{revision}.root"
            assert got.payload.base_url == BASE_URL
            assert got.source == snap.description and got.tag == tag
            assert cache.get(got.payload, snap).read_bytes() == f"beam parameters r{revision}".encode()
        # payload found in the flat layout too
        got = snap.resolve(tag, "PXDBackgroundGenerator_gan", 5, 5)
        assert cache.get(got.payload, snap).name == "dbstore_PXDBackgroundGenerator_gan_rev_1.root"
        # a non-default payloadUrl is kept as is; the file is still found by name and revision
        got = snap.resolve(["online", tag], "ECLCrystalEnergy", 26, 100)
        assert got.tag == "online" and got.payload.url == "dbstore/ECLCrystalEnergy/special_12.root"
        assert cache.get(got.payload, snap).read_bytes() == b"ecl crystal energies"
        with pytest.raises(NoPayloadFoundError):
            snap.resolve(["online", tag], "ECLCrystalEnergy", 26, 101)
        # INVALID tags are refused even if listed after a tag that would match
        with pytest.raises(UnusableTagError, match="broken_tag"):
            snap.resolve([tag, "broken_tag"], "BeamParameters", 0, 0)
        assert {p.payload_id for p in snap.list_payloads()} == set(PAYLOADS)
        assert snap.get_payload("BeamParameters").revision == 4
    assert verify_snapshot(tmp_path / "conditions").ok


def test_unknown_state_from_the_server_is_not_usable(tmp_path):
    dbfile = write_basf2_snapshot(tmp_path / "c")
    db = sqlite3.connect(dbfile)
    db.execute("UPDATE globaltags SET globalTagStatus = 'NEW' WHERE globalTagName = 'online'")
    db.commit()
    db.close()
    with SnapshotSource(dbfile) as snap:
        with pytest.raises(UnusableTagError, match="NEW"):
            snap.resolve("online", "ECLCrystalEnergy", 26, 0)
        assert "online" not in {t.name for t in snap.list_tags()}


def test_hostile_payload_name_in_a_snapshot_cannot_escape(tmp_path):
    dbfile = write_basf2_snapshot(tmp_path / "snap")
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    secret.write_bytes(b"root:x:0:0")
    db = sqlite3.connect(dbfile)
    db.execute("UPDATE payloadNames SET payloadName = '../../etc/passwd' WHERE payloadName = 'ECLCrystalEnergy'")
    db.commit()
    db.close()
    with SnapshotSource(dbfile) as snap:
        got = snap.resolve("online", "../../etc/passwd", 26, 0)
        with pytest.raises(InvalidNameError):
            snap.local_path(got.payload)
        with pytest.raises(InvalidNameError):
            PayloadCache(tmp_path / "cache").get(got.payload, snap)
        with pytest.raises(InvalidNameError):
            snap.fetch_payload(got.payload, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reexport_of_a_basf2_snapshot_resolves_the_same(tmp_path):
    from conditions.snapshot import export_snapshot

    write_basf2_snapshot(tmp_path / "basf2", flat={9001})
    tags = ["data_reprocessing_proc13", "online"]
    with SnapshotSource(tmp_path / "basf2") as original:
        report = export_snapshot(original, tags, tmp_path / "ours")
        assert report.copied == 4
        with SnapshotSource(tmp_path / "ours") as copy:
            for name in ("BeamParameters", "PXDBackgroundGenerator_gan", "ECLCrystalEnergy"):
                for exp in (0, 10, 12, 13, 26):
                    for run in (0, 100, 101):
                        try:
                            want = original.resolve(tags, name, exp, run)
                        except NoPayloadFoundError:
                            with pytest.raises(NoPayloadFoundError):
                                copy.resolve(tags, name, exp, run)
                            continue
                        got = copy.resolve(tags, name, exp, run)
                        assert (got.payload.payload_id, got.payload.revision, got.payload.checksum, got.iov,
                                got.tag) == (want.payload.payload_id, want.payload.revision,
                                             want.payload.checksum, want.iov, want.tag)
            assert copy.get_tag("online").tag_id == 777  # the central ids survive
    assert verify_snapshot(tmp_path / "ours").ok


def test_exporting_a_hostile_snapshot_writes_nothing_outside(tmp_path):
    from conditions.snapshot import export_snapshot

    dbfile = write_basf2_snapshot(tmp_path / "in" / "snap")
    db = sqlite3.connect(dbfile)
    db.execute("UPDATE payloadNames SET payloadName = '../../../escaped' WHERE payloadName = 'ECLCrystalEnergy'")
    db.commit()
    db.close()
    before = sorted(p for p in tmp_path.rglob("*"))
    with SnapshotSource(dbfile) as snap:
        with pytest.raises(InvalidNameError):
            export_snapshot(snap, "online", tmp_path / "out" / "deep")
    after = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "out"))
    assert after == before
    assert not any((tmp_path / "out").rglob("*.root"))


def test_resolution_index_matches_brute_force_on_random_overlaps(tmp_path):
    """Random overlapping IoVs of many revisions (as a central database can hold them):
    the snapshot's precomputed index must agree with the plain rule at every point."""
    import random

    from conditions.iov import IntervalOfValidity

    rng = random.Random(20261122)
    directory = tmp_path / "random"
    directory.mkdir()
    db = sqlite3.connect(directory / "metadata.sqlite")
    db.executescript(BASF2_STYLE_SCHEMA)
    db.execute(f"PRAGMA application_id = {0xB2CDB}")
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO baseUrls VALUES (1, '')")
    db.execute("INSERT INTO payloadNames VALUES (1, 'Calib')")
    db.execute("INSERT INTO globaltags VALUES (1, 'gt', 'PUBLISHED')")
    iovs = []
    for revision in range(1, 41):
        db.execute("INSERT INTO payloads VALUES (?, 1, ?, ?, NULL, 1)",
                   (100 + revision, revision, hashlib.md5(str(revision).encode()).hexdigest()))
        for _ in range(rng.randint(1, 3)):
            fe, fr = rng.randint(0, 6), rng.randint(0, 50)
            kind = rng.random()
            if kind < 0.15:
                le, lr = -1, -1
            elif kind < 0.4:
                le, lr = rng.randint(fe, 7), -1
            else:
                le = rng.randint(fe, 7)
                lr = rng.randint(fr if le == fe else 0, 60)
            iov = IntervalOfValidity(fe, fr, le, lr)
            if (100 + revision, iov) not in iovs:
                iovs.append((100 + revision, iov))
                db.execute("INSERT INTO iovs VALUES (1, ?, ?, ?, ?, ?)", (100 + revision, *iov.as_tuple()))
    db.commit()
    db.close()

    with SnapshotSource(directory) as snap:
        for exp in range(0, 9):
            for run in list(range(0, 62)) + [10**6]:
                covering = [(pid - 100, pid) for pid, iov in iovs if iov.contains(exp, run)]
                if not covering:
                    with pytest.raises(NoPayloadFoundError):
                        snap.resolve("gt", "Calib", exp, run)
                    continue
                got = snap.resolve("gt", "Calib", exp, run)
                assert got.payload.revision == max(covering)[0], (exp, run)
                assert got.iov.contains(exp, run)


def test_a_snapshot_replaced_on_disk_is_reread(tmp_path):
    dbfile = write_basf2_snapshot(tmp_path / "snap")
    with SnapshotSource(dbfile) as snap:
        assert snap.resolve("online", "ECLCrystalEnergy", 26, 5).payload.revision == 12
        # a new export renames a new file into place: here, 'online' became INVALID
        replacement = write_basf2_snapshot(tmp_path / "next")
        db = sqlite3.connect(replacement)
        db.execute("UPDATE globaltags SET globalTagStatus = 'INVALID' WHERE globalTagName = 'online'")
        db.commit()
        db.close()
        import os
        os.replace(replacement, dbfile)
        with pytest.raises(UnusableTagError):
            snap.resolve("online", "ECLCrystalEnergy", 26, 5)


def test_threads_share_one_snapshot_source(tmp_path):
    import threading

    write_basf2_snapshot(tmp_path / "snap")
    tag = "data_reprocessing_proc13"
    expected = {exp: (4 if 10 <= exp <= 12 else 3) for exp in range(0, 20)}
    errors = []
    with SnapshotSource(tmp_path / "snap") as snap:
        def work(offset):
            try:
                for i in range(300):
                    exp = (i + offset) % 20
                    assert snap.resolve(tag, "BeamParameters", exp, i).payload.revision == expected[exp]
                    assert len(snap.iovs(tag, name="BeamParameters", exp=exp, run=i)) in (1, 2)
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]


def test_reexport_keeps_basf2_urls(tmp_path):
    from conditions.snapshot import export_snapshot

    write_basf2_snapshot(tmp_path / "basf2")
    with SnapshotSource(tmp_path / "basf2") as original:
        export_snapshot(original, ["online", "data_reprocessing_proc13"], tmp_path / "ours")
    db = sqlite3.connect(tmp_path / "ours" / "metadata.sqlite")
    rows = dict(((n, r), (u, b)) for n, r, u, b in db.execute(
        "SELECT payloadName, revision, payloadUrl, baseUrl FROM full_payloads"))
    db.close()
    assert rows[("BeamParameters", 3)] == ("dbstore/BeamParameters/dbstore_BeamParameters_rev_3.root", BASE_URL)
    assert rows[("ECLCrystalEnergy", 12)] == ("dbstore/ECLCrystalEnergy/special_12.root", BASE_URL)
