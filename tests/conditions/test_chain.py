"""Chains of real sources: testing payloads over a snapshot over a store."""

from __future__ import annotations

import hashlib

import pytest

from conditions.cache import PayloadCache
from conditions.chain import MetadataChain
from conditions.exceptions import (
    InvalidNameError,
    NoPayloadFoundError,
    UnknownPayloadError,
    UnknownTagError,
    UnusableTagError,
)
from conditions.iov import IntervalOfValidity as IoV
from conditions.snapshot import SnapshotSource, export_snapshot
from conditions.testing_payloads import TestingPayloadsSource
from conditions.tags import GlobalTagState

from .test_snapshot_basf2 import write_basf2_snapshot

NAME = "PXDBackgroundGenerator_resnet"


@pytest.fixture
def layered(sqlite_store, tmp_path):
    """store: RUNNING tags 'prod' and 'newer'; snapshot: 'prod' only, taken before 'prod'
    gained an IoV for exp 6+; testing payloads override NAME in exp 1."""
    store = sqlite_store
    store_bytes = b"store checkpoint"
    p = store.add_payload(NAME, store_bytes, filename="ckpt.safetensors")
    q = store.add_payload("BeamSpot", b"beam spot", filename="bs.root")
    store.create_tag("prod")
    store.add_iov("prod", NAME, p.revision, IoV(0, 0, 5, -1))
    store.add_iov("prod", "BeamSpot", q.revision, IoV(0, 0, -1, -1))
    store.set_tag_state("prod", "RUNNING")
    store.create_tag("newer")
    store.add_iov("newer", NAME, p.revision, IoV(0, 0, -1, -1))
    store.set_tag_state("newer", "RUNNING")
    export_snapshot(store, ["prod"], tmp_path / "snap")
    # after the snapshot was taken, 'prod' (RUNNING) gains IoVs for later runs
    r = store.add_payload(NAME, b"store checkpoint for exp 6+", filename="ckpt.safetensors")
    store.add_iov("prod", NAME, r.revision, IoV(6, 0, -1, -1))

    over = tmp_path / "overrides"
    over.mkdir()
    (over / f"dbstore_{NAME}_rev_1.safetensors").write_bytes(b"my local test checkpoint")
    (over / "database.txt").write_text(f"dbstore/{NAME} 1 1,0,1,-1\n")
    testing = TestingPayloadsSource(over / "database.txt")
    snap = SnapshotSource(tmp_path / "snap")
    chain = MetadataChain([testing, snap, store])
    yield chain, testing, snap, store
    snap.close()


def test_overrides_win_then_snapshot_then_store(layered, tmp_path):
    chain, testing, snap, store = layered
    cache = PayloadCache(tmp_path / "cache")
    got = chain.resolve(["prod"], NAME, 1, 5)
    assert got.source == testing.description
    assert cache.get(got.payload, chain).read_bytes() == b"my local test checkpoint"

    got = chain.resolve(["prod"], NAME, 2, 5)
    assert got.source == snap.description
    assert cache.get(got.payload, chain).parent.parent == snap.directory

    # the snapshot knows 'prod' but has no IoV for exp 7: the store answers (its newer IoV)
    got = chain.resolve(["prod"], NAME, 7, 0)
    assert got.source == store.description and got.payload.revision == 2
    assert cache.get(got.payload, chain).read_bytes() == b"store checkpoint for exp 6+"

    # the snapshot does not hold 'newer' at all: the store answers
    got = chain.resolve(["newer"], NAME, 2, 5)
    assert got.source == store.description
    # a tag list the snapshot only partly holds goes to the store as a whole
    got = chain.resolve(["newer", "prod"], "BeamSpot", 0, 0)
    assert got.source == store.description and got.tag == "prod"
    assert hashlib.md5(cache.get(got.payload, chain).read_bytes()).hexdigest() == got.payload.checksum


def test_no_match_anywhere_names_every_source(layered):
    chain, testing, snap, store = layered
    with pytest.raises(NoPayloadFoundError) as err:
        chain.resolve(["prod"], "Nothing", 0, 0)
    message = str(err.value)
    for source in (testing, snap, store):
        assert source.description in message
    assert [type(e) for _, e in err.value.reasons] == [NoPayloadFoundError] * 3

    with pytest.raises(UnknownTagError) as err:
        chain.resolve(["no_such_tag"], "BeamSpot", 0, 0)
    assert [type(e) for _, e in err.value.reasons] == [NoPayloadFoundError, UnknownTagError, UnknownTagError]


def test_invalid_tag_stops_the_chain(tmp_path, sqlite_store):
    # a basf2 snapshot holding 'broken_tag' as INVALID, a store with a usable 'broken_tag'
    write_basf2_snapshot(tmp_path / "snap")
    sqlite_store.add_payload("BeamParameters", b"usable elsewhere")
    sqlite_store.create_tag("broken_tag")
    sqlite_store.add_iov("broken_tag", "BeamParameters", 1, IoV(0, 0, -1, -1))
    sqlite_store.set_tag_state("broken_tag", "RUNNING")
    with SnapshotSource(tmp_path / "snap") as snap:
        chain = MetadataChain([snap, sqlite_store])
        with pytest.raises(UnusableTagError, match="INVALID"):
            chain.resolve("broken_tag", "BeamParameters", 0, 0)
        # in the other order the store answers first, as asked
        assert MetadataChain([sqlite_store, snap]).resolve("broken_tag", "BeamParameters", 0, 0).payload.revision == 1


def test_tag_state_and_iovs_come_from_the_first_source_holding_the_tag(layered):
    chain, testing, snap, store = layered
    assert chain.tag_state("newer") is GlobalTagState.RUNNING
    assert [r.payload.revision for r in chain.iovs("prod", name=NAME)] == [1]  # the snapshot's view
    assert len(chain.iovs("newer")) == 1
    with pytest.raises(UnknownTagError):
        chain.iovs("nope")


def test_bad_names_are_errors_not_fall_throughs(layered):
    chain, *_ = layered
    with pytest.raises(InvalidNameError):
        chain.resolve(["prod"], "../../etc/passwd", 0, 0)


def test_fetch_falls_back_when_the_owner_lost_the_bytes(layered, tmp_path):
    chain, testing, snap, store = layered
    got = chain.resolve(["prod"], NAME, 2, 5)
    assert got.source == snap.description
    snap.local_path(got.payload).unlink()  # the snapshot lost its file
    path = PayloadCache(tmp_path / "cache").get(got.payload, chain)
    assert path.read_bytes() == b"store checkpoint"
    lost = type(got.payload)(**{**got.payload.__dict__, "name": "Ghost", "checksum": "0" * 32, "sha256": None})
    with pytest.raises(UnknownPayloadError, match="no source has the bytes"):
        chain.fetch_payload(lost, tmp_path / "x")


def test_empty_chain_is_refused():
    with pytest.raises(ValueError):
        MetadataChain([])
