"""basf2's testing-payloads text file as an override layer."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conditions.cache import PayloadCache
from conditions.exceptions import (
    InvalidIoVError,
    InvalidNameError,
    NoPayloadFoundError,
    UnknownPayloadError,
    UnknownTagError,
)
from conditions.iov import IntervalOfValidity as IoV
from conditions.testing_payloads import TestingPayloadsFormatError, TestingPayloadsSource


def write_payload(directory: Path, name: str, revision: str, data: bytes, ext: str = "root") -> Path:
    path = directory / f"dbstore_{name}_rev_{revision}.{ext}"
    path.write_bytes(data)
    return path


@pytest.fixture
def overrides(tmp_path) -> Path:
    write_payload(tmp_path, "BeamSpot", "1", b"beamspot one")
    write_payload(tmp_path, "BeamSpot", "2", b"beamspot two")
    write_payload(tmp_path, "BeamSpot", "a3f9b2", b"beamspot md5-named", ext="root")
    write_payload(tmp_path, "PXDBackgroundGenerator_resnet", "5", b"checkpoint", ext="safetensors")
    text = tmp_path / "database.txt"
    text.write_text(
        "# written by hand, as a physicist would\n"
        "dbstore/BeamSpot 1 0,0,-1,-1\n"
        "\n"
        "   dbstore/BeamSpot   2   1,10,1,20   # a later line wins where it applies\n"
        "dbstore/BeamSpot a3f9b2 2,0,2,-1\n"
        "dbstore/PXDBackgroundGenerator_resnet 5 0, 0, -1, -1\n"
    )
    return text


def test_later_lines_win_and_md5_is_computed(overrides):
    src = TestingPayloadsSource(overrides)
    for (exp, run), data, revision in [
        ((0, 5), b"beamspot one", 1), ((1, 9), b"beamspot one", 1), ((1, 10), b"beamspot two", 2),
        ((1, 20), b"beamspot two", 2), ((1, 21), b"beamspot one", 1), ((2, 0), b"beamspot md5-named", 0),
        ((2, 99999), b"beamspot md5-named", 0), ((3, 0), b"beamspot one", 1),
    ]:
        got = src.resolve(["any-tag", "whatever"], "BeamSpot", exp, run)
        assert got.payload.checksum == hashlib.md5(data).hexdigest(), (exp, run)
        assert got.payload.revision == revision
        assert got.tag == f"temp://{overrides.absolute()}"
        assert got.source == src.description
    got = src.resolve([], "BeamSpot", 2, 3)
    assert got.payload.metadata["testing_revision"] == "a3f9b2"
    assert got.iov == IoV(2, 0, 2, -1)


def test_files_are_served_and_verified_through_the_cache(overrides, tmp_path):
    src = TestingPayloadsSource(overrides)
    cache = PayloadCache(tmp_path / "cache")
    got = src.resolve("t", "PXDBackgroundGenerator_resnet", 7, 7)
    path = cache.get(got.payload, src)
    assert path == overrides.parent / "dbstore_PXDBackgroundGenerator_resnet_rev_5.safetensors"
    assert path.read_bytes() == b"checkpoint"
    dest = tmp_path / "copy"
    src.fetch_payload(got.payload, dest)
    assert dest.read_bytes() == b"checkpoint"


def test_no_match_and_no_tags(overrides):
    src = TestingPayloadsSource(overrides)
    with pytest.raises(NoPayloadFoundError, match="Unknown"):
        src.resolve("t", "Unknown", 0, 0)
    with pytest.raises(UnknownTagError):
        src.tag_state("t")
    assert [r.payload.name for r in src.iovs("anything")] == ["BeamSpot"] * 3 + ["PXDBackgroundGenerator_resnet"]
    assert len(src.iovs("x", name="BeamSpot", exp=1, run=15)) == 2


def test_file_changes_are_picked_up(overrides):
    src = TestingPayloadsSource(overrides)
    assert src.resolve("t", "BeamSpot", 5, 5).payload.revision == 1
    with open(overrides, "a") as f:
        f.write("dbstore/BeamSpot 2 5,0,5,-1\n")
    os.utime(overrides, ns=(1, 10**18))  # make sure the mtime differs even on coarse clocks
    assert src.resolve("t", "BeamSpot", 5, 5).payload.revision == 2


@pytest.mark.parametrize("line, error, words", [
    ("dbstore/BeamSpot 1", TestingPayloadsFormatError, "expected"),
    ("BeamSpot 1 0,0,-1,-1", TestingPayloadsFormatError, "dbstore/<name>"),
    ("dbstore/BeamSpot 1 0,0,-1", InvalidIoVError, "four integers"),
    ("dbstore/BeamSpot 1 5,0,4,0", InvalidIoVError, "after its final"),
    ("dbstore/BeamSpot 1 0,0,-1,5", InvalidIoVError, "final_run"),
    ("dbstore/BeamSpot ../1 0,0,-1,-1", TestingPayloadsFormatError, "revision"),
    ("dbstore/../../etc/passwd 1 0,0,-1,-1", InvalidNameError, "invalid payload name"),
    ("dbstore/Missing 1 0,0,-1,-1", UnknownPayloadError, "dbstore_Missing_rev_1"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, error, words):
    write_payload(tmp_path, "BeamSpot", "1", b"x")
    text = tmp_path / "database.txt"
    text.write_text("# header\ndbstore/BeamSpot 1 0,0,-1,-1\n" + line + "\n")
    with pytest.raises(error) as err:
        TestingPayloadsSource(text)
    assert f"{text}:3" in str(err.value)
    assert words in str(err.value)


def test_escaping_names_cannot_reach_files_outside(tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "dbstore_X_rev_1.root").write_bytes(b"secret")
    inner = tmp_path / "payloads"
    inner.mkdir()
    text = inner / "database.txt"
    text.write_text("dbstore/../secret/X 1 0,0,-1,-1\n")
    with pytest.raises(InvalidNameError):
        TestingPayloadsSource(text)
    # and a forged PayloadInfo can't make local_path leave the directory either
    write_payload(inner, "X", "1", b"mine")
    text.write_text("dbstore/X 1 0,0,-1,-1\n")
    src = TestingPayloadsSource(text)
    info = src.resolve("t", "X", 0, 0).payload
    forged = type(info)(**{**info.__dict__, "url": "../secret/dbstore_X_rev_1.root"})
    assert src.local_path(forged) is None
    with pytest.raises(UnknownPayloadError):
        src.fetch_payload(forged, tmp_path / "out")


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(UnknownPayloadError, match="does not exist"):
        TestingPayloadsSource(tmp_path / "nope.txt")
    junk = tmp_path / "junk.txt"
    junk.write_bytes(os.urandom(256) + b"\xff\xfe")
    with pytest.raises((TestingPayloadsFormatError, InvalidNameError)):
        TestingPayloadsSource(junk)


def test_ambiguous_extensions_are_refused(tmp_path):
    write_payload(tmp_path, "X", "1", b"a", ext="safetensors")
    write_payload(tmp_path, "X", "1", b"b", ext="pt")
    text = tmp_path / "database.txt"
    text.write_text("dbstore/X 1 0,0,-1,-1\n")
    with pytest.raises(TestingPayloadsFormatError, match="ambiguous"):
        TestingPayloadsSource(text)
    write_payload(tmp_path, "X", "1", b"c", ext="root")  # basf2's own extension decides
    assert TestingPayloadsSource(text).resolve("t", "X", 0, 0).payload.checksum == hashlib.md5(b"c").hexdigest()
