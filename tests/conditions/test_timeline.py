"""The timeline model agrees with the store's own resolution at every run."""

from __future__ import annotations

import random

import pytest

from conditions import timeline as tl
from conditions.exceptions import NoPayloadFoundError
from conditions.iov import IntervalOfValidity as IoV


def _random_tag(store, seed: int):
    rng = random.Random(seed)
    store.create_tag("T")
    for revision in range(1, 7):
        store.add_payload("P", f"bytes {revision}".encode())
        store.add_payload("Q", f"other {revision}".encode())
    for _ in range(25):
        name = rng.choice("PQ")
        first_exp = rng.randint(0, 2)
        first_run = rng.randint(0, 40)
        kind = rng.random()
        if kind < 0.15:
            final = (-1, -1)
        elif kind < 0.3:
            final = (first_exp + rng.randint(0, 1), -1)
        else:
            final_exp = first_exp + (1 if rng.random() < 0.2 else 0)
            final_run = rng.randint(first_run if final_exp == first_exp else 0, 60)
            final = (final_exp, final_run)
        store.add_iov("T", name, rng.randint(1, 6), IoV(first_exp, first_run, *final))


@pytest.mark.parametrize("seed", [1, 7, 11])
def test_timeline_and_point_answers_match_the_store(sqlite_store, seed):
    _random_tag(sqlite_store, seed=seed)
    records = sqlite_store.iovs("T")
    for exp in (0, 1, 2, 3):
        rows = {row.name: row for row in tl.timeline(records, exp)}
        at_runs = list(range(0, 70)) + [10**6]
        for run in at_runs:
            answers = {a.name: a for a in tl.at_point(records, exp, run)}
            for name in "PQ":
                try:
                    expected = sqlite_store.resolve("T", name, exp, run, allow_open=True)
                except NoPayloadFoundError:
                    expected = None
                segment = next((s for s in rows[name].segments
                                if s.first_run <= run and (s.last_run is None or run <= s.last_run)), None) \
                    if name in rows else None
                if expected is None:
                    assert segment is None and name not in answers, (exp, run, name)
                    continue
                assert segment is not None, (exp, run, name)
                assert segment.winner.iov_id == expected.iov_id, (exp, run, name)
                assert answers[name].winner.iov_id == expected.iov_id
                # every other IoV valid there is listed as overridden, none twice
                valid = {r.iov_id for r in records if r.payload.name == name and r.iov.contains(exp, run)}
                assert {s.iov_id for s in segment.shadowed} == valid - {expected.iov_id}


def test_segments_are_ordered_disjoint_and_merged(sqlite_store):
    _random_tag(sqlite_store, seed=3)
    for row in tl.timeline(sqlite_store.iovs("T"), 0):
        for a, b in zip(row.segments, row.segments[1:]):
            assert a.last_run is not None and a.last_run < b.first_run
            if a.last_run + 1 == b.first_run:  # touching segments differ in what they show
                assert (a.winner.iov_id, [s.iov_id for s in a.shadowed]) != \
                       (b.winner.iov_id, [s.iov_id for s in b.shadowed])


def test_experiment_edges_and_span(sqlite_store):
    sqlite_store.create_tag("E")
    p = sqlite_store.add_payload("P", b"x")
    sqlite_store.add_iov("E", "P", p.revision, IoV(1, 5, 3, 7))
    records = sqlite_store.iovs("E")
    assert tl.experiments(records) == [1, 3]
    assert [(s.first_run, s.last_run) for s in tl.timeline(records, 1)[0].segments] == [(5, None)]
    assert [(s.first_run, s.last_run) for s in tl.timeline(records, 2)[0].segments] == [(0, None)]
    assert [(s.first_run, s.last_run) for s in tl.timeline(records, 3)[0].segments] == [(0, 7)]
    assert tl.timeline(records, 0) == [] and tl.timeline(records, 4) == []
    assert tl.run_span(tl.timeline(records, 3)) == (0, 7, False)
    assert tl.run_span(tl.timeline(records, 1)) == (5, 5, True)
    assert tl.run_span([]) == (0, 0, False)
