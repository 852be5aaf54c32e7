"""The payload cache: verification, atomic fills, corruption, offline mode, lock timeout."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from conditions import cache as cache_module
from conditions.cache import PayloadCache, check_file, default_cache_dir, forget_verified
from conditions.exceptions import (
    CacheLockTimeout,
    ChecksumMismatchError,
    ConditionsError,
    OfflineError,
)

from .cache_helpers import FileBlobSource, fetch_count, payload_for

DATA = os.urandom(200_000)


@pytest.fixture(autouse=True)
def _fresh_memo():
    forget_verified()
    yield
    forget_verified()


@pytest.fixture
def source(tmp_path) -> FileBlobSource:
    return FileBlobSource(tmp_path / "blobs", counter=tmp_path / "fetches")


@pytest.fixture
def cache(tmp_path) -> PayloadCache:
    return PayloadCache(tmp_path / "cache", lock_timeout=10)


def _make_writable(path: Path) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def test_cold_get_fetches_once_and_returns_verified_file(cache, source, tmp_path):
    info = source.add(DATA, "BeamParameters", 3)
    path = cache.get(info, source)
    assert path.read_bytes() == DATA
    assert path == cache.directory / info.checksum[:2] / info.checksum
    assert path.is_relative_to(cache.directory)
    assert cache.get(info, source) == path
    assert fetch_count(tmp_path / "fetches") == 1
    assert cache.contains(info)
    # no temp files left behind
    assert [p.name for p in path.parent.iterdir()] == [info.checksum]


def test_identical_bytes_under_two_names_share_one_entry(cache, source, tmp_path):
    a = source.add(DATA, "A", 1)
    b = source.add(DATA, "B", 7)
    assert cache.get(a, source) == cache.get(b, source)
    assert fetch_count(tmp_path / "fetches") == 1


def test_wrong_bytes_are_never_cached(cache, source, tmp_path):
    info = source.add(DATA, "X")
    evil = tmp_path / "evil"
    evil.write_bytes(DATA[:-1] + bytes([DATA[-1] ^ 0xFF]))  # same size, one bit pattern off
    source.serve[info.checksum] = str(evil)
    with pytest.raises(ChecksumMismatchError, match="do not match"):
        cache.get(info, source)
    target = cache.path_for(info)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temp file was deleted too
    # the right bytes later are accepted
    del source.serve[info.checksum]
    assert cache.get(info, source).read_bytes() == DATA


def test_sha256_is_checked_when_known(cache, source, tmp_path):
    info = source.add(DATA, "X")
    lying = type(info)(**{**info.__dict__, "sha256": hashlib.sha256(b"other").hexdigest()})
    with pytest.raises(ChecksumMismatchError, match="SHA-256"):
        cache.get(lying, source)
    assert not cache.path_for(info).exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_cached_file_is_detected_and_replaced(cache, source, tmp_path, damage):
    info = source.add(DATA, "X")
    path = cache.get(info, source)
    _make_writable(path)
    if damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[1000] ^= 0x01
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        with open(path, "r+b") as f:
            f.truncate(len(DATA) // 2)
    else:
        path.write_bytes(b"")
    # the damaged file is not accepted even by a process that verified it before
    assert check_file(path, info) is not None
    again = cache.get(info, source)
    assert again == path and again.read_bytes() == DATA
    assert fetch_count(tmp_path / "fetches") == 2


def test_damage_detected_without_size_in_metadata(cache, source, tmp_path):
    info = source.add(DATA, "X")
    no_size = type(info)(**{**info.__dict__, "size": None, "sha256": None})
    path = cache.get(no_size, source)
    _make_writable(path)
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert cache.get(no_size, source).read_bytes() == DATA


def test_offline_mode_serves_cache_and_never_fetches(tmp_path, source):
    info = source.add(DATA, "Offline")
    offline = PayloadCache(tmp_path / "cache", offline=True)
    with pytest.raises(OfflineError) as err:
        offline.get(info, source)
    assert "Offline r1" in str(err.value) and info.checksum in str(err.value)
    assert fetch_count(tmp_path / "fetches") == 0
    PayloadCache(tmp_path / "cache").get(info, source)  # online fill
    assert offline.get(info, source).read_bytes() == DATA
    assert fetch_count(tmp_path / "fetches") == 1


def test_offline_mode_removes_a_corrupt_entry_and_refuses(tmp_path, source):
    info = source.add(DATA, "X")
    path = PayloadCache(tmp_path / "cache").get(info, source)
    _make_writable(path)
    path.write_bytes(b"junk")
    with pytest.raises(OfflineError):
        PayloadCache(tmp_path / "cache", offline=True).get(info, source)
    assert not path.exists()


def test_source_local_file_is_verified_and_used_in_place(cache, tmp_path):
    local = tmp_path / "store-blobs"
    local.mkdir()
    source = FileBlobSource(tmp_path / "blobs", counter=tmp_path / "fetches", local_dir=local)
    info = source.add(DATA, "Local")
    (local / info.checksum).write_bytes(DATA)
    assert cache.get(info, source) == local / info.checksum
    assert fetch_count(tmp_path / "fetches") == 0
    assert not cache.directory.exists() or not any(cache.directory.rglob("*" + info.checksum))
    # works offline too: a local file needs no network
    assert PayloadCache(tmp_path / "c2", offline=True).get(info, source) == local / info.checksum
    # a damaged local file is an error naming the file, never served
    (local / info.checksum).write_bytes(DATA[:10])
    with pytest.raises(ChecksumMismatchError, match=str(local)):
        cache.get(info, source)


def test_verified_files_are_hashed_once_per_process(cache, source, monkeypatch):
    info = source.add(DATA, "X")
    cache.get(info, source)
    calls = []
    real = cache_module._hash
    monkeypatch.setattr(cache_module, "_hash", lambda *a, **k: calls.append(a) or real(*a, **k))
    for _ in range(20):
        cache.get(info, source)
    assert calls == []
    forget_verified()
    cache.get(info, source)
    assert len(calls) == 1


def test_payload_names_cannot_escape_the_cache(cache, source):
    info = source.add(DATA, "Fine")
    sneaky = type(info)(**{**info.__dict__, "name": "../../etc/passwd"})
    path = cache.get(sneaky, source)
    assert path.resolve().is_relative_to(cache.directory.resolve())
    bad_checksum = type(info)(**{**info.__dict__, "checksum": "../../../../etc/passwd"})
    with pytest.raises(ChecksumMismatchError, match="not an MD5"):
        cache.get(bad_checksum, source)


def test_upper_case_md5_in_metadata_is_accepted(cache, source):
    info = source.add(DATA, "X")
    upper = type(info)(**{**info.__dict__, "checksum": info.checksum.upper()})
    assert cache.get(upper, source).read_bytes() == DATA


def test_stale_temp_files_are_ignored_and_cleaned(cache, source):
    info = source.add(DATA, "X")
    entry_dir = cache.directory / info.checksum[:2]
    entry_dir.mkdir(parents=True)
    stale = entry_dir / f".tmp-{info.checksum}-deadbeef"
    stale.write_bytes(DATA)  # even complete bytes in a temp file are never trusted as is
    path = cache.get(info, source)
    assert path.read_bytes() == DATA
    assert not stale.exists()


def test_fetch_error_leaves_nothing_behind(cache, source):
    info = payload_for("Missing", b"never stored")
    with pytest.raises(ConditionsError):
        cache.get(info, source)
    entry_dir = cache.path_for(info).parent
    assert not any(entry_dir.iterdir())


def test_lock_timeout_when_another_process_holds_the_entry(cache, source, tmp_path):
    import multiprocessing

    from .cache_helpers import child_hold_lock

    info = source.add(DATA, "X")
    (cache.directory / ".locks").mkdir(parents=True)
    lock_path = cache.directory / ".locks" / f"{info.checksum}.lock"
    ready = tmp_path / "ready"
    ctx = multiprocessing.get_context("fork")
    holder = ctx.Process(target=child_hold_lock, args=(str(lock_path), str(ready), 30))
    holder.start()
    try:
        for _ in range(500):
            if ready.exists():
                break
            import time
            time.sleep(0.01)
        impatient = PayloadCache(cache.directory, lock_timeout=0.3)
        with pytest.raises(CacheLockTimeout, match="waited 0.3 s"):
            impatient.get(info, source)
        assert fetch_count(tmp_path / "fetches") == 0
    finally:
        holder.kill()
        holder.join()
    # the OS released the dead holder's lock: the next get succeeds at once
    assert PayloadCache(cache.directory, lock_timeout=5).get(info, source).read_bytes() == DATA


def test_verify_all_reports_each_file(cache, source):
    good = source.add(DATA, "Good")
    bad = source.add(DATA[:5000], "Bad")
    cache.get(good, source)
    bad_path = cache.get(bad, source)
    _make_writable(bad_path)
    bad_path.write_bytes(b"rotten")
    stale = bad_path.parent / f".tmp-{bad.checksum}-x"
    stale.write_bytes(b"partial")
    report = cache.verify_all()
    status = {e.path.name: e.status for e in report.entries}
    assert status[good.checksum] == "ok"
    assert status[bad.checksum] == "corrupt"
    assert status[stale.name] == "stale-temp"
    assert not report.ok
    repaired = cache.verify_all(repair=True)
    assert repaired.count("corrupt") == 1 and not bad_path.exists()
    assert cache.verify_all().ok


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CONDITIONS_CACHE_DIR", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    assert PayloadCache().directory == tmp_path / "env-cache"
    monkeypatch.delenv("CONDITIONS_CACHE_DIR")
    assert "conditions" in str(default_cache_dir())


def test_threads_of_one_process_share_one_fill(tmp_path):
    import threading

    source = FileBlobSource(tmp_path / "blobs", counter=tmp_path / "fetches", fetch_delay=0.2)
    info = source.add(DATA, "Threaded")
    cache = PayloadCache(tmp_path / "cache", lock_timeout=30)
    got, errors = [], []

    def work():
        try:
            got.append(cache.get(info, source).read_bytes())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == [DATA] * 8
    assert fetch_count(tmp_path / "fetches") == 1
