"""What is inside a payload, for people browsing the database: the header of a safetensors
file and the validation report that may accompany a payload.

Nothing here loads a model or imports torch: a safetensors file starts with an 8-byte
little-endian length and that many bytes of plain JSON (tensor names, dtypes, shapes, and
a ``__metadata__`` object of strings), which is all a browser needs to show.

Bytes are read only together with their hashes: :func:`inspect_file` hashes the whole file
in the same pass that keeps its header, and :func:`read_report` parses an archive only
after its bytes matched the payload's checksums, so a damaged blob is reported, never shown.

**Validation reports.** A report for payload ``NAME`` revision ``R`` is stored as payload
``NAME_validation`` whose metadata is ``{"kind": "validation-report", "validates":
{"name": NAME, "revision": R, "sha256": ...}}`` and whose bytes are a zip archive holding
``report.json`` and PNG plots (what ``pxdbg validate -o DIR`` writes). Payloads are
immutable, so the report (made after the payload) points at it, not the other way round.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .exceptions import ChecksumMismatchError, InvalidValueError
from .payload import PayloadInfo

#: Largest safetensors header read (the format itself allows 100 MB; a model with ten
#: thousand tensors and its manifest needs about 1 MB).
MAX_HEADER_BYTES = 8 * 1024**2
#: Largest report archive read into memory (packed, and unpacked in all), its largest
#: member and most members.
MAX_REPORT_BYTES = 64 * 1024**2
MAX_REPORT_MEMBER_BYTES = 32 * 1024**2
MAX_REPORT_MEMBERS = 200
#: Tensors listed individually on a payload page (a big model has thousands).
TENSOR_LIST_LIMIT = 50

REPORT_KIND = "validation-report"
REPORT_SUFFIX = "_validation"
REPORT_DOCUMENT = "report.json"
REPORT_TARGET = "validates.json"
_REPORT_IMAGE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,120}\.png$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK = 1 << 20

_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    """The JSON header of a safetensors file."""

    metadata: dict[str, str]
    tensor_count: int
    parameter_count: int
    dtypes: dict[str, int]  # dtype -> number of tensors
    tensors: tuple[TensorEntry, ...]  # the first TENSOR_LIST_LIMIT, in file order


@dataclass(frozen=True)
class Inspection:
    """What a payload's bytes are. ``format``: ``safetensors``, ``zip`` or ``other``;
    ``problem`` says why a header that looked like safetensors could not be read."""

    format: str
    safetensors: SafetensorsHeader | None = None
    problem: str | None = None


def _check(payload: PayloadInfo, md5: str, sha256: str, size: int, where: str) -> None:
    if (payload.sha256 and sha256 != payload.sha256) or md5 != payload.checksum or (
            payload.size is not None and size != payload.size):
        raise ChecksumMismatchError(
            f"payload {payload.name} r{payload.revision} is damaged in {where}: expected md5 "
            f"{payload.checksum} and {payload.size} bytes, got md5 {md5} and {size} bytes"
        )


def inspect_file(path: str | Path, payload: PayloadInfo) -> Inspection:
    """Say what payload file ``path`` holds. A safetensors file is hashed against ``payload``
    (ChecksumMismatchError when it differs) in the pass that reads its header, and only the
    header is kept in memory; any other file is only named by its first bytes (nothing of
    it is shown, so a large ROOT file is not hashed just to say it is not safetensors)."""
    with open(path, "rb") as stream:
        first = stream.read(9)
    if len(first) < 9 or first[8:9] != b"{":
        return inspect_bytes_head(first, Path(path).stat().st_size)
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    head = bytearray()  # a prefix of the file: 9 bytes, then the whole header if it is one
    wanted = 9
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            if len(head) == size and len(head) < wanted:
                head += chunk[:wanted - len(head)]
                if wanted == 9 and len(head) == 9 and head[8:9] == b"{":
                    wanted = 8 + min(int.from_bytes(head[:8], "little"), MAX_HEADER_BYTES)
                    head += chunk[9 - size:wanted - size]
            size += len(chunk)
    _check(payload, md5.hexdigest(), sha.hexdigest(), size, str(path))
    return inspect_bytes_head(bytes(head), size)


def inspect_bytes_head(head: bytes, size: int) -> Inspection:
    """What a file of ``size`` bytes whose first bytes are ``head`` is (``head`` holds at least
    the whole safetensors header when there is one of at most MAX_HEADER_BYTES)."""
    if head[:4] == b"PK\x03\x04":
        return Inspection("zip")
    if len(head) < 9 or head[8:9] != b"{":
        return Inspection("other")
    declared = int.from_bytes(head[:8], "little")
    if declared > size - 8:
        return Inspection("other")
    if declared > MAX_HEADER_BYTES:
        return Inspection("safetensors", problem=f"header of {declared} bytes is over the "
                                                   f"{MAX_HEADER_BYTES}-byte limit of this viewer")
    try:
        return Inspection("safetensors", safetensors=parse_safetensors_header(head[8:8 + declared]))
    except ValueError as error:
        return Inspection("safetensors", problem=str(error))


def parse_safetensors_header(raw: bytes) -> SafetensorsHeader:
    """The header's tensors and ``__metadata__``; ValueError when it is not a valid header."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ValueError("__metadata__ is not an object of strings")
    tensors: list[TensorEntry] = []
    dtypes: dict[str, int] = {}
    parameters = 0
    for name, entry in header.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) \
                or not isinstance(entry.get("shape"), list) \
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in entry["shape"]):
            raise ValueError(f"tensor {name!r} has no valid dtype and shape")
        count = 1
        for n in entry["shape"]:
            count *= n
        parameters += count
        dtypes[entry["dtype"]] = dtypes.get(entry["dtype"], 0) + 1
        if len(tensors) < TENSOR_LIST_LIMIT:
            tensors.append(TensorEntry(name, entry["dtype"], tuple(entry["shape"])))
    return SafetensorsHeader(dict(metadata), len(header), parameters, dtypes, tuple(tensors))


