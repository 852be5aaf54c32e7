"""A small conditions database for the web page tests: two tags with overlapping revisions,
a checkpoint with a manifest and a validation report, and hostile text (HTML and script)
wherever the store accepts free text: descriptions, metadata, user names, report keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from conditions.iov import IntervalOfValidity as IoV
from conditions.payload_inspect import pack_report, report_metadata, report_name
from registry.manifest import Manifest

REPO = Path(__file__).resolve().parents[3]
#: Runs if any page lets markup through: sets window.__xss or opens a dialog.
HOSTILE = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2;alert(2)">'
HOSTILE_USER = 'mallory<b onmouseover="window.__xss=3">'
CHECKPOINT = "PXDBackgroundGenerator_convnet"
PLOT = REPO / "docs" / "validation" / "resnet_default" / "occupancy.png"


def beamspot_revision(exp: int, run: int) -> int | None:
    """Which BeamSpot revision tag ``calib_main`` gives at (exp, run), by the rules."""
    if exp == 0:
        if 50 <= run <= 149:
            return 2
        if run <= 99:
            return 1
        return None
    return 3


def build(store, workdir: Path) -> dict:
    """Fill ``store`` and return what the tests check against."""
    workdir.mkdir(parents=True, exist_ok=True)
    store.create_tag("calib_main", f"main calibration {HOSTILE}", user="alice")
    for i in range(1, 4):
        store.add_payload("BeamSpot", f"beam spot {i}".encode(), user="alice",
                          metadata={"comment": f"revision {i} {HOSTILE}"})
    store.add_payload("PXDGain", b"gains", user=HOSTILE_USER, metadata={HOSTILE: HOSTILE})
    store.add_iov("calib_main", "BeamSpot", 1, IoV(0, 0, 0, 99), user="alice")
    store.add_iov("calib_main", "BeamSpot", 2, IoV(0, 50, 0, 149), user="alice")
    store.add_iov("calib_main", "BeamSpot", 3, IoV(1, 0, -1, -1), user="alice")
    store.add_iov("calib_main", "PXDGain", 1, IoV(0, 0, -1, -1), user=HOSTILE_USER)

    # A checkpoint: a small safetensors file whose header carries a manifest, as pxdbg writes it.
    manifest = Manifest(model="convnet", architecture_version=1, training_dataset="train.h5 sha256:abc",
                        training_steps=60, metrics={"heldout_charge_w1": 21.87},
                        description=f"trained 60 steps; not a physics model {HOSTILE}")
    checkpoint_file = workdir / "convnet.safetensors"
    save_file({"layer.weight": np.ones((4, 3), dtype=np.float32), "layer.bias": np.zeros(4, dtype=np.float32)},
              str(checkpoint_file), metadata=manifest.to_metadata())
    checkpoint = store.add_payload(CHECKPOINT, checkpoint_file, user="carol", filename="convnet.safetensors")
    store.add_iov("calib_main", CHECKPOINT, checkpoint.revision, IoV(0, 0, -1, -1), user="carol")
    report_dir = workdir / "report"
    report_dir.mkdir(exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(
        {"n_generated": 4, "n_reference": 4, "scalars": {"charge_w1": 21.87, "frechet_distance": 1.5e6, HOSTILE: 1.0}}))
    shutil.copy(PLOT, report_dir / "occupancy.png")
    report = store.add_payload(report_name(CHECKPOINT), pack_report(report_dir, checkpoint), user="carol",
                               filename="report.zip", metadata=report_metadata(checkpoint))
    store.set_tag_state("calib_main", "TESTING", user="alice")

    store.clone_tag("calib_main", "calib_next", description="next calibration", user="bob")
    store.add_payload("BeamSpot", b"beam spot 4", user="bob")
    store.add_iov("calib_next", "BeamSpot", 4, IoV(0, 120, 0, 200), user="bob")
    return {"checkpoint": checkpoint, "report": report, "tags": ["calib_main", "calib_next"]}
