"""Intervals of validity: which (experiment, run) points a payload is valid for.

An IoV is ``(first_exp, first_run, final_exp, final_run)``, inclusive at both ends,
with the Belle II conventions for open ends:

* ``final_run = -1``: every run of ``final_exp``;
* ``final_exp = -1`` (and then ``final_run = -1``): open-ended, valid for ever after;
* ``(0, 0, -1, -1)`` is "always".

Internally each end is a point ``(exp, run)`` on a total order in which "-1" becomes
infinity, so containment, overlap, intersection and subtraction are plain tuple
comparisons and the experiment boundaries need no special cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from .exceptions import InvalidIoVError

#: Stands for "-1" (unbounded) in the internal point order. Larger than any run or
#: experiment number that fits the database columns.
_INF = 1 << 62

Point = tuple[int, int]


def _upper(value: int) -> int:
    return _INF if value == -1 else value


def _external(value: int) -> int:
    return -1 if value >= _INF else value


def _check_int(name: str, value: object) -> int:
    # bool is an int subclass; True as a run number is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidIoVError(f"{name} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True, order=False)
class IntervalOfValidity:
    """An inclusive range of (experiment, run) points. Immutable and hashable."""

    first_exp: int
    first_run: int
    final_exp: int = -1
    final_run: int = -1

    def __post_init__(self) -> None:
        fe = _check_int("first_exp", self.first_exp)
        fr = _check_int("first_run", self.first_run)
        le = _check_int("final_exp", self.final_exp)
        lr = _check_int("final_run", self.final_run)
        if fe < 0 or fr < 0:
            raise InvalidIoVError(
                f"first experiment and run must be >= 0, got ({fe}, {fr}); "
                "-1 is only allowed for the final values"
            )
        if le < -1 or lr < -1:
            raise InvalidIoVError(f"final experiment and run must be >= -1, got ({le}, {lr})")
        if le == -1 and lr != -1:
            raise InvalidIoVError(
                f"final_exp = -1 (open-ended) requires final_run = -1, got final_run = {lr}"
            )
        if self.lower > self.upper:
            raise InvalidIoVError(
                f"IoV {self} starts at ({fe}, {fr}), after its final point ({le}, {lr})"
            )

    # -- construction -------------------------------------------------------------

    @classmethod
    def always(cls) -> "IntervalOfValidity":
        return cls(0, 0, -1, -1)

    @classmethod
    def parse(cls, text: str) -> "IntervalOfValidity":
        """Parse ``"FE,FR,LE,LR"`` (also accepts spaces or ``", "`` as separators)."""
        parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
        if len(parts) != 4:
            raise InvalidIoVError(
                f"an IoV needs four integers FIRST_EXP,FIRST_RUN,FINAL_EXP,FINAL_RUN; got {text!r}"
            )
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise InvalidIoVError(f"an IoV needs four integers, got {text!r}") from None
        return cls(*values)

    @classmethod
    def _from_points(cls, lower: Point, upper: Point) -> "IntervalOfValidity":
        return cls(lower[0], lower[1], _external(upper[0]), _external(upper[1]))

    # -- the point order ------------------------------------------------------------

    @property
    def lower(self) -> Point:
        return (self.first_exp, self.first_run)

    @property
    def upper(self) -> Point:
        return (_upper(self.final_exp), _upper(self.final_run))

    @property
    def is_open(self) -> bool:
        """True when valid for ever after its start."""
        return self.final_exp == -1

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.first_exp, self.first_run, self.final_exp, self.final_run)

    def __iter__(self) -> Iterator[int]:
        return iter(self.as_tuple())

    def __str__(self) -> str:
        return f"{self.first_exp},{self.first_run},{self.final_exp},{self.final_run}"

    # -- set operations -----------------------------------------------------------

    def contains(self, exp: int, run: int) -> bool:
        return self.lower <= (exp, run) <= self.upper

    __contains__ = lambda self, point: self.contains(*point)  # noqa: E731

    def covers(self, other: "IntervalOfValidity") -> bool:
        """True when every point of ``other`` is in this IoV."""
        return self.lower <= other.lower and other.upper <= self.upper

    def overlaps(self, other: "IntervalOfValidity") -> bool:
        return self.lower <= other.upper and other.lower <= self.upper

    def intersection(self, other: "IntervalOfValidity") -> "IntervalOfValidity | None":
        lower = max(self.lower, other.lower)
        upper = min(self.upper, other.upper)
        if lower > upper:
            return None
        return self._from_points(lower, upper)

    __and__ = intersection

    def subtract(self, other: "IntervalOfValidity") -> list["IntervalOfValidity"]:
        """The parts of this IoV not in ``other``: zero, one or two IoVs (a split)."""
        if not self.overlaps(other):
            return [self]
        pieces = []
        if self.lower < other.lower:
            pieces.append(self._from_points(self.lower, _point_before(other.lower)))
        if other.upper < self.upper:
            pieces.append(self._from_points(_point_after(other.upper), self.upper))
        return pieces

    __sub__ = subtract


def _point_before(point: Point) -> Point:
    exp, run = point
    if run == 0:
        # The run before (exp, 0) is "every remaining run of exp - 1".
        return (exp - 1, _INF)
    return (exp, run - 1)


def _point_after(point: Point) -> Point:
    exp, run = point
    if run >= _INF:
        return (exp + 1, 0)
    return (exp, run + 1)


IoV = IntervalOfValidity
