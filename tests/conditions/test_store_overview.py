"""The overview queries behind the web pages, on SQLite and PostgreSQL: they give what the
Store base class computes the slow way."""

from __future__ import annotations

from conditions.iov import IntervalOfValidity as IoV
from conditions.store.base import Store, TagCounts


def test_tag_counts_and_payload_usage_match_the_generic_answers(store):
    store.create_tag("empty")
    store.create_tag("a")
    store.create_tag("b")
    for i in range(3):
        store.add_payload("X", f"x{i}".encode())
    store.add_payload("Y", b"y")
    store.add_iov("a", "X", 1, IoV(0, 0, 0, 10))
    store.add_iov("a", "X", 2, IoV(0, 5, 0, 20))
    store.add_iov("a", "Y", 1, IoV(0, 0, -1, -1))
    store.add_iov("b", "X", 2, IoV(1, 0, 1, -1))
    store.add_iov("b", "X", 2, IoV(2, 0, 2, -1))

    counts = store.tag_counts()
    assert counts == {"empty": TagCounts(0, 0), "a": TagCounts(3, 2), "b": TagCounts(2, 1)}
    assert counts == Store.tag_counts(store)

    used = store.iovs_of_payload("X", 2)
    assert [(r.tag, r.iov.as_tuple()) for r in used] == [("a", (0, 5, 0, 20)), ("b", (1, 0, 1, -1)),
                                                          ("b", (2, 0, 2, -1))]
    assert all(r.payload.revision == 2 and r.payload.name == "X" for r in used)
    assert [r.iov_id for r in used] == [r.iov_id for r in Store.iovs_of_payload(store, "X", 2)]
    assert store.iovs_of_payload("X", 3) == [] and store.iovs_of_payload("Nope", 1) == []


def test_audit_filtered_by_user(store):
    store.create_tag("t1", user="alice")
    store.create_tag("t2", user="bob")
    store.create_tag("t3", user="alice")
    assert [(e.who, e.tag) for e in store.audit(who="alice")] == [("alice", "t3"), ("alice", "t1")]
    assert [e.tag for e in store.audit(who="alice", tag="t1")] == ["t1"]
    assert store.audit(who="carol") == []
    assert len(store.audit(who="alice", limit=1)) == 1
