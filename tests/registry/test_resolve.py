"""Run-dependent checkpoint resolution from real stores, and the in-process cache."""

from __future__ import annotations

import logging

import pytest
from safetensors.torch import load_file

from conditions.exceptions import NoPayloadFoundError, UnusableTagError
from conditions.iov import IntervalOfValidity as IoV
from registry.admin import publish_tag, upload_checkpoint
from registry.campaigns import Campaign, campaign_tag, create_campaign
from registry.exceptions import ManifestError, ManifestMismatchError, NoCheckpointSourceError
from registry.resolve import CheckpointRegistry, payload_name, requested_tags, resolve_checkpoint


def _counting(store):
    from conditions.source import MetadataSource

    class Counting(MetadataSource):
        description = store.description
        resolves = 0
        listings = 0

        def tag_state(self, tag):
            return store.tag_state(tag)

        def resolve(self, *args, **kwargs):
            type(self).resolves += 1
            return store.resolve(*args, **kwargs)

        def iovs(self, *args, **kwargs):
            type(self).listings += 1
            return store.iovs(*args, **kwargs)

        def fetch_payload(self, payload, destination):
            return store.fetch_payload(payload, destination)

        def local_path(self, payload):
            return store.local_path(payload)

    return Counting()


def _value(resolved) -> float:
    return float(load_file(str(resolved.path))["weight"][0])


def _two_campaigns(store, make_checkpoint):
    """early: exp 1 runs 0-99 (value 1), exp 1 runs 100.. + exp 2 (value 2); late: exp 3+ (value 3)."""
    for name in ("early", "late"):
        create_campaign(store, Campaign(name=name, description=f"{name} conditions"))
    upload_checkpoint(store, make_checkpoint("convnet", 1.0, campaign="early"), model="convnet",
                      campaign="early", iov=IoV(1, 0, 1, 99))
    upload_checkpoint(store, make_checkpoint("convnet", 2.0, campaign="early"), model="convnet",
                      campaign="early", iov=IoV(1, 100, 2, -1))
    upload_checkpoint(store, make_checkpoint("convnet", 3.0, campaign="late"), model="convnet",
                      campaign="late", iov=IoV(3, 0, -1, -1))
    for name in ("early", "late"):
        publish_tag(store, campaign_tag(name))


def test_run_dependent_resolution_across_iov_boundaries(store, make_checkpoint, payload_cache):
    _two_campaigns(store, make_checkpoint)
    registry = CheckpointRegistry([store], use_embedded=False, cache=payload_cache)
    expected = {(1, 0): 1.0, (1, 99): 1.0, (1, 100): 2.0, (2, 0): 2.0, (2, 5000): 2.0}
    for (exp, run), value in expected.items():
        got = registry.resolve("convnet", exp, run, campaign="early")
        assert _value(got) == value, (exp, run)
        assert got.manifest.model == "convnet" and got.tag == campaign_tag("early")
    assert _value(registry.resolve("convnet", 7, 3, campaign="late")) == 3.0
    # A run list spanning both campaigns: campaigns in priority order.
    both = ["late", "early"]
    assert [_value(registry.resolve("convnet", e, r, campaign=both)) for e, r in [(1, 5), (2, 1), (3, 0)]] == [1, 2, 3]
    with pytest.raises(NoPayloadFoundError):
        registry.resolve("convnet", 0, 5, campaign="early")
    with pytest.raises(NoCheckpointSourceError, match="none of the global tags"):
        registry.resolve("convnet", 1, 5, campaign="unknown")


def test_cache_is_exact_across_boundaries_and_overrides(sqlite_store, make_checkpoint, payload_cache):
    store = sqlite_store
    store.create_tag("base")
    store.create_tag("override")
    upload_checkpoint(store, make_checkpoint(value=1.0), model="convnet", globaltag="base", iov=IoV(0, 0, -1, -1))
    # A higher revision in the same tag wins on runs 50-59 only.
    upload_checkpoint(store, make_checkpoint(value=2.0), model="convnet", globaltag="base", iov=IoV(1, 50, 1, 59))
    # A higher-priority tag overrides exp 1 runs 200-299.
    upload_checkpoint(store, make_checkpoint(value=3.0), model="convnet", globaltag="override", iov=IoV(1, 200, 1, 299))
    publish_tag(store, "base")
    publish_tag(store, "override")

    source = _counting(store)
    registry = CheckpointRegistry([source], use_embedded=False, cache=payload_cache)
    tags = ["override", "base"]

    def value(run):
        return _value(registry.resolve("convnet", 1, run, globaltag=tags))

    first = registry.resolve("convnet", 1, 10, globaltag=tags)
    assert first.valid == IoV(0, 0, 1, 49)  # "always", cut where revision 2 takes over
    calls = source.resolves
    assert [value(r) for r in (10, 20, 49)] == [1, 1, 1]
    assert source.resolves == calls  # served from the cache
    # Every boundary is seen, walking forwards and backwards.
    walk = [49, 50, 59, 60, 199, 200, 299, 300, 10, 55, 250, 1000]
    assert [value(r) for r in walk] == [1, 2, 2, 1, 1, 3, 3, 1, 1, 2, 3, 1]
    again = source.resolves
    assert [value(r) for r in walk] == [1, 2, 2, 1, 1, 3, 3, 1, 1, 2, 3, 1]
    assert source.resolves == again  # the second pass is all cache hits
    # Same file, same identity: the generator would not reload.
    assert registry.resolve("convnet", 1, 60, globaltag=tags).payload_key == first.payload_key


