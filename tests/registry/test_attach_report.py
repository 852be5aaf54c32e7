"""``pxdbg checkpoint attach-report``: a ``pxdbg validate`` directory stored as the
validation report of one checkpoint revision, as the conditions web pages read it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from conditions.payload_inspect import read_report_file, validates
from conditions.store import open_store

PLOT = Path(__file__).resolve().parents[2] / "docs" / "validation" / "resnet_default" / "occupancy.png"
NAME = "PXDBackgroundGenerator_convnet"


def test_attach_report_to_a_checkpoint_revision(cli, tmp_path):
    from safetensors.torch import save_file

    cli("campaign", "create", "c1")
    for value in (1.0, 2.0):
        path = tmp_path / f"w{value}.safetensors"
        save_file({"weight": torch.full((3,), value)}, str(path))
        cli("checkpoint", "upload", str(path), "--model", "convnet", "--campaign", "c1")
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text(json.dumps({"n_generated": 10, "scalars": {"charge_w1": 0.5}}))
    shutil.copy(PLOT, report / "occupancy.png")
    (report / "notes.txt").write_text("not part of the report")

    out = cli("checkpoint", "attach-report", str(report), "--model", "convnet").output
    assert f"stored {NAME}_validation revision 1" in out and f"report of {NAME} revision 2" in out
    out = cli("checkpoint", "attach-report", str(report), "--model", "convnet", "--revision", "1").output
    assert f"stored {NAME}_validation revision 2" in out and f"report of {NAME} revision 1" in out
    # the same report again for the same checkpoint is the same payload
    assert f"{NAME}_validation revision 2" in cli("checkpoint", "attach-report", str(report), "--model",
                                                  "convnet", "--revision", "1").output

    with open_store(tmp_path / "admin.db") as store:
        reports = store.list_payloads(f"{NAME}_validation")
        assert len(reports) == 2
        for stored, target in zip(reports, (2, 1)):
            checkpoint = store.get_payload(NAME, target)
            assert validates(stored, checkpoint) and not validates(stored, store.get_payload(NAME, 3 - target))
            parsed = read_report_file(store.local_path(stored), stored)
            assert parsed.document["n_generated"] == 10 and list(parsed.images) == ["occupancy.png"]
            assert parsed.scalars() == {"charge_w1": 0.5}

    (report / "report.json").unlink()
    assert "holds no report.json" in cli("checkpoint", "attach-report", str(report), "--model", "convnet",
                                         status=1).output
    assert "no payload" in cli("checkpoint", "attach-report", str(tmp_path), "--model", "resnet",
                               status=1).output.lower()
