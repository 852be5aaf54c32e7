"""Reading payload contents for the web pages: safetensors headers and report archives,
including files that lie about themselves."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from conditions.exceptions import ChecksumMismatchError, InvalidValueError
from conditions.payload import PayloadInfo, hash_file
from conditions.payload_inspect import (MAX_HEADER_BYTES, MAX_REPORT_MEMBERS, group_metadata, inspect_file,
                                        pack_report, read_report)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def info_of(path) -> PayloadInfo:
    h = hash_file(path)
    return PayloadInfo("P", 1, h.md5, h.sha256, h.size)


def test_safetensors_header_without_torch(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": np.zeros((2, 3), np.float32), "b": np.zeros(5, np.int64)}, str(path),
              metadata={"manifest.model": '"convnet"', "manifest.steps": "60", "note": "<b>x</b>"})
    found = inspect_file(path, info_of(path))
    assert found.format == "safetensors" and found.problem is None
    header = found.safetensors
    assert (header.tensor_count, header.parameter_count, header.dtypes) == (2, 11, {"F32": 1, "I64": 1})
    assert group_metadata(header.metadata) == {"manifest": {"model": "convnet", "steps": 60}, "": {"note": "<b>x</b>"}}


def test_large_files_keep_only_the_header(tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({"w": np.zeros(3_000_000, np.float32)}, str(path))  # 12 MB: many read chunks
    assert inspect_file(path, info_of(path)).safetensors.parameter_count == 3_000_000


def test_damaged_bytes_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": np.zeros(4, np.float32)}, str(path))
    expected = info_of(path)
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(ChecksumMismatchError, match="damaged"):
        inspect_file(path, expected)


@pytest.mark.parametrize("head, fmt, problem", [
    (struct.pack("<Q", 10) + b"{not json}", "safetensors", "not JSON"),
    (struct.pack("<Q", 2) + b"[]", "other", None),
    (struct.pack("<Q", 24) + b'{"t": {"dtype": "F32"}} ', "safetensors", "no valid dtype and shape"),
    (struct.pack("<Q", 10**12) + b"{", "other", None),  # claims more bytes than the file has
    (b"PK\x03\x04rest", "zip", None),
    (b"plain text", "other", None),
])
def test_headers_that_lie(tmp_path, head, fmt, problem):
    path = tmp_path / "f"
    path.write_bytes(head)
    found = inspect_file(path, info_of(path))
    assert found.format == fmt
    assert (problem is None and found.problem is None) or problem in found.problem


def test_oversized_header_is_not_read(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{" + b" " * (MAX_HEADER_BYTES + 10))
    found = inspect_file(path, info_of(path))
    assert found.format == "safetensors" and "over the" in found.problem and found.safetensors is None


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_report_archives(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"scalars": {"w1": 0.5, "flag": True}, "n": 3}))
    (tmp_path / "plot.png").write_bytes(PNG)
    (tmp_path / "script.js").write_text("alert(1)")
    data = pack_report(tmp_path)
    assert data == pack_report(tmp_path)  # deterministic
    report = read_report(data)
    assert report.scalars() == {"w1": 0.5} and list(report.images) == ["plot.png"]
    # members that are not plain PNGs with plain names are ignored
    report = read_report(_zip({"report.json": b'{"a": 1}', "fake.png": b"<svg onload=alert(1)>",
                               "../up.png": PNG, "dir/x.png": PNG, "ok.png": PNG}))
    assert list(report.images) == ["ok.png"] and report.scalars() == {"a": 1}
    for bad, why in ((b"not a zip", "not a report archive"), (_zip({"x.png": PNG}), "no report.json"),
                     (_zip({"report.json": b"[1]"}), "no report.json object"),
                     (_zip({f"{i}.png": PNG for i in range(MAX_REPORT_MEMBERS + 1)}), "members")):
        with pytest.raises(InvalidValueError, match=why):
            read_report(bad)
    with pytest.raises(InvalidValueError, match="holds no report.json"):
        pack_report(tmp_path / "nowhere")


def test_report_archive_that_unpacks_too_big_is_refused():
    from conditions.payload_inspect import MAX_REPORT_BYTES

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.json", b"{}")
        for i in range(3):  # 3 x 30 MB of zeros: a few kB packed
            archive.writestr(f"{i}.png", b"\0" * (30 * 1024**2))
    assert len(buffer.getvalue()) < 1024**2
    with pytest.raises(InvalidValueError, match=f"over {MAX_REPORT_BYTES}"):
        read_report(buffer.getvalue())


def test_other_files_are_not_hashed(tmp_path):
    path = tmp_path / "f.root"
    path.write_bytes(b"root\0" * 100)
    wrong = PayloadInfo("P", 1, "0" * 32, "0" * 64, 1)  # would fail any hash check
    assert inspect_file(path, wrong).format == "other"
