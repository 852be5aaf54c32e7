"""Source order: configured sources first (a server, a snapshot, ...), the embedded demo
store only when nothing is configured or the user opted in. A source that does not know
the tag is skipped; a source that fails stops the job, unless failover was asked for."""

from __future__ import annotations

import logging

import pytest
from safetensors.torch import load_file

from conditions.snapshot import export_snapshot
from conditions.store import open_store
from registry.admin import publish_tag, upload_checkpoint
from registry.embedded import EMBEDDED_STORE_DIR
from registry.exceptions import NoCheckpointSourceError, SourceFailedError
from registry.resolve import CheckpointRegistry

from .conftest import LiveServer, free_port

FAST = {"retries": 0, "timeout": 2.0, "total_timeout": 5.0}


@pytest.fixture
def sources(tmp_path, make_checkpoint):
    """A store whose default tag holds a tiny convnet checkpoint (value 5), a snapshot of
    it, and a snapshot of an unrelated tag."""
    db = tmp_path / "main.db"
    with open_store(db) as store:
        for tag, value in (("PXDBackgroundGenerator", 5.0), ("other", 6.0)):
            store.create_tag(tag)
            upload_checkpoint(store, make_checkpoint(value=value), model="convnet", globaltag=tag)
            publish_tag(store, tag)
        export_snapshot(store, ["PXDBackgroundGenerator"], tmp_path / "snapshot")
        export_snapshot(store, ["other"], tmp_path / "unrelated")
    return db, tmp_path / "snapshot", tmp_path / "unrelated"


def _weight(found) -> float:
    return float(load_file(str(found.path))["weight"][0])


def test_server_then_down_then_snapshot_then_embedded(sources, tmp_path, caplog, payload_cache):
    db, snapshot, unrelated = sources
    server = LiveServer(db, tmp_path / "server.log")
    try:
        with caplog.at_level(logging.INFO, logger="registry.resolve"):
            found = CheckpointRegistry([server.url, snapshot], cache=payload_cache,
                                       client_options=FAST).resolve("convnet", 3, 7)
        assert found.source == server.url and _weight(found) == 5.0 and not found.demo
        assert f"from {found.source}" in caplog.text and "WARNING" not in caplog.text
    finally:
        server.stop()
    caplog.clear()

    # The same configuration with the server down: an error naming the server, not the
    # snapshot's answer (that is failover, which must be asked for).
    with pytest.raises(SourceFailedError, match="refused") as failed:
        CheckpointRegistry([server.url, snapshot], cache=payload_cache, client_options=FAST).resolve("convnet", 3, 7)
    assert server.url in str(failed.value) and "--failover" in str(failed.value)

    # With failover the snapshot answers, and the reason is logged.
    with caplog.at_level(logging.INFO, logger="registry.resolve"):
        found = CheckpointRegistry([server.url, snapshot], cache=payload_cache, client_options=FAST,
                                   failover=True).resolve("convnet", 3, 7)
    assert found.source.startswith("snapshot:") and _weight(found) == 5.0
    failure = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failure) == 1 and server.url in failure[0].getMessage()
    assert "failed" in failure[0].getMessage() and "refused" in failure[0].getMessage().lower()
    caplog.clear()

    # Server down, the snapshot without the tag, a path that is not there: with failover
    # and the demo opt-in, the embedded store answers (flagged demo).
    missing = tmp_path / "no-such-snapshot"
    with caplog.at_level(logging.INFO, logger="registry.resolve"):
        found = CheckpointRegistry([server.url, unrelated, missing], cache=payload_cache, client_options=FAST,
                                   failover=True, allow_demo=True).resolve("convnet", 3, 7, architecture_version=1)
    assert found.source == "embedded default store" and found.demo
    assert found.path.is_relative_to(EMBEDDED_STORE_DIR) and found.valid.as_tuple() == (0, 0, -1, -1)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 3
    assert server.url in messages[0]
    assert str(missing) in messages[1] and "NotAStoreError" in messages[1]
    assert messages[2].startswith("DEMO CHECKPOINT") and "NOT a physics background model" in messages[2]
    skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "skipped" in r.getMessage()]
    assert len(skipped) == 1 and str(unrelated) in skipped[0] and "none of the global tags PXDBackgroundGenerator" in skipped[0]
    assert any("embedded default store" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_without_embedded_every_attempt_is_reported(sources, payload_cache):
    _db, _snapshot, unrelated = sources
    dead = f"http://127.0.0.1:{free_port()}"
    registry = CheckpointRegistry([dead, unrelated], use_embedded=False, cache=payload_cache, client_options=FAST,
                                  failover=True)
    with pytest.raises(NoCheckpointSourceError) as info:
        registry.resolve("convnet", 1, 1)
    assert [where for where, _ in info.value.attempts][0].startswith(dead)
    assert "none of the global tags" in info.value.attempts[1][1]


def test_env_configured_sources_exclude_embedded_unless_opted_in(sources, monkeypatch, payload_cache):
    db, snapshot, _ = sources
    monkeypatch.setenv("PXDBG_CONDITIONS", f"{snapshot}")
    registry = CheckpointRegistry(cache=payload_cache)
    assert registry.source_descriptions == [str(snapshot)]
    assert _weight(registry.resolve("convnet", 9, 9)) == 5.0
    monkeypatch.setenv("PXDBG_ALLOW_DEMO", "1")
    assert CheckpointRegistry(cache=payload_cache).source_descriptions[-1] == "embedded default store"
