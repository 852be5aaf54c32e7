"""basf2's testing-payloads text file, read as an override layer.

The grammar is that of basf2's C++ reader (framework/database/src/TestingPayloadStorage.cc
with ``operator>>`` of framework/database/src/IntervalOfValidity.cc), which is what a
basf2 job uses when it runs with such a file:

* everything after a ``#`` is a comment; lines are trimmed; empty lines are skipped;
* a line is read as ``<name> <revision> <interval>``, whitespace separated: ``<name>``
  must contain a ``/`` and the payload name is what follows the first one
  (``dbstore/BeamSpot``); ``<revision>`` is any word, not necessarily a number (basf2's
  own writer uses the first 6+ hex digits of the file's MD5; ``1.5`` is fine too);
* ``<interval>`` is four comma-separated integers read up to the next whitespace; text
  after it on the line is ignored (``0,0,-1,-1 extra``);
* each integer is read like C++ ``std::stoi``: leading digits count, anything after them
  is dropped (``1.5`` is 1); no digits at all, or a value beyond 32 bits, is an error;
* the payload bytes are in ``dbstore_<name>_rev_<revision>.root`` beside the text file;
* for one name, LATER lines win: the last line whose interval contains the run decides
  (no "highest revision" rule), and if its file is missing the job fails there.

Intervals follow basf2's ``IntervalOfValidity::contains``: a negative first experiment
means "from the very beginning" and a negative first run "from run 0"; a negative final
experiment means open-ended (whatever the final run), a negative final run "every run
of the final experiment". Empty intervals (both experiments negative) and reversed ones
(start after end) never match anything.

What fails here, where basf2 fails too: a line basf2 cannot read (no ``/`` in the name,
fewer than three words, an interval without four numbers) rejects the file with file and
line named, as basf2 stops the job with a fatal error; a line that decides a lookup but
whose payload file is missing fails that lookup (not the file, not other lookups).

What warns, where basf2 is silent (logged on ``conditions.testing_payloads`` and kept in
``TestingPayloadEntry.warnings``): text after the interval, numbers with trailing
characters, a final run given with an open-ended final experiment, intervals that never
match, payload files that are missing (a job that needs them fails).

Where this reader is more lenient than basf2 (documented in the README): spaces around
the commas of the interval (``0, 0, -1, -1``), which basf2 cannot read, are accepted with
a warning saying so; a payload file with another extension (``.safetensors``) is used
when there is no ``.root`` one. Where it is stricter, for safety: payload names outside
``[A-Za-z0-9_+-]`` and revisions that could name a path (``/``, ``..``) are never used
(a lookup of them fails), so no line can point outside the file's directory.

The MD5 is not in the file: it is computed from the payload file (as basf2 does). The
layer has no global tags: it answers for ANY tag list (ResolvedPayload.tag is
``temp://<absolute path of the text file>``, basf2's convention). ``tag_state`` therefore
raises UnknownTagError, and ``iovs(tag)`` lists every usable entry whatever the tag.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

#: Revisions that name a file in the same directory (no separators, not "." or "..").
_REVISION = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9_.+\-]{1,64}$")
_FILE_NAME = re.compile(r"^dbstore_[A-Za-z0-9_][A-Za-z0-9_\-+]*_rev_[A-Za-z0-9_.+\-]+\.[A-Za-z0-9]+$")
# std::stoi: optional whitespace, optional sign, at least one digit; the rest is ignored.
_STOI = re.compile(r"^\s*([+-]?\d+)")
_INT32 = (-(2**31), 2**31 - 1)
# Our leniency: spaces around the commas ("0, 0, -1, -1"), which basf2 cannot read.
_SPACED_INTERVAL = re.compile(r"^([^,\s]+)\s*,\s*([^,\s]+)\s*,\s*([^,\s]+)\s*,\s*([^,\s]+)(.*)$")


class TestingPayloadsFormatError(InvalidValueError):
    """A line of a testing-payloads file that basf2 cannot read either (the message names
    file and line)."""

    __test__ = False  # not a pytest test class, despite the name


class TestingPayloadUnusableError(UnknownPayloadError):
    """The line that decides a lookup cannot be used (its payload file is missing, or its
    name or revision is refused): the lookup fails, as the basf2 job would."""

    __test__ = False


@dataclass(frozen=True)
class TestingPayloadEntry:
    """One line of the file.

    ``iov`` is the interval as basf2 applies it (None: it never matches anything);
    ``raw_iov`` the four numbers as read. ``problem`` says why the line cannot be used
    when it decides a lookup (None: it can); ``warnings`` what was noticed on reading.
    """

    __test__ = False

    name: str
    revision: str  # as written in the file
    iov: IntervalOfValidity | None
    file: Path | None
    line: int
    raw_iov: tuple[int, int, int, int] = (0, 0, -1, -1)
    problem: str | None = None
    warnings: tuple[str, ...] = ()


def _stoi(text: str, where: str, notes: list[str]) -> int:
    """``std::stoi`` as basf2 applies it to one number of the interval."""
    match = _STOI.match(text)
    if not match:
        raise TestingPayloadsFormatError(f"{where}: experiment and run numbers must be integers, got {text!r}")
    value = int(match.group(1))
    if not _INT32[0] <= value <= _INT32[1]:
        raise TestingPayloadsFormatError(f"{where}: number {text!r} does not fit 32 bits (basf2 fails on it too)")
    if match.end() != len(text):
        notes.append(f"{text!r} is read as {value} (basf2 ignores what follows the digits)")
    return value


def _read_interval(rest: str, where: str, notes: list[str]) -> tuple[int, int, int, int]:
    """The four numbers of ``<interval> [ignored text]``, as basf2's ``operator>>`` reads them."""
    token = rest.split(None, 1)[0]
    trailing = rest[len(token):]
    fields = token.split(",")
    if len(fields) == 4:
        if trailing.strip():
            notes.append(f"text after the interval is ignored: {trailing.strip()!r}")
        return tuple(_stoi(f, where, notes) for f in fields)  # type: ignore[return-value]
    spaced = _SPACED_INTERVAL.match(rest)
    if len(fields) < 4 and spaced and (not spaced.group(5) or spaced.group(5)[0].isspace()):
        notes.append("spaces inside the interval: accepted here, but basf2 itself cannot read this line")
        if spaced.group(5).strip():
            notes.append(f"text after the interval is ignored: {spaced.group(5).strip()!r}")
        return tuple(_stoi(spaced.group(i), where, notes) for i in range(1, 5))  # type: ignore[return-value]
    raise TestingPayloadsFormatError(
        f"{where}: the interval needs to be four values <firstExp>,<firstRun>,<finalExp>,<finalRun>, "
        f"got {token!r}"
    )


