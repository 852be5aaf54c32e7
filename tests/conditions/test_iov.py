"""IoV arithmetic, with the Belle II open-end conventions checked point by point."""

import itertools

import pytest

from conditions.exceptions import InvalidIoVError
from conditions.iov import IntervalOfValidity as IoV

# A grid of (exp, run) points around experiment boundaries.
POINTS = [(e, r) for e in range(0, 5) for r in (0, 1, 2, 5, 99, 10**6)]


def brute_contains(iov: IoV, exp: int, run: int) -> bool:
    """Containment written out case by case, independent of the tuple trick in iov.py."""
    fe, fr, le, lr = iov.as_tuple()
    after_start = exp > fe or (exp == fe and run >= fr)
    if le == -1:
        return after_start
    if lr == -1:
        before_end = exp <= le
    else:
        before_end = exp < le or (exp == le and run <= lr)
    return after_start and before_end


IOVS = [
    IoV(0, 0, -1, -1),
    IoV(1, 0, 1, -1),
    IoV(1, 5, 1, 5),
    IoV(1, 2, 3, 1),
    IoV(2, 0, 2, 99),
    IoV(3, 1, -1, -1),
    IoV(0, 0, 0, -1),
    IoV(2, 5, 4, -1),
]


@pytest.mark.parametrize("iov", IOVS, ids=str)
def test_contains_matches_case_by_case_definition(iov):
    for exp, run in POINTS:
        assert iov.contains(exp, run) == brute_contains(iov, exp, run), (iov, exp, run)
        assert ((exp, run) in iov) == brute_contains(iov, exp, run)


def test_final_run_minus_one_covers_every_run_of_final_experiment_only():
    iov = IoV(1, 3, 2, -1)
    assert iov.contains(2, 0) and iov.contains(2, 10**9)
    assert not iov.contains(3, 0)
    assert not iov.contains(1, 2) and iov.contains(1, 3)
    assert not iov.is_open and IoV(1, 3, -1, -1).is_open


def test_always_contains_everything():
    always = IoV.always()
    assert always.as_tuple() == (0, 0, -1, -1)
    assert all(always.contains(e, r) for e, r in POINTS)


@pytest.mark.parametrize("a,b", list(itertools.product(IOVS, IOVS)), ids=lambda x: str(x))
def test_overlap_intersection_and_subtraction_agree_with_points(a, b):
    inside_a = {p for p in POINTS if a.contains(*p)}
    inside_b = {p for p in POINTS if b.contains(*p)}
    assert a.overlaps(b) == b.overlaps(a)
    if inside_a & inside_b:
        assert a.overlaps(b)
    inter = a.intersection(b)
    if inter is None:
        assert not a.overlaps(b)
        assert not (inside_a & inside_b)
    else:
        assert {p for p in POINTS if inter.contains(*p)} == inside_a & inside_b
        assert a.covers(inter) and b.covers(inter)
    pieces = a.subtract(b)
    assert len(pieces) <= 2
    covered = set()
    for piece in pieces:
        assert a.covers(piece)
        assert not piece.overlaps(b)
        covered |= {p for p in POINTS if piece.contains(*p)}
    assert covered == inside_a - inside_b


def test_subtraction_splits_in_two_across_experiment_boundary():
    whole = IoV(1, 0, 3, -1)
    hole = IoV(2, 0, 2, -1)
    assert whole.subtract(hole) == [IoV(1, 0, 1, -1), IoV(3, 0, 3, -1)]
    # a hole starting at run 0 ends the left piece at "every run" of the previous experiment
    assert IoV(1, 0, -1, -1).subtract(IoV(2, 0, 2, 5)) == [IoV(1, 0, 1, -1), IoV(2, 6, -1, -1)]


def test_subtracting_a_covering_iov_leaves_nothing_and_disjoint_leaves_all():
    assert IoV(1, 2, 1, 3).subtract(IoV.always()) == []
    assert IoV(1, 2, 1, 3).subtract(IoV(5, 0, 5, -1)) == [IoV(1, 2, 1, 3)]


@pytest.mark.parametrize(
    "values",
    [
        (2, 0, 1, 0),      # first after final
        (1, 5, 1, 4),      # first run after final run
        (-1, 0, 3, 3),     # negative first experiment
        (0, -1, 3, 3),     # negative first run
        (1, 0, -1, 5),     # final_run set while open-ended
        (1, 0, -2, -1),
        (1, 0, 2, -2),
    ],
)
def test_malformed_iovs_are_refused(values):
    with pytest.raises(InvalidIoVError):
        IoV(*values)


@pytest.mark.parametrize("bad", [(1.0, 0, 2, 0), (True, 0, 2, 0), ("1", 0, 2, 0)])
def test_non_integers_are_refused(bad):
    with pytest.raises(InvalidIoVError):
        IoV(*bad)


def test_parse_round_trip_and_errors():
    assert IoV.parse("1,2,3,4") == IoV(1, 2, 3, 4)
    assert IoV.parse(" 0, 0, -1, -1 ") == IoV.always()
    assert IoV.parse(str(IoV(4, 1, 5, -1))) == IoV(4, 1, 5, -1)
    for text in ["1,2,3", "a,b,c,d", "1,2,3,4,5", ""]:
        with pytest.raises(InvalidIoVError):
            IoV.parse(text)
