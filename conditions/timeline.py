"""Which payload revision wins where in one global tag: the model behind the IoV timeline.

Within a tag, the IoV that decides at a point is the one with the highest payload
revision, then the newest IoV (the highest id): the same rule the stores resolve with.
For one experiment this module cuts the run axis of each payload name into segments,
each with its winning IoV and the IoVs it overrides there, so a reader can see which
revision a job gets at every run and where an older revision is shadowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .payload import IoVRecord

#: Internal "no upper bound" for run numbers (runs are 32-bit in the stores).
OPEN_END = 1 << 62


@dataclass(frozen=True)
class Segment:
    """Runs ``first_run..last_run`` of one experiment (``last_run`` None: open-ended)
    where ``winner`` decides; ``shadowed`` are the other IoVs valid there."""

    first_run: int
    last_run: int | None
    winner: IoVRecord
    shadowed: tuple[IoVRecord, ...]


@dataclass(frozen=True)
class TimelineRow:
    name: str
    segments: tuple[Segment, ...]


def rank(record: IoVRecord) -> tuple[int, int]:
    """Higher wins: revision first, then the newer IoV."""
    return (record.payload.revision, record.iov_id or 0)


def runs_in_experiment(record: IoVRecord, exp: int) -> tuple[int, int] | None:
    """The runs of experiment ``exp`` that ``record``'s IoV covers, as (first, last) with
    ``last`` = OPEN_END for "every later run"; None when it does not touch ``exp``."""
    iov = record.iov
    if iov.first_exp > exp:
        return None
    if iov.final_exp != -1 and iov.final_exp < exp:
        return None
    first = iov.first_run if iov.first_exp == exp else 0
    if iov.final_exp == exp and iov.final_run != -1:
        last = iov.final_run
    else:
        last = OPEN_END
    return (first, last) if first <= last else None


def experiments(records: Iterable[IoVRecord]) -> list[int]:
    """The experiment numbers the IoVs name at either end (open ends excepted), sorted:
    the experiments worth offering in an experiment picker."""
    found: set[int] = set()
    for r in records:
        found.add(r.iov.first_exp)
        if r.iov.final_exp != -1:
            found.add(r.iov.final_exp)
    return sorted(found)


def timeline(records: Iterable[IoVRecord], exp: int) -> list[TimelineRow]:
    """Per payload name (sorted), the segments of experiment ``exp`` in run order. Runs
    no IoV covers have no segment. Adjacent runs with the same winner and the same
    shadowed IoVs form one segment."""
    by_name: dict[str, list[tuple[int, int, IoVRecord]]] = {}
    for r in records:
        runs = runs_in_experiment(r, exp)
        if runs is not None:
            by_name.setdefault(r.payload.name, []).append((runs[0], runs[1], r))
    return [TimelineRow(name, tuple(_segments(items))) for name, items in sorted(by_name.items())]


def _segments(items: list[tuple[int, int, IoVRecord]]) -> list[Segment]:
    boundaries: set[int] = set()
    for first, last, _r in items:
        boundaries.add(first)
        if last < OPEN_END:
            boundaries.add(last + 1)
    ordered = sorted(items, key=lambda item: item[0])
    points = sorted(boundaries)
    active: dict[int, tuple[int, int, IoVRecord]] = {}
    segments: list[Segment] = []
    j = 0
    for k, start in enumerate(points):
        while j < len(ordered) and ordered[j][0] <= start:
            active[j] = ordered[j]
            j += 1
        for key in [key for key, item in active.items() if item[1] < start]:
            del active[key]
        if not active:
            continue
        end = points[k + 1] - 1 if k + 1 < len(points) else OPEN_END
        records = sorted((item[2] for item in active.values()), key=rank, reverse=True)
        winner, shadowed = records[0], tuple(records[1:])
        last_run = None if end >= OPEN_END else end
        previous = segments[-1] if segments else None
        if (previous is not None and previous.last_run is not None and previous.last_run + 1 == start
                and previous.winner.iov_id == winner.iov_id
                and [s.iov_id for s in previous.shadowed] == [s.iov_id for s in shadowed]):
            segments[-1] = Segment(previous.first_run, last_run, winner, shadowed)
        else:
            segments.append(Segment(start, last_run, winner, shadowed))
    return segments


@dataclass(frozen=True)
class PointAnswer:
    """For one payload name at one (exp, run): the IoV that decides and those it overrides."""

    name: str
    winner: IoVRecord
    shadowed: tuple[IoVRecord, ...]


def at_point(records: Iterable[IoVRecord], exp: int, run: int) -> list[PointAnswer]:
    """Per payload name (sorted) valid at (exp, run): the deciding IoV and the overridden ones."""
    by_name: dict[str, list[IoVRecord]] = {}
    for r in records:
        if r.iov.contains(exp, run):
            by_name.setdefault(r.payload.name, []).append(r)
    answers = []
    for name, found in sorted(by_name.items()):
        found.sort(key=rank, reverse=True)
        answers.append(PointAnswer(name, found[0], tuple(found[1:])))
    return answers


def run_span(rows: Sequence[TimelineRow]) -> tuple[int, int, bool]:
    """(lowest run, highest finite run, whether some segment is open-ended) over ``rows``;
    (0, 0, False) when there is nothing."""
    firsts = [s.first_run for row in rows for s in row.segments]
    if not firsts:
        return 0, 0, False
    lasts = [s.last_run for row in rows for s in row.segments if s.last_run is not None]
    open_ended = any(s.last_run is None for row in rows for s in row.segments)
    return min(firsts), max(lasts + firsts), open_ended
