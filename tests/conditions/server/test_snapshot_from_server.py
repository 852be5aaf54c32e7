"""A snapshot downloaded from a server, as basf2 finds its files and URLs.

Mirrors basf2's framework/database/src/PayloadProvider.cc (local files only as
``{md5[:2]}/{name}_r{revision}.root`` or ``dbstore_{name}_rev_{revision}.root``, accepted
when their MD5 matches; otherwise ``joinWithSlash(baseUrl, payloadUrl)`` is downloaded)
and LocalMetadataProvider.cc (``baseUrl``/``payloadUrl`` from the ``full_payloads`` view).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3

import pytest
import requests

from conditions.cache import PayloadCache
from conditions.client import ConditionsClient
from conditions.exceptions import UnknownPayloadError
from conditions.iov import IntervalOfValidity as IoV
from conditions.snapshot import SnapshotSource, export_snapshot, join_with_slash
from conditions.store import open_store

from ..cli_helpers import cli_env, run_cli


def test_snapshot_keeps_the_servers_urls_and_refetches_damaged_files(live_server, tmp_path, caplog):
    server, _location, secret = live_server
    admin = ConditionsClient(server.url, token=secret, timeout=(2, 10))
    tag = "snap_refetch"
    admin.create_tag(tag)
    blobs = {"SnapCheckpoint": b"safetensors-looking weights" * 100, "SnapBeam": b"beam constants"}
    for name, data in blobs.items():
        p = admin.add_payload(name, data, filename=f"{name}.safetensors" if "Checkpoint" in name else "b.root")
        admin.add_iov(tag, p.name, p.revision, IoV(0, 0, -1, -1))
    admin.set_tag_state(tag, "TESTING")

    out = tmp_path / "conditions"
    run_cli("--db", server.url, "download", tag, "-o", str(out / "metadata.sqlite"), env=cli_env(tmp_path))
    db = sqlite3.connect(out / "metadata.sqlite")
    rows = db.execute("SELECT payloadName, revision, checksum, payloadUrl, baseUrl FROM full_payloads").fetchall()
    db.close()
    assert {r[0] for r in rows} == set(blobs)
    for name, revision, checksum, url, base in rows:
        assert base == server.url + "/files/"  # kept from the source, not empty
        assert url == admin.get_payload(name, revision).url  # the server's own payloadUrl
        remote = requests.get(join_with_slash(base, url), timeout=10)  # what basf2 downloads
        assert hashlib.md5(remote.content).hexdigest() == checksum
        local = out / checksum[:2] / f"{name}_r{revision}.root"  # what basf2 looks for locally
        assert local.read_bytes() == blobs[name]

    # one file gone, one damaged: both are fetched again from baseUrl + payloadUrl, verified
    by_name = {name: (revision, checksum) for name, revision, checksum, *_ in rows}
    gone = out / by_name["SnapBeam"][1][:2] / f"SnapBeam_r{by_name['SnapBeam'][0]}.root"
    damaged = out / by_name["SnapCheckpoint"][1][:2] / f"SnapCheckpoint_r{by_name['SnapCheckpoint'][0]}.root"
    gone.unlink()
    damaged.write_bytes(b"truncated")
    verify = run_cli("verify", str(out), env=cli_env(tmp_path), check=1)
    assert "missing" in verify.stdout and "corrupt" in verify.stdout
    cache = PayloadCache(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="conditions.snapshot"), SnapshotSource(out) as snap:
        for name, data in blobs.items():
            found = snap.resolve(tag, name, 3, 7)
            assert found.payload.base_url == server.url + "/files/"
            assert cache.get(found.payload, snap).read_bytes() == data
    assert "downloading it again from " + server.url in caplog.text
    assert "does not match its MD5" in caplog.text and "missing from" in caplog.text


def test_snapshot_without_base_url_says_why_a_missing_file_cannot_be_fetched(tmp_path):
    with open_store(tmp_path / "c.db") as store:
        store.create_tag("t")
        store.upload("t", "Local", b"local bytes", IoV(0, 0, -1, -1))
        store.set_tag_state("t", "TESTING")
        export_snapshot(store, "t", tmp_path / "snap")
    with SnapshotSource(tmp_path / "snap") as snap:
        found = snap.resolve("t", "Local", 0, 0)
        assert found.payload.base_url is None
        snap.local_path(found.payload).unlink()
        with pytest.raises(UnknownPayloadError, match="records no base URL"):
            PayloadCache(tmp_path / "cache").get(found.payload, snap)
