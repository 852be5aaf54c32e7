"""Checkpoint files: safetensors + manifest, legacy torch state dicts, unsafe pickles."""

import json
import pickle
import struct

import pytest
import torch

from pxdbg.models import get_model
from pxdbg.models.loading import adapt_legacy_state_dict, load_generator, save_generator
from registry.checkpoint import (SAFETENSORS, TORCH_PICKLE, TORCH_ZIP, read_checkpoint, read_manifest,
                                 sniff_format, write_checkpoint)
from registry.exceptions import (CheckpointFormatError, CheckpointMismatchError, ManifestError,
                                 ManifestMismatchError, UnsafeCheckpointError)
from registry.manifest import Manifest, check_manifest

MARKER_NAME = "pwned-marker"


class _Evil:
    """Pickles to a call of os.system: loading it unsafely would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _manifest(**kw):
    return Manifest(model=kw.pop("model", "convnet"), architecture_version=kw.pop("architecture_version", 1),
                    campaign="early-phase3", training_dataset="bg-2021a", training_steps=1000,
                    metrics={"fid": 1.5}, **kw)


def test_safetensors_roundtrip_keeps_tensors_and_manifest(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    state = {"a": base.view(3, 4), "b": base[:4], "c": torch.tensor(7)}  # shared storage, 0-d
    path = write_checkpoint(tmp_path / "ckpt.safetensors", state, _manifest())
    assert sniff_format(path) == SAFETENSORS
    loaded, manifest = read_checkpoint(path)
    assert set(loaded) == {"a", "b", "c"}
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert manifest == _manifest(created=manifest.created)
    assert read_manifest(path) == manifest
    # The manifest is plain JSON strings in the header, readable without pxdbg.
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    meta = header["__metadata__"]
    assert json.loads(meta["manifest.model"]) == "convnet"
    assert json.loads(meta["manifest.metrics"]) == {"fid": 1.5}
    assert not list(tmp_path.glob("*.tmp")), "the temporary file is renamed away"


@pytest.mark.parametrize("pad", range(0, 256, 37))
def test_safetensors_detected_whatever_its_header_length(tmp_path, pad):
    # The first byte of a safetensors file is the low byte of its header length; 0x80
    # (a pickle opcode) or "P" must not make it look like a torch file.
    manifest = _manifest(description="x" * pad)
    path = write_checkpoint(tmp_path / "c.safetensors", {"w": torch.zeros(2)}, manifest)
    assert sniff_format(path) == SAFETENSORS
    assert read_manifest(path).description == "x" * pad


def test_legacy_torch_state_dicts_load_without_manifest(tmp_path):
    state = {"w": torch.randn(3, 3), "n": torch.tensor(5)}
    zip_path, old_path = tmp_path / "g.pt", tmp_path / "g.pth"
    torch.save(state, zip_path)
    torch.save(state, old_path, _use_new_zipfile_serialization=False)
    assert sniff_format(zip_path) == TORCH_ZIP and sniff_format(old_path) == TORCH_PICKLE
    for path in (zip_path, old_path):
        loaded, manifest = read_checkpoint(path)
        assert manifest is None and read_manifest(path) is None
        assert torch.equal(loaded["w"], state["w"])


@pytest.mark.parametrize("container", ["raw-pickle", "torch-zip", "torch-legacy"])
def test_pickle_that_carries_code_is_refused_and_not_run(tmp_path, container):
    marker = tmp_path / MARKER_NAME
    path = tmp_path / "evil.pt"
    payload = {"fc.weight": torch.zeros(2), "boom": _Evil(marker)}
    if container == "raw-pickle":
        path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=(container == "torch-zip"))
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(path)
    assert info.value.code == "unsafe_checkpoint"
    assert not marker.exists(), "the pickled code must never run"
    with pytest.raises(UnsafeCheckpointError):
        load_generator("convnet", path)
    assert not marker.exists()


def test_non_state_dict_torch_files_and_garbage_are_refused(tmp_path):
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(CheckpointFormatError, match="expected a state dict"):
        read_checkpoint(lst)
    nested = tmp_path / "nested.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, nested)
    with pytest.raises(CheckpointFormatError, match="not a plain state dict"):
        read_checkpoint(nested)
    for name, data in (("empty", b""), ("text", b"hello world, not weights"),
                       ("truncated", (10**9).to_bytes(8, "little") + b"{}")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointFormatError):
            read_checkpoint(path)
    with pytest.raises(CheckpointFormatError, match="cannot read"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_manifest_validation_and_check():
    with pytest.raises(ManifestError):
        Manifest(model="", architecture_version=1)
    with pytest.raises(ManifestError):
        Manifest(model="convnet", architecture_version="1")
    with pytest.raises(ManifestError, match="lacks required"):
        Manifest.from_dict({"model": "convnet"})
    meta = _manifest().to_metadata()
    meta["manifest.metrics"] = "{not json"
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.from_metadata(meta)
    assert Manifest.from_metadata({"other": "x"}) is None
    # Unknown fields from a newer writer are ignored, not fatal.
    meta = _manifest().to_metadata() | {"manifest.future_field": "1"}
    assert Manifest.from_metadata(meta).model == "convnet"
    check_manifest(_manifest(), "convnet", 1)
    with pytest.raises(ManifestMismatchError, match="for model 'convnet'.*uses model 'resnet'"):
        check_manifest(_manifest(), "resnet", 1)
    with pytest.raises(ManifestMismatchError, match="architecture version 1.*implements version 2"):
        check_manifest(_manifest(), "convnet", 2)


def test_save_and_load_generator_rebuilds_the_configured_model(tmp_path):
    model = get_model("resnet").Model(width=1 / 16)
    path = save_generator(tmp_path / "r.safetensors", "resnet", model, campaign="c1", training_steps=5)
    loaded, manifest = load_generator("resnet", path)
    assert manifest.model_config == {"width": 1 / 16} and manifest.campaign == "c1"
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_wrong_model_checkpoint_is_refused(tmp_path):
    path = save_generator(tmp_path / "r.safetensors", "resnet", get_model("resnet").Model(width=1 / 16))
    with pytest.raises(ManifestMismatchError, match="'resnet'.*'convnet'"):
        load_generator("convnet", path)
    # A legacy file has no manifest: the strict key check refuses it, naming keys.
    legacy = tmp_path / "resnet.pt"
    torch.save(get_model("resnet").Model(width=1 / 16).state_dict(), legacy)
    with pytest.raises(CheckpointMismatchError, match="do not fit model 'convnet'.*missing: features"):
        load_generator("convnet", legacy)
    with pytest.raises(CheckpointMismatchError, match="wrong shape: blocks.0.conv.bias"):
        load_generator("resnet", legacy)  # a reduced-width file into the full-width default


def test_legacy_key_adaptation():
    model = get_model("convnet").Model(width=1 / 32)
    sd = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    adapted = adapt_legacy_state_dict(sd)
    assert set(adapted) == set(model.state_dict())
    model.load_state_dict(adapted, strict=True)