def group_metadata(metadata: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Header metadata grouped by the prefix before the first dot (``manifest.model`` ->
    ``{"manifest": {"model": ...}}``; keys without a dot go under ``""``), each value
    decoded from JSON where it is JSON, else kept as the string it is."""
    groups: dict[str, dict[str, Any]] = {}
    for key in sorted(metadata):
        prefix, _, rest = key.partition(".") if "." in key else ("", "", key)
        raw = metadata[key]
        try:
            value: Any = json.loads(raw)
        except (json.JSONDecodeError, TypeError):
            value = raw
        groups.setdefault(prefix, {})[rest] = value
    return groups


# -- validation reports ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    """A validation report: its JSON document and its PNG plots by file name."""

    document: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """The headline numbers: the document's ``scalars`` object, else its top-level numbers."""
        found = self.document.get("scalars")
        source = found if isinstance(found, dict) else self.document
        return {k: v for k, v in source.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}


def report_name(payload_name: str) -> str:
    return payload_name + REPORT_SUFFIX


def report_metadata(payload: PayloadInfo, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata of a report payload for ``payload``."""
    meta = dict(extra or {})
    meta.update({"kind": REPORT_KIND,
                 "validates": {"name": payload.name, "revision": payload.revision, "sha256": payload.sha256}})
    return meta


def validates(report_payload: PayloadInfo, payload: PayloadInfo) -> bool:
    """Whether ``report_payload`` is a validation report of exactly ``payload``."""
    meta = report_payload.metadata or {}
    target = meta.get("validates")
    if meta.get("kind") != REPORT_KIND or not isinstance(target, dict):
        return False
    if target.get("name") != payload.name or target.get("revision") != payload.revision:
        return False
    return not (target.get("sha256") and payload.sha256 and target["sha256"] != payload.sha256)


def pack_report(directory: str | Path, target: PayloadInfo | None = None) -> bytes:
    """A report archive from a directory holding ``report.json`` and PNG plots (other files
    are left out). With ``target``, the archive also records which payload it validates
    (``validates.json``), so the same report attached to two revisions makes two payloads
    rather than one (a store keeps identical bytes under one name once). Deterministic: the
    same files and target give the same bytes."""
    directory = Path(directory)
    document = directory / REPORT_DOCUMENT
    if not document.is_file():
        raise InvalidValueError(f"{directory} holds no {REPORT_DOCUMENT}")
    try:
        parsed = json.loads(document.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidValueError(f"{document} is not a JSON document: {error}") from None
    if not isinstance(parsed, dict):
        raise InvalidValueError(f"{document} is not a JSON object")
    members = [document] + sorted(p for p in directory.iterdir()
                                  if p.is_file() and _REPORT_IMAGE.match(p.name))
    contents = [(path.name, path.read_bytes()) for path in members]
    if target is not None:
        contents.append((REPORT_TARGET, json.dumps(report_metadata(target)["validates"], sort_keys=True).encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in contents:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    data = buffer.getvalue()
    if len(data) > MAX_REPORT_BYTES:
        raise InvalidValueError(f"report archive of {len(data)} bytes is over the {MAX_REPORT_BYTES}-byte limit")
    return data


def read_report_file(path: str | Path, payload: PayloadInfo) -> Report:
    """The report in payload file ``path``, after checking its bytes against ``payload``."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_REPORT_BYTES:
        raise InvalidValueError(f"report archive of {size} bytes is over the {MAX_REPORT_BYTES}-byte limit")
    data = path.read_bytes()
    _check(payload, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest(), len(data), str(path))
    return read_report(data)


def read_report(data: bytes) -> Report:
    """Parse a report archive; InvalidValueError when it is not one. Only ``report.json``
    and ``*.png`` members with PNG signatures are taken; sizes are checked before reading."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise InvalidValueError(f"not a report archive: {error}") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_REPORT_MEMBERS:
            raise InvalidValueError(f"report archive has {len(members)} members, over {MAX_REPORT_MEMBERS}")
        total = sum(member.file_size for member in members)
        if total > MAX_REPORT_BYTES:
            raise InvalidValueError(f"report archive unpacks to {total} bytes, over {MAX_REPORT_BYTES}")
        document = None
        images: dict[str, bytes] = {}
        for member in members:
            if member.file_size > MAX_REPORT_MEMBER_BYTES:
                raise InvalidValueError(f"report member {member.filename!r} is over {MAX_REPORT_MEMBER_BYTES} bytes")
            if member.filename == REPORT_DOCUMENT:
                try:
                    document = json.loads(archive.read(member).decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as error:
                    raise InvalidValueError(f"{REPORT_DOCUMENT} in the archive is not JSON: {error}") from None
            elif _REPORT_IMAGE.match(member.filename):
                content = archive.read(member)
                if content.startswith(_PNG_SIGNATURE):
                    images[member.filename] = content
    if not isinstance(document, dict):
        raise InvalidValueError(f"report archive holds no {REPORT_DOCUMENT} object")
    return Report(document, images)
