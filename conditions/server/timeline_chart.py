"""The geometry of the IoV timeline chart (an inline SVG drawn by the tag page's template).

Input is the ``timeline`` part of :func:`conditions.server.browse.tag_page`; output is plain
numbers and strings for the template. Runs map linearly onto the x axis of one experiment.
A segment narrower than a unit of the drawing merges with its thin neighbours into one
mark (a 10,000-IoV tag still draws a few hundred rectangles per payload name); clicking
the chart asks the server for the exact answer at that run, so nothing is lost by merging.

The marks of a row are written here as one SVG fragment rather than by a template loop
(thousands of marks render ten times faster so); every text in it goes through
``markupsafe.escape``, and everything else is a number or a colour from PALETTE.
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

WIDTH = 1000
LABEL_WIDTH = 230
RIGHT_MARGIN = 14
ROW_HEIGHT = 28
BAR_HEIGHT = 18
TOP = 26
AXIS_HEIGHT = 30
PLOT_WIDTH = WIDTH - LABEL_WIDTH - RIGHT_MARGIN
NAME_CHARS = 30

#: Fill and text colour per revision (Okabe-Ito colours, each with a legible text colour).
PALETTE = [("#0072B2", "#ffffff"), ("#E69F00", "#000000"), ("#009E73", "#000000"), ("#CC79A7", "#000000"),
           ("#56B4E9", "#000000"), ("#D55E00", "#000000"), ("#F0E442", "#000000"), ("#332288", "#ffffff")]
MIXED = ("#595959", "#ffffff")


def colours(revision: int) -> tuple[str, str]:
    return PALETTE[(revision - 1) % len(PALETTE)]


def nice_step(span: int, ticks: int = 6) -> int:
    """A round step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks over ``span`` runs."""
    raw = max(1.0, span / ticks)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return int(factor * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def _run_range(runs: int | str | None, last: int | None) -> str:
    return f"{runs}" if runs == last else f"{runs}–{'∞' if last is None else last}"


def chart(timeline: dict[str, Any], cursor_run: int | None = None) -> dict[str, Any]:
    """Rows of marks, axis ticks and the cursor for the SVG template."""
    rows_in = timeline["rows"]
    lo = timeline["first_run"] if timeline["run_from"] is None else timeline["run_from"]
    hi = timeline["last_run"] if timeline["run_to"] is None else timeline["run_to"]
    zoomed = timeline["run_from"] is not None or timeline["run_to"] is not None
    if cursor_run is not None and not zoomed:
        lo, hi = min(lo, cursor_run), max(hi, cursor_run)
    hi = max(hi, lo)  # a window starting after the last run still shows one run
    if timeline["open_ended"] and timeline["run_to"] is None:
        hi += max(1, (hi - lo + 1) // 10)  # room to show where open-ended IoVs go on
    span = hi - lo + 1

    def x_of(run: int) -> float:
        return LABEL_WIDTH + (run - lo) / span * PLOT_WIDTH

    rows = []
    for index, row in enumerate(rows_in):
        y = TOP + index * ROW_HEIGHT
        marks: list[dict[str, Any]] = []
        for seg in row["segments"]:
            first = max(seg["first_run"], lo)
            last = hi if seg["last_run"] is None else min(seg["last_run"], hi)
            if first > last:
                continue
            x0, x1 = x_of(first), x_of(last + 1)
            previous = marks[-1] if marks else None
            if (previous is not None and x1 - x0 < 1.0 and previous["thin"]
                    and previous["x"] + previous["w"] >= x0 - 1.0):
                previous["w"] = max(x1 - previous["x"], 1.0)
                previous["count"] += 1
                previous["revisions"].add(seg["revision"])
                previous["last_run"] = seg["last_run"]
                continue
            marks.append({"x": x0, "w": max(x1 - x0, 1.0), "thin": x1 - x0 < 1.0, "count": 1,
                          "revisions": {seg["revision"]}, "first_run": seg["first_run"],
                          "last_run": seg["last_run"], "iov_id": seg["iov_id"],
                          "shadowed": [s["revision"] for s in seg["shadowed"]]})
        for mark in marks:
            if len(mark["revisions"]) == 1:
                revision = next(iter(mark["revisions"]))
                mark["fill"], mark["ink"] = colours(revision)
                mark["label"] = f"r{revision}" if mark["w"] >= 30 else ""
            else:
                mark["fill"], mark["ink"] = MIXED
                mark["label"] = ""
            runs = _run_range(mark["first_run"], mark["last_run"])
            if mark["count"] == 1:
                title = f"{row['name']} r{next(iter(mark['revisions']))} wins in runs {runs}"
                if mark["shadowed"]:
                    title += " over " + ", ".join(f"r{r}" for r in mark["shadowed"])
            else:
                title = (f"{row['name']}: {mark['count']} segments in runs {runs} "
                         f"(revisions {', '.join(f'r{r}' for r in sorted(mark['revisions']))}): zoom in")
            mark["title"] = title
            mark["x"], mark["w"] = round(mark["x"], 2), round(mark["w"], 2)
            del mark["revisions"]
        name = row["name"]
        rows.append({"name": name, "short": name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 1] + "…",
                     "y": y, "marks": marks, "svg": _marks_svg(marks, y)})
    height = TOP + max(1, len(rows)) * ROW_HEIGHT + AXIS_HEIGHT
    axis_y = TOP + max(1, len(rows)) * ROW_HEIGHT + 4
    step = nice_step(span)
    first_tick = -(-lo // step) * step
    ticks = [{"x": round(x_of(run), 2), "run": run} for run in range(first_tick, hi + 1, step)]
    cursor = None
    if cursor_run is not None and lo <= cursor_run <= hi:
        cursor = {"x": round(x_of(cursor_run) + 0.5 * PLOT_WIDTH / span, 2), "run": cursor_run}
    return {"width": WIDTH, "height": height, "plot_left": LABEL_WIDTH, "plot_width": PLOT_WIDTH,
            "run_lo": lo, "run_hi": hi, "rows": rows, "ticks": ticks, "axis_y": axis_y, "top": TOP,
            "bar_height": BAR_HEIGHT, "cursor": cursor, "zoomed": zoomed}


def _marks_svg(marks: list[dict[str, Any]], y: int) -> Markup:
    """The SVG of one row's marks: a bar per mark with its tooltip, the underline where it
    overrides other revisions, and its revision label where the bar is wide enough."""
    parts = []
    for m in marks:
        parts.append(f'<rect x="{m["x"]}" y="{y}" width="{m["w"]}" height="{BAR_HEIGHT}" fill="{m["fill"]}" '
                     f'class="bar" data-iov="{int(m["iov_id"] or 0)}"><title>{escape(m["title"])}</title></rect>')
        if m["shadowed"]:
            parts.append(f'<rect x="{m["x"]}" y="{y + BAR_HEIGHT + 1}" width="{m["w"]}" height="4" class="shadow"/>')
        if m["label"]:
            parts.append(f'<text x="{round(m["x"] + 4, 2)}" y="{y + 13}" fill="{m["ink"]}" class="bar-label">'
                         f'{escape(m["label"])}</text>')
    return Markup("".join(parts))
