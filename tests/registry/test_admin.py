"""Uploading checkpoints into campaign tags, publishing, legacy import and precision."""

from __future__ import annotations

import pickle

import pytest
import torch

from conditions.exceptions import FrozenTagError
from conditions.iov import IntervalOfValidity as IoV
from conditions.tags import GlobalTagState
from registry.admin import cast_checkpoint, import_legacy, publish_tag, upload_checkpoint
from registry.campaigns import Campaign, campaign_tag, create_campaign
from registry.checkpoint import read_checkpoint, read_manifest
from registry.exceptions import (
    CheckpointFormatError,
    ManifestError,
    ManifestMismatchError,
    UnknownCampaignError,
    UnsafeCheckpointError,
)
from registry.manifest import Manifest


def test_upload_writes_missing_manifest_and_creates_the_iov(store, make_checkpoint):
    create_campaign(store, Campaign(name="c1"))
    bare = make_checkpoint(manifest=False)
    result = upload_checkpoint(store, bare, model="convnet", campaign="c1", iov=IoV(5, 0, 5, -1),
                               architecture_version=1, manifest_fields={"training_steps": 10})
    assert result.manifest_added and result.tag == campaign_tag("c1")
    assert result.payload.name == "PXDBackgroundGenerator_convnet"
    assert result.manifest.campaign == "c1" and result.manifest.training_steps == 10
    assert read_manifest(bare) is None  # the user's file is not modified
    stored = store.local_path(result.payload)
    assert read_manifest(stored) == result.manifest
    assert result.payload.metadata["manifest"]["model"] == "convnet"
    [record] = store.iovs(campaign_tag("c1"), name="PXDBackgroundGenerator_convnet")
    assert record.iov == IoV(5, 0, 5, -1)


def test_upload_checks_before_writing(sqlite_store, make_checkpoint):
    store = sqlite_store
    create_campaign(store, Campaign(name="c1"))
    with pytest.raises(UnknownCampaignError):
        upload_checkpoint(store, make_checkpoint(), model="convnet", campaign="nope")
    with pytest.raises(ManifestMismatchError, match="resnet"):
        upload_checkpoint(store, make_checkpoint("resnet"), model="convnet", campaign="c1")
    with pytest.raises(ManifestMismatchError, match="campaign"):
        upload_checkpoint(store, make_checkpoint(campaign="other"), model="convnet", campaign="c1")
    with pytest.raises(ManifestMismatchError, match="architecture"):
        upload_checkpoint(store, make_checkpoint(architecture_version=2), model="convnet",
                          campaign="c1", architecture_version=1)
    with pytest.raises(ManifestError, match="no manifest"):
        upload_checkpoint(store, make_checkpoint(manifest=False), model="convnet", campaign="c1")
    legacy = make_checkpoint().with_suffix(".pth")
    torch.save({"weight": torch.ones(2)}, legacy)
    with pytest.raises(CheckpointFormatError, match="import-legacy"):
        upload_checkpoint(store, legacy, model="convnet", campaign="c1")
    assert store.list_payloads("PXDBackgroundGenerator_convnet") == []  # nothing was written
    publish_tag(store, campaign_tag("c1"))
    with pytest.raises(FrozenTagError):
        upload_checkpoint(store, make_checkpoint(), model="convnet", campaign="c1")
    assert store.list_payloads("PXDBackgroundGenerator_convnet") == []


def test_publish_walks_the_lifecycle(sqlite_store):
    sqlite_store.create_tag("t")
    assert publish_tag(sqlite_store, "t", target="TESTING") is GlobalTagState.TESTING
    assert publish_tag(sqlite_store, "t") is GlobalTagState.PUBLISHED
    assert publish_tag(sqlite_store, "t") is GlobalTagState.PUBLISHED


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the raw pickle below, refused anyway
def test_legacy_import_converts_and_refuses_code(tmp_path, capsys):
    legacy = tmp_path / "basf2.pth"
    torch.save({"fc.weight": torch.arange(6.0).reshape(2, 3)}, legacy)
    seen = {}
    out = import_legacy(legacy, tmp_path / "out.safetensors",
                        Manifest(model="convnet", architecture_version=1, description="basf2 release"),
                        convert=lambda sd: seen.update(sd) or sd)
    tensors, manifest = read_checkpoint(out)
    assert torch.equal(tensors["fc.weight"], torch.arange(6.0).reshape(2, 3)) and "fc.weight" in seen
    assert manifest.description == "basf2 release"

    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.ones(1), "x": _Evil()}, evil)
    with pytest.raises(UnsafeCheckpointError):
        import_legacy(evil, tmp_path / "evil.safetensors", Manifest(model="convnet", architecture_version=1))
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises((UnsafeCheckpointError, CheckpointFormatError)):
        import_legacy(raw, tmp_path / "raw.safetensors", Manifest(model="convnet", architecture_version=1))
    assert "pwned" not in capsys.readouterr().out
    assert not (tmp_path / "evil.safetensors").exists() and not (tmp_path / "raw.safetensors").exists()
    with pytest.raises(CheckpointFormatError):
        import_legacy(out, tmp_path / "again.safetensors", manifest)


def test_cast_to_float16_halves_the_file_and_loads_back_as_float32(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64))
    from registry.checkpoint import write_checkpoint

    full = write_checkpoint(tmp_path / "f32.safetensors", module.state_dict(),
                            Manifest(model="convnet", architecture_version=1))
    half = cast_checkpoint(full, tmp_path / "f16.safetensors")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    tensors, manifest = read_checkpoint(half)
    assert tensors["0.weight"].dtype == torch.float16
    assert tensors["1.num_batches_tracked"].dtype == torch.int64
    assert "float16" in manifest.description
    fresh = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64))
    fresh.load_state_dict(tensors)
    assert fresh[0].weight.dtype == torch.float32
    assert torch.allclose(fresh[0].weight, module[0].weight, rtol=1e-3, atol=1e-4)