def basf2_interval(fe: int, fr: int, le: int, lr: int, notes: list[str]) -> IntervalOfValidity | None:
    """The interval basf2's ``IntervalOfValidity::contains`` applies for these four numbers,
    as one of ours; None when it never matches (empty or reversed)."""
    if fe < 0 and le < 0:
        notes.append(f"interval {fe},{fr},{le},{lr} is empty (both experiments negative): it never matches")
        return None
    first = (0, 0) if fe < 0 else (fe, max(fr, 0))
    if le < 0:
        if lr >= 0:
            notes.append(f"final run {lr} is ignored: final experiment {le} means open-ended")
        final = (-1, -1)
    else:
        final = (le, lr if lr >= 0 else -1)
    try:
        return IntervalOfValidity(*first, *final)
    except InvalidIoVError:
        notes.append(f"interval {fe},{fr},{le},{lr} starts after it ends: basf2 never matches it")
        return None


def parse_testing_payloads(path: str | Path) -> list[TestingPayloadEntry]:
    """Every entry of the file, in file order (see the module docstring for the grammar).

    Raises TestingPayloadsFormatError for a line basf2 cannot read; everything else is
    an entry, with its warnings logged and kept, and ``problem`` set where it cannot be
    used.
    """
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
                f"{where}: line must be of the form 'dbstore/<name> <revision> <firstExp>,<firstRun>,"
                f"<finalExp>,<finalRun>', got {line!r}"
            )
        qualified, revision, rest = fields
        if "/" not in qualified:
            raise TestingPayloadsFormatError(
                f"{where}: payload name must be of the form dbstore/<name>, got {qualified!r}"
            )
        name = qualified.split("/", 1)[1]
        notes: list[str] = []
        raw_iov = _read_interval(rest, where, notes)
        iov = basf2_interval(*raw_iov, notes)
        problem = None
        file = None
        try:
            validate_payload_name(name)
        except InvalidNameError as error:
            problem = f"payload name {name!r} is not allowed here ({error})"
        if problem is None and not _REVISION.match(revision):
            problem = f"revision {revision!r} could name a path outside {directory}; it is not used"
        if problem is None:
            file, problem = _payload_file(directory, name, revision)
        if problem is not None:
            notes.append(problem + ("" if iov is None else "; a job that needs this line fails"))
        for note in notes:
            log.warning("%s: %s", where, note)
        entries.append(TestingPayloadEntry(name, revision, iov, file, lineno, raw_iov, problem, tuple(notes)))
    return entries


def _payload_file(directory: Path, name: str, revision: str) -> tuple[Path | None, str | None]:
    """The payload file of a line and None, or None and why there is none."""
    stem = f"dbstore_{name}_rev_{revision}"
    root = directory / f"{stem}.root"
    if root.is_file():
        return root, None  # what basf2 opens
    candidates = sorted(p for p in directory.glob(glob_escape(stem) + ".*")
                        if p.is_file() and _FILE_NAME.match(p.name) and p.name[len(stem)] == "."
                        and "." not in p.name[len(stem) + 1:])
    if not candidates:
        return None, f"payload file {stem}.root not found in {directory}"
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        return None, f"ambiguous payload files for {stem} (no .root, several others: {names})"
    return candidates[0], None


def glob_escape(text: str) -> str:
    """``text`` as a literal in a glob pattern."""
    return re.sub(r"([\[\]*?])", r"[\1]", text)


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
        """Every line that can be used (a usable file, an interval that can match)."""
        return [e for e in self.all_entries if e.problem is None and e.iov is not None]

    @property
    def all_entries(self) -> list[TestingPayloadEntry]:
        """Every line of the file, usable or not, in file order."""
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
        """The LAST line for ``name`` whose interval contains (exp, run); ``tags`` are
        ignored. TestingPayloadUnusableError when that line cannot be used."""
        validate_payload_name(name)
        self._load()
        for entry in reversed(self._by_name.get(name, [])):
            if entry.iov is not None and entry.iov.contains(exp, run):
                if entry.problem is not None:
                    raise TestingPayloadUnusableError(
                        f"{self.path}:{entry.line} decides {name} for exp {exp}, run {run}, "
                        f"but cannot be used: {entry.problem}"
                    )
                return ResolvedPayload(payload=self._info(entry), iov=entry.iov, tag=self._tag,
                                       source=self.description)
        raise NoPayloadFoundError(f"no testing payload {name} for exp {exp}, run {run} in {self.path}")

    def iovs(self, tag: str, *, name: str | None = None, exp: int | None = None,
             run: int | None = None) -> list[IoVRecord]:
        """Every usable entry of the file (whatever ``tag``), optionally filtered, in file order."""
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
