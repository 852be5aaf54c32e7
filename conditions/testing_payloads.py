"""basf2's testing-payloads text file, read as an override layer.

Format (as parsed by basf2's framework/database/src/TestingPayloadStorage.cc, which also
writes it, and by ``b2conditionsdb legacydownload -c``, which writes ``database.txt``):

* one payload per line: ``dbstore/<name> <revision> <firstExp>,<firstRun>,<finalExp>,<finalRun>``;
* everything after a ``#`` is a comment; lines are trimmed; empty lines are skipped;
* fields are separated by whitespace; basf2 only requires a ``/`` in the first field and
  takes the name after the first ``/``;
* ``<revision>`` is a string, not necessarily a number: basf2's own writer uses the first
  6+ hex digits of the file's MD5;
* the payload bytes are in ``dbstore_<name>_rev_<revision>.<ext>`` beside the text file
  (basf2 always writes ``.root``);
* for one name, LATER lines win: basf2 reverses the list and takes the first line whose
  IoV contains the run. Within the file there is no "highest revision" rule.
* the MD5 is not in the file: it is computed from the payload file (as basf2 does).

The layer has no global tags: it answers for ANY tag list (ResolvedPayload.tag is
``temp://<absolute path of the text file>``, basf2's convention). ``tag_state`` therefore
raises UnknownTagError, and ``iovs(tag)`` lists every entry whatever the tag.
"""

from __future__ import annotations

import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .cache import file_hashes
from .exceptions import (
    InvalidIoVError,
    InvalidNameError,
    InvalidValueError,
    NoPayloadFoundError,
    UnknownPayloadError,
    UnknownTagError,
)
from .iov import IntervalOfValidity
from .payload import IoVRecord, PayloadInfo, ResolvedPayload
from .source import MetadataSource
from .tags import GlobalTagState, validate_payload_name

_REVISION = re.compile(r"^[A-Za-z0-9]{1,64}$")
_FILE_NAME = re.compile(r"^dbstore_[A-Za-z0-9_][A-Za-z0-9_\-+]*_rev_[A-Za-z0-9]+\.[A-Za-z0-9]+$")


