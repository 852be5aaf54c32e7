"""Resolution checked at many (exp, run) points against a brute-force reference, on both
backends, through both code paths: the SQL query (OPEN/RUNNING tags, or cache off) and
the in-process bisect index (frozen tags)."""

from __future__ import annotations

import random

import pytest

from conditions import (
    IntervalOfValidity as IoV,
    InvalidValueError,
    NoPayloadFoundError,
    UnknownTagError,
    UnusableTagError,
)

# Points around every boundary used below, including huge run numbers.
POINTS = [(e, r) for e in range(0, 7) for r in (0, 1, 4, 5, 6, 9, 10, 11, 99, 100, 101, 2**31 - 1)]

# (payload revision, IoV) per tag: spans over experiments, single runs, open runs, open
# experiments, and overlaps where the higher revision must win.
LAYOUT = {
    "prio": [
        (3, IoV(2, 5, 2, 5)),          # a single run
        (1, IoV(4, 0, 4, -1)),         # an open run range: all of exp 4
    ],
    "base": [
        (1, IoV(0, 0, -1, -1)),        # always
        (2, IoV(1, 10, 3, 100)),       # spans experiments
        (4, IoV(2, 0, 2, -1)),         # all of exp 2, higher revision than rev 2 inside it
        (3, IoV(2, 5, 2, 6)),          # overlapped by rev 4: never wins
        (5, IoV(5, 100, -1, -1)),      # open-ended from (5, 100)
        (2, IoV(6, 0, 6, 9)),          # lower revision than 5 inside an overlap: loses
    ],
    "sparse": [
        (1, IoV(1, 0, 1, 4)),
        (2, IoV(1, 11, 2, 0)),
        (5, IoV(3, 101, 3, -1)),
    ],
}


def reference(tags: list[str], exp: int, run: int):
    """(tag, revision, iov) by the rule in DESIGN.md, or None."""
    for tag in tags:
        matches = [(rev, iov) for rev, iov in LAYOUT[tag] if iov.contains(exp, run)]
        if matches:
            rev, iov = max(matches, key=lambda m: m[0])
            return tag, rev, iov
    return None


def build(store):
    for rev in range(1, 6):
        store.add_payload("Calib", f"calibration revision {rev}".encode())
    for tag, iovs in LAYOUT.items():
        store.create_tag(tag)
        for rev, iov in iovs:
            store.add_iov(tag, "Calib", rev, iov)


ORDERS = [["prio", "base"], ["base"], ["sparse"], ["sparse", "prio", "base"], ["prio"]]


def check_all_points(store, *, allow_open=False):
    checked = 0
    for tags in ORDERS:
        for exp, run in POINTS:
            expected = reference(tags, exp, run)
            if expected is None:
                with pytest.raises(NoPayloadFoundError):
                    store.resolve(tags, "Calib", exp, run, allow_open=allow_open)
                continue
            got = store.resolve(tags, "Calib", exp, run, allow_open=allow_open)
            assert (got.tag, got.payload.revision, got.iov) == expected, (tags, exp, run)
            assert got.iov.contains(exp, run)
            assert got.payload.name == "Calib" and got.payload.checksum
            checked += 1
    assert checked > 200


@pytest.mark.parametrize("states", [("OPEN",), ("TESTING",), ("RUNNING",), ("TESTING", "VALIDATED", "PUBLISHED")])
def test_resolution_at_many_points(store, states):
    build(store)
    for tag in LAYOUT:
        for state in states:
            if state != "OPEN":
                store.set_tag_state(tag, state)
    check_all_points(store, allow_open=True)
    check_all_points(store, allow_open=True)  # again: now from the warm cache where allowed


def test_resolution_without_cache_matches(store_url):
    store = store_url.open(cache=False)
    try:
        build(store)
        for tag in LAYOUT:
            store.set_tag_state(tag, "TESTING")
        check_all_points(store)
        assert store._index_cache == {} and store._tag_cache == {}
    finally:
        store.close()


def test_random_layouts_cache_and_sql_agree(store):
    """Random overlapping IoVs: the bisect index and the SQL query give the same answer."""
    rng = random.Random(1234)
    for rev in range(1, 9):
        store.add_payload("R", f"r{rev}".encode())
    store.create_tag("rand")
    layout = []
    for _ in range(40):
        fe = rng.randint(0, 4)
        fr = rng.choice([0, 1, 5, 10, 50])
        kind = rng.random()
        if kind < 0.15:
            iov = IoV(fe, fr, -1, -1)
        elif kind < 0.4:
            iov = IoV(fe, fr, fe + rng.randint(0, 2), -1)
        else:
            le = fe + rng.randint(0, 1)
            lr = rng.choice([0, 1, 5, 10, 50, 60])
            if (le, lr) < (fe, fr):
                le, lr = fe, fr
            iov = IoV(fe, fr, le, lr)
        rev = rng.randint(1, 8)
        store.add_iov("rand", "R", rev, iov)
        layout.append((rev, iov))
    points = [(e, r) for e in range(0, 7) for r in (0, 1, 2, 5, 9, 10, 11, 49, 50, 51, 60, 61, 1000)]

    def expected(exp, run):
        matches = [(rev, iov) for rev, iov in layout if iov.contains(exp, run)]
        return max(m[0] for m in matches) if matches else None

    open_answers = {}
    for exp, run in points:
        try:
            open_answers[(exp, run)] = store.resolve("rand", "R", exp, run, allow_open=True).payload.revision
        except NoPayloadFoundError:
            open_answers[(exp, run)] = None
        assert open_answers[(exp, run)] == expected(exp, run), (exp, run)
    store.set_tag_state("rand", "TESTING")
    for exp, run in points:
        try:
            got = store.resolve("rand", "R", exp, run).payload.revision
        except NoPayloadFoundError:
            got = None
        assert got == open_answers[(exp, run)], (exp, run)


