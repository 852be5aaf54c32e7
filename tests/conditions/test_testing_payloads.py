"""basf2's testing-payloads text file as an override layer.

The grammar tests mirror basf2's C++ reader: framework/database/src/TestingPayloadStorage.cc
(read/get) and operator>> and contains() of framework/database/src/IntervalOfValidity.cc.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conditions.cache import PayloadCache
from conditions.exceptions import (
    InvalidNameError,
    NoPayloadFoundError,
    UnknownPayloadError,
    UnknownTagError,
)
from conditions.iov import IntervalOfValidity as IoV
from conditions.testing_payloads import (
    TestingPayloadsFormatError,
    TestingPayloadsSource,
    TestingPayloadUnusableError,
)


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


# -- basf2's grammar (framework/database/src/TestingPayloadStorage.cc, and operator>> of
#    framework/database/src/IntervalOfValidity.cc), line by line --------------------------

def _source(tmp_path, lines: str, files: dict[str, bytes]) -> TestingPayloadsSource:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    text = tmp_path / "database.txt"
    text.write_text(lines)
    return TestingPayloadsSource(text)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_trailing_text_after_the_interval_is_ignored_with_a_warning(tmp_path, caplog):
    src = _source(tmp_path, "dbstore/X 1 0,0,-1,-1 extra words\n", {"dbstore_X_rev_1.root": b"x"})
    assert src.resolve("t", "X", 4, 4).payload.checksum == _md5(b"x")
    (entry,) = src.entries
    assert any("'extra words'" in w for w in entry.warnings)
    assert "database.txt:1" in caplog.text and "ignored" in caplog.text


@pytest.mark.parametrize("interval, inside, outside", [
    ("-1,-1,2,-1", [(0, 0), (1, 7), (2, 99999)], [(3, 0)]),  # open lower bound: from the start
    ("1,-1,2,3", [(1, 0), (1, 5), (2, 3)], [(0, 99), (2, 4)]),  # negative first run: from run 0
    ("3,4,-1,7", [(3, 4), (999, 0)], [(3, 3)]),  # final exp -1: open-ended, final run ignored
    ("3,4,3,-5", [(3, 4), (3, 10**6)], [(4, 0), (3, 3)]),  # negative final run: every run
])
def test_basf2_interval_semantics(tmp_path, interval, inside, outside):
    src = _source(tmp_path, f"dbstore/X 1 {interval}\n", {"dbstore_X_rev_1.root": b"x"})
    for exp, run in inside:
        assert src.resolve("t", "X", exp, run).payload.name == "X", (exp, run)
    for exp, run in outside:
        with pytest.raises(NoPayloadFoundError):
            src.resolve("t", "X", exp, run)


@pytest.mark.parametrize("interval", ["5,0,4,0", "2,5,2,3", "-1,-1,-1,-1", "-1,4,-3,9"])
def test_reversed_and_empty_intervals_never_match_and_do_not_reject_the_file(tmp_path, interval):
    src = _source(tmp_path, "dbstore/X 1 0,0,-1,-1\n" f"dbstore/X 2 {interval}\n",
                  {"dbstore_X_rev_1.root": b"one", "dbstore_X_rev_2.root": b"two"})
    for exp, run in [(0, 0), (2, 4), (4, 0), (5, 0), (7, 7)]:
        assert src.resolve("t", "X", exp, run).payload.checksum == _md5(b"one")  # line 2 never wins
    bad = [e for e in src.all_entries if e.line == 2][0]
    assert bad.iov is None and any("never" in w for w in bad.warnings)
    assert [e.line for e in src.entries] == [1]


def test_revisions_are_words_like_basf2s_own_md5_prefixes(tmp_path):
    src = _source(tmp_path, "dbstore/X 1.5 0,0,0,-1\ndbstore/X 3fa9c2 1,0,-1,-1\n",
                  {"dbstore_X_rev_1.5.root": b"one and a half", "dbstore_X_rev_3fa9c2.root": b"hashed"})
    assert src.resolve("t", "X", 0, 1).payload.checksum == _md5(b"one and a half")
    got = src.resolve("t", "X", 1, 1).payload
    assert got.checksum == _md5(b"hashed") and got.metadata["testing_revision"] == "3fa9c2"


def test_numbers_are_read_like_stoi_with_a_warning(tmp_path):
    src = _source(tmp_path, "dbstore/X 1 1.5,0,+2,-1x\n", {"dbstore_X_rev_1.root": b"x"})
    (entry,) = src.entries
    assert entry.raw_iov == (1, 0, 2, -1) and entry.iov == IoV(1, 0, 2, -1)
    assert sum("is read as" in w for w in entry.warnings) == 2  # '1.5' and '-1x'; '+2' is plain


def test_missing_files_fail_only_when_their_line_decides(tmp_path):
    src = _source(tmp_path, "dbstore/X 1 0,0,-1,-1\ndbstore/X 2 5,0,5,-1\ndbstore/Y 1 0,0,-1,-1\n",
                  {"dbstore_X_rev_1.root": b"one"})
    assert src.resolve("t", "X", 4, 0).payload.checksum == _md5(b"one")  # never asks for rev 2
    with pytest.raises(TestingPayloadUnusableError, match=r"database.txt:2 .*dbstore_X_rev_2.root") as error:
        src.resolve("t", "X", 5, 3)  # line 2 decides: basf2 stops here too, no fallback to line 1
    assert not isinstance(error.value, NoPayloadFoundError)  # a chain must not fall through
    with pytest.raises(TestingPayloadUnusableError, match="dbstore_Y_rev_1.root"):
        src.resolve("t", "Y", 0, 0)
    missing = [e for e in src.all_entries if e.problem]
    assert [e.line for e in missing] == [2, 3] and all("not found" in e.problem for e in missing)


def test_spaces_in_the_interval_are_our_leniency_and_say_so(tmp_path):
    src = _source(tmp_path, "dbstore/X 1 0, 0, -1, -1   # hand written\n", {"dbstore_X_rev_1.root": b"x"})
    (entry,) = src.entries
    assert entry.iov == IoV(0, 0, -1, -1)
    assert any("basf2 itself cannot read" in w for w in entry.warnings)


@pytest.mark.parametrize("line, words", [
    ("dbstore/BeamSpot 1", "must be of the form"),  # no interval
    ("dbstore/BeamSpot", "must be of the form"),
    ("BeamSpot 1 0,0,-1,-1", "dbstore/<name>"),  # no '/'
    ("dbstore/BeamSpot 1 0,0,-1", "four values"),
    ("dbstore/BeamSpot 1 0,0,-1,-1,", "four values"),  # a fifth value
    ("dbstore/BeamSpot 1 0,,-1,-1", "must be integers"),
    ("dbstore/BeamSpot 1 x1,0,-1,-1", "must be integers"),
    ("dbstore/BeamSpot 1 99999999999,0,-1,-1", "32 bits"),
])
def test_lines_basf2_cannot_read_reject_the_file_naming_file_and_line(tmp_path, line, words):
    write_payload(tmp_path, "BeamSpot", "1", b"x")
    text = tmp_path / "database.txt"
    text.write_text("# header\ndbstore/BeamSpot 1 0,0,-1,-1\n" + line + "\n")
    with pytest.raises(TestingPayloadsFormatError) as err:
        TestingPayloadsSource(text)
    assert f"{text}:3" in str(err.value)
    assert words in str(err.value)


@pytest.mark.parametrize("line", ["dbstore/BeamSpot ../1 0,0,-1,-1", "dbstore/BeamSpot .. 0,0,-1,-1"])
def test_revisions_that_name_a_path_are_never_used(tmp_path, line):
    write_payload(tmp_path, "BeamSpot", "1", b"x")
    text = tmp_path / "database.txt"
    text.write_text("dbstore/BeamSpot 1 0,0,-1,-1\n" + line + "\n")
    src = TestingPayloadsSource(text)
    with pytest.raises(TestingPayloadUnusableError, match="revision"):
        src.resolve("t", "BeamSpot", 0, 0)


def test_escaping_names_cannot_reach_files_outside(tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "dbstore_X_rev_1.root").write_bytes(b"secret")
    inner = tmp_path / "payloads"
    inner.mkdir()
    text = inner / "database.txt"
    text.write_text("dbstore/../secret/X 1 0,0,-1,-1\n")
    src = TestingPayloadsSource(text)  # the file is read, the line is never used
    (entry,) = src.all_entries
    assert entry.file is None and "not allowed" in entry.problem
    with pytest.raises(InvalidNameError):
        src.resolve("t", "../secret/X", 0, 0)
    assert src.entries == [] and src.iovs("t") == []
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
    with pytest.raises(TestingPayloadUnusableError, match="ambiguous"):
        TestingPayloadsSource(text).resolve("t", "X", 0, 0)
    write_payload(tmp_path, "X", "1", b"c", ext="root")  # basf2's own extension decides
    assert TestingPayloadsSource(text).resolve("t", "X", 0, 0).payload.checksum == hashlib.md5(b"c").hexdigest()
