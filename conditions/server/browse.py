"""What the web pages show, as JSON-ready dicts: one builder per page.

The HTML pages (``routers/ui.py``) and their JSON twins (``routers/browse.py``) call the
same builders, so a page never shows anything its twin does not answer.

Building a tag page needs all IoVs of the tag (the timeline shows every one of them).
:class:`BrowseCache` keeps them per tag, keyed by the tag's change serial, which every IoV
change bumps: a warm server answers a 10,000-IoV tag page without re-reading the IoVs.
Payload contents are immutable, so what a payload holds is kept by its SHA-256.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator

from .. import timeline as tl
from ..exceptions import ConditionsError, InvalidValueError, UnknownPayloadError
from ..payload import IoVRecord, PayloadInfo
from ..payload_inspect import (Inspection, Report, group_metadata, inspect_file, read_report_file,
                               report_name, validates)
from ..store.base import Store, TagVersion
from ..tags import PROCESSING_STATES, GlobalTagState
from . import wire

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: The store keeps no tag types; basf2's /v2/globalTag reports every tag as this one.
TAG_TYPE = "DEV"


class _Lru:
    """A small thread-safe LRU map."""

    def __init__(self, size: int):
        self._size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


@dataclass
class _TagIoVs:
    version: TagVersion
    records: list[IoVRecord]
    names: list[str]
    experiments: list[int]
    timelines: dict[int, dict[str, Any]] = field(default_factory=dict)


class BrowseCache:
    """Per server worker: the IoVs of recently viewed tags (by change serial) and what
    recently viewed payloads hold (by SHA-256)."""

    def __init__(self, store: Store, *, tags: int = 8, payloads: int = 16, reports: int = 4):
        # Bounds on memory: a cached header is at most MAX_HEADER_BYTES (usually ~100 kB),
        # a report at most MAX_REPORT_BYTES (usually ~300 kB).
        self.store = store
        self._tags = _Lru(tags)
        self._inspections = _Lru(payloads)
        self._reports = _Lru(reports)

    def tag_iovs(self, tag: str) -> _TagIoVs:
        version = self.store.tag_version(tag)
        cached = self._tags.get(tag)
        if cached is not None and version.serial is not None and cached.version == version:
            return cached
        records = self.store.iovs(tag)
        entry = _TagIoVs(version, records, sorted({r.payload.name for r in records}), tl.experiments(records))
        if version.serial is not None:
            self._tags.put(tag, entry)
        return entry

    def timeline(self, entry: _TagIoVs, exp: int) -> dict[str, Any]:
        """The timeline of experiment ``exp`` as JSON-ready rows, with its run span."""
        found = entry.timelines.get(exp)
        if found is None:
            rows = tl.timeline(entry.records, exp)
            lo, hi, open_ended = tl.run_span(rows)
            found = entry.timelines[exp] = {
                "first_run": lo, "last_run": hi, "open_ended": open_ended,
                "rows": [{"name": row.name, "segments": [
                    {"first_run": s.first_run, "last_run": s.last_run, "revision": s.winner.payload.revision,
                     "iov_id": s.winner.iov_id, "shadowed": [_iov_brief(r) for r in s.shadowed]}
                    for s in row.segments]} for row in rows],
            }
        return found

    def inspection(self, payload: PayloadInfo) -> Inspection:
        return self._by_hash(self._inspections, payload, inspect_file)

    def report(self, payload: PayloadInfo) -> Report:
        return self._by_hash(self._reports, payload, read_report_file)

    def _by_hash(self, cache: _Lru, payload: PayloadInfo, read: Callable[[Path, PayloadInfo], Any]) -> Any:
        key = payload.sha256 or payload.key
        found = cache.get(key)
        if found is None:
            with payload_file(self.store, payload) as path:
                found = read(path, payload)
            cache.put(key, found)
        return found


@contextlib.contextmanager
def payload_file(store: Store, payload: PayloadInfo) -> Iterator[Path]:
    """A file holding the payload's bytes (unverified: the readers hash what they read)."""
    local = store.local_path(payload)
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="conditions-browse-") as tmp:
        path = Path(tmp) / "payload"
        store.fetch_payload(payload, path)
        yield path


# -- small helpers ----------------------------------------------------------------------------------

def usability(state: GlobalTagState) -> str:
    """What a tag's state means for jobs, in a sentence."""
    state = GlobalTagState.parse(state)
    if state in PROCESSING_STATES:
        return f"{state.value}: jobs use this tag"
    if state is GlobalTagState.OPEN:
        return "OPEN: jobs use this tag only when they opt in (allow_open); its IoVs may still change"
    return f"{state.value}: jobs refuse this tag"


def matches(name: str, query: str | None) -> bool:
    """Name filter: a glob when the query has wildcards, else a case-insensitive substring."""
    if not query:
        return True
    if any(c in query for c in "*?["):
        return fnmatch.fnmatchcase(name, query)
    return query.lower() in name.lower()


