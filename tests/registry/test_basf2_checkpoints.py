"""Checkpoints crossing between basf2 and pxdbg through a global tag.

basf2's module (pxd/scripts/pxd/background_generator/__init__.py, ``initialize``) gets
the payload file of ``PXDBackgroundGenerator_<model>`` from the conditions framework
(``DBAccessorBase(DBStoreEntry.c_RawFile, ...).getFilename()``: for a snapshot, the file
framework/database/src/PayloadProvider.cc finds, ``{md5[:2]}/{name}_r{revision}.root``
beside the metadata file, MD5-checked) and does ``load_state_dict(torch.load(file,
map_location="cpu"))`` into the model's default construction.

The weights here are random values for basf2's key/shape list (tests/data), and the
images basf2 would make are computed by the independent reference of
tests/pxdbg/test_basf2_reference.py from the state dict ``torch.load`` returns.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3

import pytest
import torch

from conditions.iov import IntervalOfValidity as IoV
from conditions.snapshot import export_snapshot
from conditions.store import open_store
from pxdbg.models.loading import adapt_legacy_state_dict, build_from_state_dict, load_generator, save_generator
from registry.checkpoint import read_manifest
from registry.exceptions import UnsafeCheckpointError
from registry.resolve import resolve_checkpoint
from tests.pxdbg.test_basf2_reference import (_assert_same_images, _as_generated, basf2_latents, random_state_dict,
                                              ref_resnet, ref_to_uint8)
from tests.pxdbg.tiny_models import tiny_convnet

torch.set_num_threads(1)

NAME = "PXDBackgroundGenerator_resnet"
KEEP = [0, 39]  # two of an event's 40 images keep the full-size forward passes cheap


def basf2_payload_file(snapshot_dir, tag: str, name: str, exp: int, run: int):
    """What basf2 does for a snapshot: LocalMetadataProvider.cc's query of the
    ``iov_payloads`` view (highest revision of the name valid at the run), then
    PayloadProvider.cc's hashed layout, accepted only if the MD5 matches."""
    db = sqlite3.connect(snapshot_dir / "metadata.sqlite")
    rows = db.execute(
        "SELECT payloadName, checksum, revision FROM iov_payloads WHERE globalTagName = ? AND payloadName = ? "
        "AND ((firstExp = ? AND firstRun <= ?) OR firstExp < ?) AND (finalExp < 0 OR (finalRun < 0 AND "
        "finalExp >= ?) OR finalExp > ? OR (finalExp = ? AND finalRun >= ?)) ORDER BY revision DESC",
        (tag, name, exp, run, exp, exp, exp, exp, run)).fetchall()
    db.close()
    assert rows, f"no {name} for {exp},{run} in {tag}"
    payload_name, checksum, revision = rows[0]
    path = snapshot_dir / checksum[:2] / f"{payload_name}_r{revision}.root"
    assert hashlib.md5(path.read_bytes()).hexdigest() == checksum
    return path


def test_upload_format_basf2_is_what_basf2s_module_loads(cli, tmp_path, caplog):
    # a pxdbg checkpoint (safetensors with a manifest) of basf2-shaped resnet weights
    weights = random_state_dict("resnet", 11)
    model = build_from_state_dict("resnet", adapt_legacy_state_dict(weights))
    original = save_generator(tmp_path / "resnet.safetensors", "resnet", model, training_steps=4321,
                              training_dataset="mc16/bg-overlay", description="for basf2 jobs")
    with open_store(tmp_path / "admin.db") as store:
        store.create_tag("basf2_jobs", "read by basf2's own module")
    out = cli("checkpoint", "upload", str(original), "--model", "resnet", "--globaltag", "basf2_jobs",
              "--iov", "0,0,-1,-1", "--format", "basf2").output
    assert "as a basf2 torch state dict" in out
    with open_store(tmp_path / "admin.db") as store:
        store.set_tag_state("basf2_jobs", "TESTING")
        export_snapshot(store, "basf2_jobs", tmp_path / "conditions")  # conditionsdb download

    # basf2's way: the file the snapshot gives, torch.load with weights_only, the images
    path = basf2_payload_file(tmp_path / "conditions", "basf2_jobs", NAME, 0, 5)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state_dict) == set(weights) and all(torch.equal(state_dict[k], weights[k]) for k in weights)
    get_default = type(model)()  # load_state_dict into the default construction, strictly
    get_default.load_state_dict(state_dict)
    z = basf2_latents(2024, 1, 96)[KEEP]
    with torch.inference_mode():
        basf2_images = ref_resnet(state_dict, z)
        pxdbg_original = model(z)

    # pxdbg's way, from the store: the manifest comes back from the payload metadata
    with caplog.at_level(logging.INFO, logger="registry.checkpoint"):
        found = resolve_checkpoint("resnet", 0, 5, globaltag="basf2_jobs", sources=[str(tmp_path / "admin.db")],
                                   use_embedded=False, architecture_version=1)
    assert "manifest read from the payload metadata" in caplog.text
    assert found.manifest.to_dict() == read_manifest(original).to_dict()
    assert found.path.read_bytes() == path.read_bytes()  # the very bytes basf2 loads
    loaded, manifest = load_generator("resnet", found.path, manifest=found.manifest)
    assert manifest.training_steps == 4321
    with torch.inference_mode():
        ours = loaded(z)
    assert torch.equal(ours, pxdbg_original)
    _assert_same_images(ours, basf2_images, _as_generated("resnet", ours, KEEP), ref_to_uint8(basf2_images))


