"""A production job makes events with exactly the checkpoint it was configured for, or
stops with an error (issue 11, item 1). Each trigger of the silent fallback to the demo
weights, end to end through ``pxdbg generate`` with real stores, snapshots and servers."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conditions.snapshot import export_snapshot
from conditions.store import open_store
from pxdbg import provenance
from pxdbg.cli import main
from pxdbg.digits import DigitsReader
from pxdbg.models.loading import save_generator
from pxdbg.placeholders import untrained_checkpoint
from registry.admin import publish_tag, upload_checkpoint
from tests.pxdbg.tiny_models import tiny_convnet

from .conftest import LiveServer, free_port

torch.set_num_threads(1)


@pytest.fixture
def production(tmp_path):
    """A store whose default tag holds a (tiny, but "trained") convnet checkpoint."""
    db = tmp_path / "prod.db"
    file = save_generator(tmp_path / "prod.safetensors", "convnet", tiny_convnet(5), training_steps=5000)
    with open_store(db) as store:
        store.create_tag("PXDBackgroundGenerator")
        info = upload_checkpoint(store, file, model="convnet", globaltag="PXDBackgroundGenerator")
        publish_tag(store, "PXDBackgroundGenerator")
    return db, info


def generate(tmp_path, *args: str, env: dict[str, str] | None = None):
    out = tmp_path / "out.h5"
    out.unlink(missing_ok=True)
    # The stores below hold convnet checkpoints (a later --model in args wins).
    result = CliRunner().invoke(main, ["generate", "--model", "convnet", "--events", "1", "--exp", "0", "--run", "0",
                                       "--seed", "1", "--no-progress", "-o", str(out), *args], env=env)
    return result, out


def _checkpoints(out):
    with DigitsReader(out) as reader:
        return provenance.read(reader)["checkpoints"]


def test_damaged_bytes_on_the_server_stop_the_job(production, tmp_path, monkeypatch):
    db, info = production
    blob = db.with_name(db.name + ".payloads") / "sha256" / info.payload.sha256[:2] / info.payload.sha256
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    server = LiveServer(db, tmp_path / "server.log")
    try:
        monkeypatch.setenv("PXDBG_CONDITIONS", server.url)
        result, out = generate(tmp_path)
    finally:
        server.stop()
    assert result.exit_code == 1, result.output
    assert "failed" in result.output and server.url in result.output and "DEMO" not in result.output
    assert not out.exists()


def test_a_server_without_the_tag_is_no_reason_for_demo_weights(tmp_path, monkeypatch):
    db = tmp_path / "empty.db"
    with open_store(db) as store:
        store.create_tag("other")
    server = LiveServer(db, tmp_path / "server.log")
    try:
        monkeypatch.setenv("PXDBG_CONDITIONS", server.url)
        result, out = generate(tmp_path)
        assert result.exit_code == 1 and "none of the global tags" in result.output
        assert "--allow-demo" in result.output and not out.exists()
        # Opting in: the demo store answers, loudly, and the file says so.
        result, out = generate(tmp_path, "--allow-demo")
        assert result.exit_code == 0, result.output
        assert "DEMO checkpoint, not a physics model" in result.output
        [record] = _checkpoints(out)
        assert record["demo"] and record["source"] == "embedded default store"
        # The same opt-in from the environment (resolving only: generating is the slow part).
        resolve = ["checkpoint", "resolve", "--model", "convnet", "--exp", "0", "--run", "0"]
        assert CliRunner().invoke(main, resolve).exit_code == 1
        monkeypatch.setenv("PXDBG_ALLOW_DEMO", "1")
        shown = CliRunner().invoke(main, resolve)
        assert shown.exit_code == 0 and "from embedded default store [DEMO]" in shown.output
    finally:
        server.stop()


def test_a_server_that_is_down_stops_the_job_unless_failover_is_asked(production, tmp_path, monkeypatch):
    db, _info = production
    with open_store(db) as store:
        export_snapshot(store, ["PXDBackgroundGenerator"], tmp_path / "snapshot")
    dead = f"http://127.0.0.1:{free_port()}"
    result, out = generate(tmp_path, "--source", dead, "--source", str(tmp_path / "snapshot"))
    assert result.exit_code == 1 and dead in result.output and "--failover" in result.output
    assert not out.exists()
    result, out = generate(tmp_path, "--source", dead, "--source", str(tmp_path / "snapshot"), "--failover")
    assert result.exit_code == 0, result.output
    [record] = _checkpoints(out)
    assert record["source"].startswith("snapshot:") and not record["demo"]


def test_a_typo_in_the_configured_sources_stops_the_job(tmp_path, monkeypatch):
    monkeypatch.setenv("PXDBG_CONDITIONS", str(tmp_path / "conditons.db"))
    result, out = generate(tmp_path)
    assert result.exit_code == 1 and "conditons.db" in result.output and not out.exists()


def test_an_unusable_cache_stops_the_job(production, tmp_path, monkeypatch):
    db, _info = production
    server = LiveServer(db, tmp_path / "server.log")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    try:
        monkeypatch.setenv("PXDBG_CONDITIONS", server.url)
        # (A read-only directory would do on a normal account; root may write anywhere,
        # but nobody can create a directory below a regular file.)
        monkeypatch.setenv("CONDITIONS_CACHE_DIR", str(blocker / "cache"))
        result, out = generate(tmp_path)
    finally:
        server.stop()
    assert result.exit_code == 1 and "failed" in result.output and not out.exists()


def test_an_unreadable_snapshot_file_stops_the_job(production, tmp_path, monkeypatch):
    db, _info = production
    with open_store(db) as store:
        report = export_snapshot(store, ["PXDBackgroundGenerator"], tmp_path / "snapshot")
    [payload_file] = report.files
    payload_file.unlink()
    payload_file.mkdir()  # the name is there, but it cannot be read as a file
    monkeypatch.setenv("PXDBG_CONDITIONS", str(tmp_path / "snapshot"))
    result, out = generate(tmp_path)
    assert result.exit_code == 1 and "failed" in result.output and not out.exists()


def test_a_payload_a_source_does_not_have_moves_on_to_the_next_source(production, tmp_path):
    db, info = production
    other = tmp_path / "resnet-only.db"
    resnet = save_generator(tmp_path / "r.safetensors", "resnet", get_tiny_resnet(), training_steps=10)
    with open_store(other) as store:
        store.create_tag("PXDBackgroundGenerator")
        upload_checkpoint(store, resnet, model="resnet", globaltag="PXDBackgroundGenerator")
        publish_tag(store, "PXDBackgroundGenerator")
    result, out = generate(tmp_path, "--source", str(other), "--source", str(db))
    assert result.exit_code == 0, result.output
    [record] = _checkpoints(out)
    assert record["md5"] == info.payload.checksum and record["source"] == f"sqlite:///{db}"


def get_tiny_resnet():
    from pxdbg.models import get_model

    return get_model("resnet").Model(width=1 / 32).eval()


def test_require_production_refuses_demo_and_untrained_checkpoints(production, tmp_path, monkeypatch):
    db, _info = production
    # Nothing configured: the embedded demo store would answer; production jobs refuse it.
    for args, env in ((("--require-production",), None), ((), {"PXDBG_REQUIRE_PRODUCTION": "1"})):
        result, out = generate(tmp_path, *args, env=env)
        assert result.exit_code == 1 and "refusing checkpoint" in result.output and "demo store" in result.output
        assert not out.exists()
    # An untrained placeholder in a real tag is refused too; a trained one is fine.
    placeholder = untrained_checkpoint("convnet", tmp_path / "u.safetensors", config={"width": 1 / 32})
    with open_store(tmp_path / "u.db") as store:
        store.create_tag("PXDBackgroundGenerator")
        upload_checkpoint(store, placeholder, model="convnet", globaltag="PXDBackgroundGenerator")
        publish_tag(store, "PXDBackgroundGenerator")
    result, out = generate(tmp_path, "--source", str(tmp_path / "u.db"), "--require-production")
    assert result.exit_code == 1 and "untrained" in result.output and not out.exists()
    result, out = generate(tmp_path, "--checkpoint", str(placeholder), "--require-production")
    assert result.exit_code == 1 and "untrained" in result.output and not out.exists()
    result, out = generate(tmp_path, "--source", str(db), "--require-production")
    assert result.exit_code == 0, result.output
    assert "DEMO" not in result.output
    # Without the requirement a placeholder is used, with a loud warning in the log and the file.
    result, out = generate(tmp_path, "--checkpoint", str(placeholder))
    assert result.exit_code == 0 and "DEMO checkpoint" in result.output
    with DigitsReader(out) as reader:
        assert bool(reader.attrs["generator_demo"]) and json.loads(reader.document("provenance"))["checkpoints"][0]["untrained"]


def test_a_bad_flag_value_in_the_environment_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PXDBG_REQUIRE_PRODUCTION", "yes please")
    result, out = generate(tmp_path)
    assert result.exit_code == 1 and "PXDBG_REQUIRE_PRODUCTION" in result.output and not out.exists()