def _page(total: int, page: int, per_page: int) -> tuple[int, int, int]:
    """(page, pages, first index) with page clamped into range (pages >= 1)."""
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    return page, pages, (page - 1) * per_page


def _iov_brief(record: IoVRecord) -> dict[str, Any]:
    return {"iov_id": record.iov_id, "revision": record.payload.revision, "iov": wire.iov_to_json(record.iov)}


def _answer_json(answer: tl.PointAnswer) -> dict[str, Any]:
    return {"name": answer.name, "winner": wire.iov_record_to_json(answer.winner),
            "shadowed": [_iov_brief(r) for r in answer.shadowed]}


# -- pages ------------------------------------------------------------------------------------------

def tags_page(store: Store, *, state: GlobalTagState | None = None, q: str | None = None) -> dict[str, Any]:
    """Every global tag matching the filter, with its IoV and payload-name counts."""
    every = store.list_tags()
    counts = store.tag_counts()
    by_state = {s.value: 0 for s in GlobalTagState}
    rows = []
    for tag in every:
        by_state[GlobalTagState.parse(tag.state).value] += 1
        if (state is not None and tag.state != state) or not matches(tag.name, q):
            continue
        n = counts.get(tag.name)
        rows.append({**wire.tag_to_json(tag), "type": TAG_TYPE, "iov_count": n.iovs if n else 0,
                     "payload_count": n.payload_names if n else 0,
                     "last_change": wire.tag_to_json(tag)["modified"], "last_change_by": tag.modified_by})
    return {"filter": {"state": state.value if state else None, "q": q or None},
            "total": len(every), "shown": len(rows), "by_state": by_state, "tags": rows}


def tag_page(store: Store, cache: BrowseCache, name: str, *, exp: int | None = None, run: int | None = None,
             page: int = 1, per_page: int = DEFAULT_PAGE_SIZE, payload: str | None = None,
             run_from: int | None = None, run_to: int | None = None) -> dict[str, Any]:
    """One tag: its counts, the timeline of one experiment, the winners at (exp, run) when
    ``run`` is given, and one page of its IoVs (optionally of one payload name)."""
    tag = store.get_tag(name)
    entry = cache.tag_iovs(name)
    if exp is None:
        exp = entry.experiments[0] if entry.experiments else 0
    if run_from is not None and run_to is not None and run_from > run_to:
        raise InvalidValueError(f"the run range {run_from}-{run_to} is empty: the first run is after the last")
    timeline = {"exp": exp, **cache.timeline(entry, exp), "run_from": run_from, "run_to": run_to}
    at = None
    if run is not None:
        at = {"exp": exp, "run": run, "answers": [_answer_json(a) for a in tl.at_point(entry.records, exp, run)]}
    listed = [r for r in entry.records if payload is None or r.payload.name == payload]
    per_page = min(max(1, per_page), MAX_PAGE_SIZE)
    page, pages, first = _page(len(listed), page, per_page)
    state = GlobalTagState.parse(tag.state)
    return {
        "tag": wire.tag_to_json(tag),
        "usability": usability(state),
        "counts": {"iovs": len(entry.records), "payload_names": len(entry.names)},
        "payload_names": entry.names,
        "experiments": entry.experiments,
        "timeline": timeline,
        "at": at,
        "iovs": {"page": page, "pages": pages, "per_page": per_page, "total": len(listed), "payload": payload,
                 "items": [wire.iov_record_to_json(r) for r in listed[first:first + per_page]]},
    }


def payload_page(store: Store, cache: BrowseCache, name: str, revision: int) -> dict[str, Any]:
    """One payload revision: its record, where it is used, what its bytes hold, its manifest
    and any validation reports of it."""
    payload = store.get_payload(name, revision)
    revisions = store.list_payloads(name)
    content: dict[str, Any] = {"format": None, "problem": None, "safetensors": None}
    header_groups: dict[str, dict[str, Any]] = {}
    try:
        inspection = cache.inspection(payload)
    except ConditionsError as error:  # damaged or missing bytes: say so, show the rest
        content["problem"] = str(error)
    except OSError as error:
        content["problem"] = f"cannot read the payload's bytes: {error.strerror or error}"
    else:
        content["format"], content["problem"] = inspection.format, inspection.problem
        header = inspection.safetensors
        if header is not None:
            header_groups = group_metadata(header.metadata)
            content["safetensors"] = {
                "tensor_count": header.tensor_count, "parameter_count": header.parameter_count,
                "dtypes": header.dtypes, "metadata": header_groups,
                "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in header.tensors],
            }
    manifest, manifest_source = None, None
    if isinstance((payload.metadata or {}).get("manifest"), dict):
        manifest, manifest_source = payload.metadata["manifest"], "payload metadata"
    elif header_groups.get("manifest"):
        manifest, manifest_source = header_groups["manifest"], "safetensors header"
    return {
        "payload": wire.payload_to_json(payload),
        "revisions": [{"revision": p.revision, "created": wire.payload_to_json(p)["created"], "size": p.size}
                      for p in revisions],
        "used_in": [{"tag": r.tag, "iov_id": r.iov_id, "iov": wire.iov_to_json(r.iov)}
                    for r in store.iovs_of_payload(name, revision)],
        "content": content,
        "manifest": manifest,
        "manifest_source": manifest_source,
        "demo": demo_flag(manifest),
        "reports": reports_of(store, cache, payload),
    }