def test_basf2s_own_payloads_are_read_with_an_inferred_manifest(tmp_path, caplog):
    """A tag as basf2 fills it: plain torch state dicts, no metadata, read from a basf2
    snapshot (which carries no payload metadata at all)."""
    weights = random_state_dict("resnet", 5)
    raw = tmp_path / "resnet.pth"
    torch.save(weights, raw)  # what basf2's checkpoints are
    with open_store(tmp_path / "basf2.db") as store:
        store.create_tag("PXDBackgroundGenerator")
        store.upload("PXDBackgroundGenerator", NAME, raw, IoV(0, 0, -1, -1), filename="resnet.root")
        store.set_tag_state("PXDBackgroundGenerator", "TESTING")
        export_snapshot(store, "PXDBackgroundGenerator", tmp_path / "snap")
    with caplog.at_level(logging.INFO, logger="registry.checkpoint"):
        found = resolve_checkpoint("resnet", 3, 3, sources=[str(tmp_path / "snap")], use_embedded=False,
                                   architecture_version=1)
    assert "carries no manifest; inferred one (model resnet, architecture version 1" in caplog.text
    assert (found.manifest.model, found.manifest.architecture_version) == ("resnet", 1)
    assert "inferred by pxdbg from basf2 payload" in found.manifest.description
    assert found.manifest.training_steps is None  # no provenance is made up
    loaded, _ = load_generator("resnet", found.path, manifest=found.manifest)
    z = basf2_latents(9, 1, 96)[KEEP]
    with torch.inference_mode():
        ours, ref = loaded(z), ref_resnet(weights, z)
    _assert_same_images(ours, ref, _as_generated("resnet", ours, KEEP), ref_to_uint8(ref))


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_payload_with_pickled_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "payload": _Exploit(marker)}, evil)
    with open_store(tmp_path / "c.db") as store:
        store.create_tag("PXDBackgroundGenerator")
        store.upload("PXDBackgroundGenerator", NAME, evil, IoV(0, 0, -1, -1))
        store.set_tag_state("PXDBackgroundGenerator", "TESTING")
    # refused as that source's answer: no other source (the embedded defaults) takes over
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        resolve_checkpoint("resnet", 0, 0, sources=[str(tmp_path / "c.db")], use_embedded=True)
    assert not marker.exists()


def test_upload_format_basf2_refuses_weights_basf2_cannot_build(cli, tmp_path):
    small = save_generator(tmp_path / "small.safetensors", "convnet", tiny_convnet(1))  # width 1/32
    with open_store(tmp_path / "admin.db") as store:
        store.create_tag("basf2_jobs")
    out = cli("checkpoint", "upload", str(small), "--model", "convnet", "--globaltag", "basf2_jobs",
              "--format", "basf2", status=1).output
    assert "default convnet architecture" in out and "wrong shape" in out
    with open_store(tmp_path / "admin.db") as store:
        assert store.list_payloads() == [] and store.iovs("basf2_jobs") == []
