"""The embedded default store: whatever checkpoints it holds (placeholders today, trained
ones later), each model must get one that fits this pxdbg, read in place from the
installation without writing anything there. And the builder that writes the store."""

from __future__ import annotations

import pytest
import torch

from conditions.cache import PayloadCache
from conditions.iov import IntervalOfValidity as IoV
from conditions.payload import hash_file
from pxdbg.models import embedded_models, get_model, model_kind
from pxdbg.models.loading import load_generator, save_generator
from registry.build_embedded import build_embedded_store
from registry.checkpoint import read_checkpoint
from registry.embedded import EMBEDDED_GLOBALTAG, EMBEDDED_STORE_DIR, open_embedded
from registry.exceptions import ManifestError, ManifestMismatchError
from registry.resolve import CheckpointRegistry, payload_name

torch.set_num_threads(1)


def _tree(directory):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


def test_every_model_has_a_valid_embedded_checkpoint(payload_cache):
    before = _tree(EMBEDDED_STORE_DIR)
    registry = CheckpointRegistry([], cache=payload_cache)  # no source configured: embedded only
    for model in embedded_models():
        version = get_model(model).ARCHITECTURE_VERSION
        found = registry.resolve(model, 0, 1, architecture_version=version)
        assert found.source.startswith("embedded default store") and found.tag == EMBEDDED_GLOBALTAG
        assert found.iov == IoV.always() and found.payload.name == payload_name(model)
        # Read in place (nothing copied into the cache), and the bytes are the catalogued ones.
        assert found.path.is_relative_to(EMBEDDED_STORE_DIR)
        assert hash_file(found.path).md5 == found.payload.checksum
        assert found.manifest.model == model and found.manifest.architecture_version == version
        # Any run of any experiment gets the same checkpoint, from the in-process cache.
        assert registry.resolve(model, 40, 123456, architecture_version=version).payload_key == found.payload_key
        if model_kind(model) == "sparse":
            # The tables make a valid model that makes valid digits.
            network = get_model(model).load(found.path)
            assert network.manifest == found.manifest
            network.generate_events([(0, 1)])[0].validate()
            continue
        # The weights fit the model (strict load with the manifest's model_config).
        network, manifest = load_generator(model, found.path, manifest_expected=True)
        assert manifest == found.manifest and isinstance(network, get_model(model).Model)
    registry.close()
    assert not [p for p in payload_cache.directory.rglob("*") if p.is_file()]  # nothing copied
    assert _tree(EMBEDDED_STORE_DIR) == before  # no journal, lock or temp file in the installation


def test_embedded_default_is_the_sparse_model_and_says_what_it_is(payload_cache):
    registry = CheckpointRegistry([], cache=payload_cache)
    try:
        found = registry.resolve("sparse", 0, 0, architecture_version=get_model("sparse").ARCHITECTURE_VERSION)
    finally:
        registry.close()
    manifest = found.manifest
    assert "synthetic stand-in sample" in manifest.description and "not a physics model" in manifest.description
    assert manifest.training_files and manifest.training_files[0]["events"] >= 500
    # validated on held-out events, and against the statistical floor
    assert manifest.metrics["heldout_reference_events"] >= 100
    ratios = {k: v for k, v in manifest.metrics.items() if k.startswith("heldout_floor_ratio_")}
    assert len(ratios) >= 6 and max(ratios.values()) < 3


def tiny(model: str, path, **manifest):
    torch.manual_seed(0)
    return save_generator(path, model, get_model(model).Model(width=1 / 32), **manifest)


def test_build_embedded_store(tmp_path):
    files = {"convnet": tiny("convnet", tmp_path / "c.safetensors", description="trained on X"),
             "resnet": tiny("resnet", tmp_path / "r.safetensors")}
    versions = {m: get_model(m).ARCHITECTURE_VERSION for m in files}
    destination = tmp_path / "store"
    entries = build_embedded_store(files, destination, architecture_versions=versions)
    assert [e.model for e in entries] == ["convnet", "resnet"]
    assert "trained on X; weights stored as float16" == entries[0].note
    with open_embedded(destination) as source:
        assert source.tag_state(EMBEDDED_GLOBALTAG).value == "PUBLISHED"
        found = CheckpointRegistry([source], use_embedded=False, cache=PayloadCache(tmp_path / "cache")).resolve(
            "convnet", 7, 7, architecture_version=versions["convnet"])
        tensors, _ = read_checkpoint(found.path)
        assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
        network, _ = load_generator("convnet", found.path)
        assert all(p.dtype == torch.float32 for p in network.parameters())  # loaded back as float32
    # Rebuilding replaces the directory in one piece.
    build_embedded_store({"convnet": files["convnet"]}, destination)
    with open_embedded(destination) as source:
        assert [r.payload.name for r in source.iovs(EMBEDDED_GLOBALTAG)] == [payload_name("convnet")]


def test_build_embedded_store_refuses_wrong_files(tmp_path):
    convnet = tiny("convnet", tmp_path / "c.safetensors")
    with pytest.raises(ManifestMismatchError, match="not 'resnet'"):
        build_embedded_store({"resnet": convnet}, tmp_path / "store")
    with pytest.raises(ManifestMismatchError, match="architecture version"):
        build_embedded_store({"convnet": convnet}, tmp_path / "store", architecture_versions={"convnet": 99})
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.ones(1)}, str(bare))
    with pytest.raises(ManifestError, match="needs a manifest"):
        build_embedded_store({"convnet": bare}, tmp_path / "store")
    assert not (tmp_path / "store").exists()  # nothing half-written