class TestingPayloadsFormatError(InvalidValueError):
    """A line of a testing-payloads file that cannot be read (the message names file and line)."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class TestingPayloadEntry:
    """One line of the file."""

    __test__ = False

    name: str
    revision: str  # as written in the file
    iov: IntervalOfValidity
    file: Path
    line: int


def parse_testing_payloads(path: str | Path) -> list[TestingPayloadEntry]:
    """All entries of the file, in file order. Every referenced payload file must exist."""
    path = Path(path)
    directory = path.absolute().parent
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TestingPayloadsFormatError(f"{path}: not a text file") from None
    entries = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{lineno}"
        fields = line.split(None, 2)
        if len(fields) != 3:
            raise TestingPayloadsFormatError(
                f"{where}: expected 'dbstore/<name> <revision> <firstExp>,<firstRun>,<finalExp>,"
                f"<finalRun>', got {line!r}"
            )
        qualified, revision, iov_text = fields
        if "/" not in qualified:
            raise TestingPayloadsFormatError(
                f"{where}: payload name must be of the form dbstore/<name>, got {qualified!r}"
            )
        name = qualified.split("/", 1)[1]
        try:
            validate_payload_name(name)
        except InvalidNameError as exc:
            raise InvalidNameError(f"{where}: {exc}") from None
        if not _REVISION.match(revision):
            raise TestingPayloadsFormatError(
                f"{where}: revision must be letters and digits only, got {revision!r}"
            )
        try:
            iov = IntervalOfValidity.parse(iov_text)
        except InvalidIoVError as exc:
            raise InvalidIoVError(f"{where}: {exc}") from None
        entries.append(TestingPayloadEntry(name, revision, iov, _payload_file(directory, name, revision, where),
                                           lineno))
    return entries


def _payload_file(directory: Path, name: str, revision: str, where: str) -> Path:
    stem = f"dbstore_{name}_rev_{revision}"
    candidates = sorted(p for p in directory.glob(stem + ".*")
                        if p.is_file() and _FILE_NAME.match(p.name) and p.name[len(stem)] == "."
                        and "." not in p.name[len(stem) + 1:])
    if not candidates:
        raise UnknownPayloadError(f"{where}: payload file {stem}.<ext> not found in {directory}")
    if len(candidates) > 1:
        # basf2 itself only ever looks for .root: prefer it, refuse to guess otherwise
        roots = [p for p in candidates if p.suffix == ".root"]
        if len(roots) != 1:
            names = ", ".join(p.name for p in candidates)
            raise TestingPayloadsFormatError(f"{where}: ambiguous payload files for {stem}: {names}")
        candidates = roots
    return candidates[0]


class TestingPayloadsSource(MetadataSource):
    """Local overrides from a testing-payloads file; answers for any tag list.

    The file is read when opened and again whenever it changes on disk.
    """

    __test__ = False
    #: An override layer: answers for any tag list and holds no tags of its own.
    holds_tags = False

    def __init__(self, path: str | Path):
        self.path = Path(path).absolute()
        if not self.path.is_file():
            raise UnknownPayloadError(f"testing-payloads file {self.path} does not exist")
        self.directory = self.path.parent
        self.description = f"testing-payloads:{self.path}"
        self._tag = f"temp://{self.path}"
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._by_name: dict[str, list[TestingPayloadEntry]] = {}
        self._load()

    def _load(self) -> None:
        st = self.path.stat()
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if stamp == self._stamp:
                return
            by_name: dict[str, list[TestingPayloadEntry]] = {}
            for entry in parse_testing_payloads(self.path):
                by_name.setdefault(entry.name, []).append(entry)
            self._by_name, self._stamp = by_name, stamp

    @property
    def entries(self) -> list[TestingPayloadEntry]:
        self._load()
        return sorted((e for es in self._by_name.values() for e in es), key=lambda e: e.line)

    def _info(self, entry: TestingPayloadEntry) -> PayloadInfo:
        md5, sha256, size = file_hashes(entry.file)
        return PayloadInfo(
            name=entry.name,
            revision=int(entry.revision) if entry.revision.isdigit() else 0,
            checksum=md5, sha256=sha256, size=size,
            metadata={"testing_revision": entry.revision, "testing_file": str(self.path),
                      "line": entry.line},
            url=entry.file.name,
        )

    def _record(self, entry: TestingPayloadEntry) -> IoVRecord:
        return IoVRecord(iov_id=None, tag=self._tag, payload=self._info(entry), iov=entry.iov)

    # -- MetadataSource ---------------------------------------------------------------
    def tag_state(self, tag: str) -> GlobalTagState:
        raise UnknownTagError(f"{self.description} holds no global tags (it overrides any tag)")

    def resolve(self, tags: Sequence[str] | str, name: str, exp: int, run: int, *,
                allow_open: bool = False) -> ResolvedPayload:
        """The LAST line for ``name`` whose IoV contains (exp, run); ``tags`` are ignored."""
        validate_payload_name(name)
        self._load()
        for entry in reversed(self._by_name.get(name, [])):
            if entry.iov.contains(exp, run):
                return ResolvedPayload(payload=self._info(entry), iov=entry.iov, tag=self._tag,
                                       source=self.description)
        raise NoPayloadFoundError(f"no testing payload {name} for exp {exp}, run {run} in {self.path}")

    def iovs(self, tag: str, *, name: str | None = None, exp: int | None = None,
             run: int | None = None) -> list[IoVRecord]:
        """Every entry of the file (whatever ``tag``), optionally filtered, in file order."""
        records = []
        for entry in self.entries:
            if name is not None and entry.name != name:
                continue
            if exp is not None and not entry.iov.contains(exp, run if run is not None else 0):
                continue
            records.append(self._record(entry))
        return records

    def local_path(self, payload: PayloadInfo) -> Path | None:
        if payload.url is None or not _FILE_NAME.match(payload.url):
            return None  # not one of ours, or a name that could point elsewhere
        path = self.directory / payload.url
        return path if path.is_file() else None

    def fetch_payload(self, payload: PayloadInfo, destination: Path) -> None:
        local = self.local_path(payload)
        if local is None:
            raise UnknownPayloadError(f"{self.description} has no file for payload {payload.name}")
        shutil.copyfile(local, destination)