_DEMO_WORDS = re.compile(r"\b(demo|untrained|placeholder)\b|not a physics model", re.IGNORECASE)


def demo_flag(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """Whether a checkpoint is a demo (not for physics): the manifest's ``demo`` field when
    it says so, else inferred from an untrained (0 steps) model or a description saying so
    (``demo: false`` is also what manifests written before the field existed read as, so
    it does not silence the other signs)."""
    if manifest is None:
        return None
    if manifest.get("demo") is True:
        return {"value": True, "why": "the manifest's demo field"}
    if manifest.get("training_steps") == 0:
        return {"value": True, "why": "inferred: trained for 0 steps"}
    description = str(manifest.get("description") or "")
    if _DEMO_WORDS.search(description):
        return {"value": True, "why": "inferred from the manifest's description"}
    if manifest.get("demo") is False:
        return {"value": False, "why": "the manifest's demo field"}
    return {"value": None, "why": "the manifest records no demo flag"}


def reports_of(store: Store, cache: BrowseCache, payload: PayloadInfo) -> list[dict[str, Any]]:
    """The validation reports stored for ``payload`` (see conditions.payload_inspect), newest first."""
    candidates = store.list_payloads(report_name(payload.name))
    found = []
    for candidate in sorted(candidates, key=lambda p: p.revision, reverse=True):
        if not validates(candidate, payload):
            continue
        item: dict[str, Any] = {"payload": wire.payload_to_json(candidate), "problem": None,
                                "scalars": {}, "images": [], "counts": {}}
        try:
            report = cache.report(candidate)
        except (ConditionsError, OSError) as error:
            item["problem"] = str(error)
        else:
            item["scalars"] = report.scalars()
            item["counts"] = {k: v for k, v in report.document.items()
                              if k.startswith("n_") and isinstance(v, int) and not isinstance(v, bool)}
            item["images"] = sorted(report.images)
        found.append(item)
    return found


def report_image(store: Store, cache: BrowseCache, name: str, revision: int, report_revision: int,
                 image: str) -> bytes:
    """The bytes of one PNG plot of a validation report of ``name`` r``revision``."""
    payload = store.get_payload(name, revision)
    candidate = store.get_payload(report_name(name), report_revision)
    if not validates(candidate, payload):
        raise UnknownPayloadError(f"{candidate.name} r{report_revision} is not a validation report of "
                                  f"{name} r{revision}")
    report = cache.report(candidate)
    if image not in report.images:
        raise UnknownPayloadError(f"the validation report {candidate.name} r{report_revision} has no plot {image!r}")
    return report.images[image]


def diff_page(store: Store, cache: BrowseCache, tag_a: str, tag_b: str, *, exp: int | None = None,
              run: int | None = None) -> dict[str, Any]:
    """IoVs in one tag and not the other; with (exp, run), also which revision each tag gives
    for every payload name there."""
    if (exp is None) != (run is None):
        raise InvalidValueError("give both exp and run to compare the tags at one run, or neither")
    result = wire.diff_to_json(store.diff(tag_a, tag_b, exp=exp, run=run))
    result["at"] = None
    if run is not None:
        a = {x.name: x for x in tl.at_point(cache.tag_iovs(tag_a).records, exp, run)}
        b = {x.name: x for x in tl.at_point(cache.tag_iovs(tag_b).records, exp, run)}
        rows = []
        for name in sorted(a.keys() | b.keys()):
            wa, wb = a.get(name), b.get(name)
            rows.append({
                "name": name,
                "a": wire.iov_record_to_json(wa.winner) if wa else None,
                "b": wire.iov_record_to_json(wb.winner) if wb else None,
                "same": bool(wa and wb and wa.winner.payload.checksum == wb.winner.payload.checksum
                             and wa.winner.payload.revision == wb.winner.payload.revision),
            })
        result["at"] = {"exp": exp, "run": run, "payloads": rows}
    return result


def audit_page(store: Store, *, tag: str | None = None, user: str | None = None, limit: int = 100) -> dict[str, Any]:
    entries = store.audit(tag=tag, limit=limit, who=user)
    return {"filter": {"tag": tag, "user": user, "limit": limit},
            "entries": [wire.audit_to_json(e) for e in entries]}