def test_distinct_errors_for_unknown_unusable_and_no_match(store):
    build(store)
    with pytest.raises(UnknownTagError, match="nosuchtag"):
        store.resolve(["base", "nosuchtag"], "Calib", 1, 1, allow_open=True)
    with pytest.raises(UnknownTagError):
        store.resolve([], "Calib", 1, 1)
    with pytest.raises(UnusableTagError, match="OPEN"):
        store.resolve("base", "Calib", 1, 1)
    store.set_tag_state("base", "RUNNING")
    store.set_tag_state("base", "INVALID")
    with pytest.raises(UnusableTagError, match="INVALID"):
        store.resolve("base", "Calib", 1, 1, allow_open=True)
    # an unusable tag anywhere in the list is an error, even if a better tag would match
    with pytest.raises(UnusableTagError):
        store.resolve(["prio", "base"], "Calib", 2, 5, allow_open=True)
    store.set_tag_state("sparse", "TESTING")
    with pytest.raises(NoPayloadFoundError, match="Unknown"):
        store.resolve("sparse", "Unknown", 1, 1)
    with pytest.raises(NoPayloadFoundError):
        store.resolve("sparse", "Calib", 0, 3)
    for exp, run in ((-1, 0), (0, -5), (1.5, 0), ("1", 2), (True, 1)):
        with pytest.raises(InvalidValueError):
            store.resolve("sparse", "Calib", exp, run)


def test_open_and_running_tags_are_never_stale(store, store_url):
    """Writes through a second store object (another process, in effect) are seen at once
    for OPEN and RUNNING tags."""
    other = store_url.open()
    try:
        store.create_tag("live")
        store.add_payload("P", b"one")
        store.add_payload("P", b"two")
        other.add_iov("live", "P", 1, IoV(0, 0, 0, 10))
        assert store.resolve("live", "P", 0, 5, allow_open=True).payload.revision == 1
        other.add_iov("live", "P", 2, IoV(0, 0, 0, 10))
        assert store.resolve("live", "P", 0, 5, allow_open=True).payload.revision == 2
        other.set_tag_state("live", "RUNNING")
        assert store.resolve("live", "P", 0, 5).payload.revision == 2
        with pytest.raises(NoPayloadFoundError):
            store.resolve("live", "P", 0, 11)
        other.add_iov("live", "P", 1, IoV(0, 11, -1, -1))
        assert store.resolve("live", "P", 0, 11).payload.revision == 1
    finally:
        other.close()


def test_frozen_tag_cache_follows_serial_after_ttl(store_url):
    """A frozen tag reopened and changed elsewhere is seen once the cached tag row expires
    (cache_ttl=0: on the next call)."""
    store = store_url.open(cache_ttl=0)
    other = store_url.open()
    try:
        store.create_tag("gt")
        store.add_payload("P", b"one")
        store.add_payload("P", b"two")
        store.add_iov("gt", "P", 1, IoV.always())
        store.set_tag_state("gt", "TESTING")
        assert store.resolve("gt", "P", 3, 3).payload.revision == 1
        other.set_tag_state("gt", "OPEN")
        other.add_iov("gt", "P", 2, IoV(3, 0, 3, -1))
        other.set_tag_state("gt", "TESTING")
        assert store.resolve("gt", "P", 3, 3).payload.revision == 2
        assert store.resolve("gt", "P", 4, 3).payload.revision == 1
        other.set_tag_state("gt", "OPEN")
        with pytest.raises(UnusableTagError):
            store.resolve("gt", "P", 3, 3)
    finally:
        store.close()
        other.close()


def test_own_writes_invalidate_the_cache(store):
    store.create_tag("gt")
    store.add_payload("P", b"one")
    store.add_payload("P", b"two")
    store.add_iov("gt", "P", 1, IoV.always())
    store.set_tag_state("gt", "TESTING")
    assert store.resolve("gt", "P", 1, 1).payload.revision == 1
    store.set_tag_state("gt", "OPEN")
    store.add_iov("gt", "P", 2, IoV(1, 0, 1, -1))
    store.set_tag_state("gt", "TESTING")
    assert store.resolve("gt", "P", 1, 1).payload.revision == 2
