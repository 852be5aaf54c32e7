"""Symbolic links planted in the payload cache or in a snapshot being written (issue 11,
item 6): never followed, never chmod-ed or hashed through, never written through."""

from __future__ import annotations

import hashlib
import os
import stat

from click.testing import CliRunner

from conditions.cache import PayloadCache
from conditions.cli import main
from conditions.iov import IntervalOfValidity
from conditions.snapshot import SnapshotSource, export_snapshot, hashed_path
from conditions.store import open_store

SECRET = b"private bytes of another user"


def _private_file(tmp_path):
    target = tmp_path / "elsewhere" / "private"
    target.parent.mkdir()
    target.write_bytes(SECRET)
    os.chmod(target, 0o600)
    return target


def _store_with_payload(tmp_path, data: bytes, *, snapshot: bool = False):
    """Store c.db with payload P (``data``) in tag t, and with ``snapshot`` a snapshot of it."""
    with open_store(tmp_path / "c.db") as store:
        store.create_tag("t")
        info = store.add_payload("P", data)
        store.add_iov("t", "P", info.revision, IntervalOfValidity.always())
        if snapshot:
            store.set_tag_state("t", "RUNNING")
            export_snapshot(store, ["t"], tmp_path / "snap")
    return info


class _NoLocalFile(SnapshotSource):
    """The snapshot, as a source without files on this machine (like a server): the cache
    has to fill its entry."""

    def local_path(self, payload):
        return None

    def fetch_payload(self, payload, destination):
        destination.write_bytes(SnapshotSource.local_path(self, payload).read_bytes())


def test_a_cache_entry_that_is_a_link_is_replaced_not_followed(tmp_path):
    data = b"the real payload bytes"
    info = _store_with_payload(tmp_path, data, snapshot=True)
    target = _private_file(tmp_path)
    cache = PayloadCache(tmp_path / "cache")
    entry = cache.path_for(info)
    entry.parent.mkdir(parents=True)
    entry.symlink_to(target)
    with _NoLocalFile(tmp_path / "snap") as source:
        got = cache.get(info, source)
    assert got == entry and not entry.is_symlink() and entry.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == SECRET


def test_a_linked_cache_directory_is_not_written_through(tmp_path):
    data = b"other payload bytes"
    info = _store_with_payload(tmp_path, data, snapshot=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    cache = PayloadCache(tmp_path / "cache")
    sub = cache.path_for(info).parent
    sub.parent.mkdir(parents=True)
    sub.symlink_to(outside, target_is_directory=True)
    with _NoLocalFile(tmp_path / "snap") as source:
        got = cache.get(info, source)
    assert got.read_bytes() == data and not sub.is_symlink()
    assert list(outside.iterdir()) == []


def test_verify_repair_removes_links_without_touching_or_hashing_their_targets(tmp_path):
    target = _private_file(tmp_path)
    cache = tmp_path / "cache"
    md5 = hashlib.md5(SECRET).hexdigest()
    (cache / md5[:2]).mkdir(parents=True)
    (cache / md5[:2] / md5).symlink_to(target)
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep me")
    (cache / "ab").symlink_to(outside, target_is_directory=True)
    result = CliRunner().invoke(main, ["--cache-dir", str(cache), "verify", "--cache", "--repair"])
    assert result.exit_code == 1 and "symbolic link" in result.output
    assert md5 not in result.output.replace(f"{md5[:2]}/{md5}", "")  # the target's MD5 is never computed
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == SECRET
    assert (outside / "keep").read_bytes() == b"keep me"
    assert not (cache / md5[:2] / md5).exists() and not (cache / "ab").exists()


def test_download_refuses_a_linked_hash_directory(tmp_path):
    data = b"snapshot payload"
    info = _store_with_payload(tmp_path, data)
    out = tmp_path / "snap"
    outside = tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / info.checksum[:2]).symlink_to(outside, target_is_directory=True)
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "c.db"), "download", "t", "-o", str(out)])
    assert result.exit_code == 1 and "symbolic link" in result.output
    assert list(outside.iterdir()) == []
    assert not (out / "metadata.sqlite").exists()


def test_download_replaces_a_linked_payload_file(tmp_path):
    data = b"snapshot payload 2"
    info = _store_with_payload(tmp_path, data)
    out = tmp_path / "snap"
    target = _private_file(tmp_path)
    link = out / hashed_path(info)
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "c.db"), "download", "t", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert not link.is_symlink() and link.read_bytes() == data
    assert target.read_bytes() == SECRET and stat.S_IMODE(target.stat().st_mode) == 0o600