def test_a_job_lists_each_tag_once_and_clear_cache_sees_edits(sqlite_store, make_checkpoint, payload_cache):
    """The validity range of each new answer needs the tag's IoV list: it is fetched once
    per (tag, payload), not at every IoV boundary (which would cost a whole-tag listing,
    over the network for a server, per boundary)."""
    store = sqlite_store
    store.create_tag("runs")
    for k in range(20):
        upload_checkpoint(store, make_checkpoint(value=float(k)), model="convnet", globaltag="runs",
                          iov=IoV(1, 10 * k, 1, 10 * k + 9))
    source = _counting(store)
    registry = CheckpointRegistry([source], use_embedded=False, cache=payload_cache, allow_open=True)
    assert [_value(registry.resolve("convnet", 1, run, globaltag="runs")) for run in range(0, 200, 5)] == \
        [float(run // 10) for run in range(0, 200, 5)]
    assert source.resolves == 20 and source.listings == 1
    # The tag is still OPEN: an override added now is seen only after clear_cache().
    upload_checkpoint(store, make_checkpoint(value=99.0), model="convnet", globaltag="runs", iov=IoV(1, 12, 1, 13))
    assert _value(registry.resolve("convnet", 1, 12, globaltag="runs")) == 1.0
    registry.clear_cache()
    assert [_value(registry.resolve("convnet", 1, run, globaltag="runs")) for run in (11, 12, 13, 14)] == [1, 99, 99, 1]
    assert registry.resolve("convnet", 1, 14, globaltag="runs").valid == IoV(1, 14, 1, 19)
    assert source.listings == 2


def test_manifest_mismatch_is_refused(sqlite_store, make_checkpoint, payload_cache):
    store = sqlite_store
    store.create_tag("PXDBackgroundGenerator")
    # A resnet checkpoint that ended up under the convnet payload name (bypassing upload checks).
    store.add_payload(payload_name("convnet"), make_checkpoint("resnet"))
    store.add_iov("PXDBackgroundGenerator", payload_name("convnet"), 1, IoV.always())
    store.create_tag("arch")
    upload_checkpoint(store, make_checkpoint("convnet", architecture_version=7), model="convnet", globaltag="arch")
    store.create_tag("nomanifest")
    store.add_payload(payload_name("convnet"), make_checkpoint(manifest=False))
    store.add_iov("nomanifest", payload_name("convnet"), 3, IoV.always())
    for tag in ("PXDBackgroundGenerator", "arch", "nomanifest"):
        publish_tag(store, tag)

    registry = CheckpointRegistry([store], use_embedded=False, cache=payload_cache)
    with pytest.raises(ManifestMismatchError, match="resnet"):
        registry.resolve("convnet", 0, 0)
    with pytest.raises(ManifestMismatchError, match="architecture version"):
        registry.resolve("convnet", 0, 0, globaltag="arch", architecture_version=1)
    assert registry.resolve("convnet", 0, 0, globaltag="arch", architecture_version=7).manifest.architecture_version == 7
    with pytest.raises(ManifestError, match="no manifest"):
        registry.resolve("convnet", 0, 0, globaltag="nomanifest")


def test_tag_states_are_respected(sqlite_store, make_checkpoint, payload_cache):
    store = sqlite_store
    store.create_tag("wip")
    upload_checkpoint(store, make_checkpoint(), model="convnet", globaltag="wip")
    with pytest.raises(UnusableTagError):
        CheckpointRegistry([store], use_embedded=False, cache=payload_cache).resolve("convnet", 0, 0, globaltag="wip")
    opted_in = CheckpointRegistry([store], use_embedded=False, cache=payload_cache, allow_open=True)
    assert opted_in.resolve("convnet", 0, 0, globaltag="wip").tag == "wip"


def test_sources_from_environment_and_tag_prepending(monkeypatch, tmp_path, make_checkpoint, caplog):
    from conditions.store import open_store

    db = tmp_path / "env.db"
    with open_store(db) as store:
        for tag, value in (("PXDBackgroundGenerator", 1.0), ("candidate", 2.0)):
            store.create_tag(tag)
            upload_checkpoint(store, make_checkpoint(value=value), model="convnet", globaltag=tag)
            publish_tag(store, tag)
    monkeypatch.setenv("PXDBG_CONDITIONS", f"sqlite:///{db}")
    monkeypatch.setenv("PXDBG_NO_EMBEDDED", "1")
    with caplog.at_level(logging.INFO, logger="registry.resolve"):
        got = resolve_checkpoint("convnet", 5, 5)
    assert _value(got) == 1.0 and got.source == f"sqlite:///{db}"
    assert f"from sqlite:///{db}" in caplog.text
    monkeypatch.setenv("PXDBG_GLOBALTAGS", "candidate")
    assert requested_tags() == ("candidate", "PXDBackgroundGenerator")
    assert _value(resolve_checkpoint("convnet", 5, 5)) == 2.0


def test_bad_arguments():
    registry = CheckpointRegistry(["/nonexistent/x.db"], use_embedded=False)
    with pytest.raises(ValueError):
        registry.resolve("convnet", -1, 0)
    with pytest.raises(TypeError):
        registry.resolve(None, 0, 0)
    with pytest.raises(ValueError):
        CheckpointRegistry([], use_embedded=False)
