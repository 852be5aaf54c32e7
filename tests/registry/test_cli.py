"""The admin path on the command line: ``pxdbg campaign create|list|show|publish`` and
``pxdbg checkpoint upload|resolve|show|import-legacy`` on a real SQLite store (CliRunner).

Examples/03 drives the same commands through a live server; here every refusal is
checked too: exit status 1 with ``error: ...`` and nothing written."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from click.testing import CliRunner

from conditions.store import open_store
from pxdbg.cli import main
from pxdbg.models import get_model
from registry.checkpoint import read_checkpoint, read_manifest, write_checkpoint
from registry.manifest import Manifest

torch.set_num_threads(1)


def bare(tmp_path, name: str, value: float):
    """A safetensors file without manifest (as a training script outside pxdbg writes it)."""
    from safetensors.torch import save_file

    path = tmp_path / name
    save_file({"weight": torch.full((3,), value)}, str(path))
    return path


def test_campaign_and_upload_commands_end_to_end(cli, tmp_path):
    out = cli("campaign", "create", "c2026a", "--description", "spring 2026", "--condition", "her_current_mA=1040",
              "--condition", "injection=continuous", "--luminosity", "3.2e34",
              "--training-dataset", "/belle/MC/bg/2026a.h5").output
    assert "global tag PXDBackgroundGenerator_c2026a (OPEN)" in out
    cli("campaign", "create", "c2026b")

    cli("checkpoint", "upload", str(bare(tmp_path, "a.safetensors", 1.0)), "--model", "convnet",
        "--campaign", "c2026a", "--iov", "1,0,1,9", "--training-steps", "1200")
    out = cli("checkpoint", "upload", str(bare(tmp_path, "b.safetensors", 2.0)), "--model", "convnet",
              "--campaign", "c2026a", "--iov", "1,10,1,-1").output
    assert "revision 2 (manifest added)" in out and "IoV 1,10,1,-1 in global tag PXDBackgroundGenerator_c2026a" in out

    record = json.loads(cli("campaign", "show", "c2026a", "--json").output)
    assert record["beam_conditions"] == {"her_current_mA": 1040, "injection": "continuous"}
    assert record["luminosity"] == 3.2e34 and record["training_dataset"] == "/belle/MC/bg/2026a.h5"
    assert record["globaltag"] == {"name": "PXDBackgroundGenerator_c2026a", "state": "OPEN"}
    assert [(c["revision"], c["iov"]) for c in record["checkpoints"]] == [(1, [1, 0, 1, 9]), (2, [1, 10, 1, -1])]
    listing = cli("campaign", "list").output.splitlines()
    assert [line.split()[:2] for line in listing] == [["c2026a", "OPEN"], ["c2026b", "OPEN"]]

    # Production does not read OPEN tags; a validator can, explicitly.
    resolve = ("checkpoint", "resolve", "--model", "convnet", "--campaign", "c2026a", "--no-embedded")
    source = ("--source", str(tmp_path / "admin.db"))
    assert "is OPEN (still being edited)" in cli(*resolve, "--exp", "1", "--run", "3", *source, status=1).output
    assert "valid for: 1,0,1,9" in cli(*resolve, "--exp", "1", "--run", "3", *source, "--allow-open").output
    cli("campaign", "publish", "c2026a")
    for run, revision, valid in (("3", "r1", "1,0,1,9"), ("10", "r2", "1,10,1,-1"), ("99999", "r2", "1,10,1,-1")):
        out = cli(*resolve, "--exp", "1", "--run", run, *source).output
        assert f"PXDBackgroundGenerator_convnet {revision} " in out and f"valid for: {valid}" in out
        assert "campaign c2026a" in out
    assert "c2026a" in cli("campaign", "list").output and "PUBLISHED" in cli("campaign", "list").output

    # The stored payload is the original weights plus the manifest written at upload.
    with open_store(tmp_path / "admin.db") as store:
        [first] = [r for r in store.iovs("PXDBackgroundGenerator_c2026a", name="PXDBackgroundGenerator_convnet")
                   if r.payload.revision == 1]
        stored = store.local_path(first.payload)
    tensors, manifest = read_checkpoint(stored)
    assert torch.equal(tensors["weight"], torch.full((3,), 1.0))
    assert (manifest.model, manifest.campaign, manifest.training_steps) == ("convnet", "c2026a", 1200)
    assert manifest.architecture_version == get_model("convnet").ARCHITECTURE_VERSION
    shown = json.loads(cli("checkpoint", "show", str(stored), "--json").output)
    assert shown["manifest"]["campaign"] == "c2026a" and shown["tensors"] == 1


def test_refusals_exit_1_and_write_nothing(cli, tmp_path):
    cli("campaign", "create", "c1")
    assert "exists already" in cli("campaign", "create", "c1", status=1).output
    assert "invalid campaign name" in cli("campaign", "create", "bad name", status=1).output
    file = bare(tmp_path, "a.safetensors", 1.0)
    assert "no campaign 'nope'" in cli("checkpoint", "upload", str(file), "--model", "convnet",
                                       "--campaign", "nope", status=1).output
    assert "Invalid value for --iov: an IoV needs four integers" in cli("checkpoint", "upload", str(file), "--model", "convnet",
                                              "--campaign", "c1", "--iov", "1,2,3", status=2).output
    resnet = tmp_path / "resnet.safetensors"
    write_checkpoint(resnet, {"weight": torch.ones(2)}, Manifest(model="resnet", architecture_version=1))
    assert "model 'resnet'" in cli("checkpoint", "upload", str(resnet), "--model", "convnet",
                                   "--campaign", "c1", status=1).output
    old = tmp_path / "old.safetensors"
    write_checkpoint(old, {"weight": torch.ones(2)}, Manifest(model="convnet", architecture_version=0))
    assert "architecture version" in cli("checkpoint", "upload", str(old), "--model", "convnet",
                                         "--campaign", "c1", status=1).output
    with open_store(tmp_path / "admin.db") as store:
        assert store.list_payloads("PXDBackgroundGenerator_convnet") == []
    cli("campaign", "publish", "c1")
    assert "PUBLISHED" in cli("checkpoint", "upload", str(file), "--model", "convnet", "--campaign", "c1",
                              status=1).output
    assert "no campaign" in cli("campaign", "show", "c9", status=1).output


def test_no_store_given_is_a_usage_error(monkeypatch):
    for name in ("PXDBG_DB", "CONDITIONSDB_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["campaign", "list"])
    assert result.exit_code == 2 and "no store given" in result.output


class _RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the raw pickle below, refused anyway
def test_import_legacy_command(cli, tmp_path, capsys):
    # A basf2-style file: a full-size resnet state dict saved from nn.DataParallel, from a
    # torch without BatchNorm counters. The command converts it after a strict load test.
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in get_model("resnet").Model().state_dict().items()
             if not k.endswith("num_batches_tracked")}
    legacy = tmp_path / "PXDBackgroundGenerator_resnet.pth"
    torch.save(state, legacy)
    out = tmp_path / "resnet.safetensors"
    result = cli("checkpoint", "import-legacy", str(legacy), "--model", "resnet", "-o", str(out),
                 "--training-dataset", "basf2 release-08", "--dtype", "float16")
    assert "architecture version 1" in result.output
    tensors, manifest = read_checkpoint(out)
    assert manifest.model == "resnet" and manifest.training_dataset == "basf2 release-08"
    assert "weights stored as float16" in manifest.description
    key = next(k for k in state if k.endswith(".weight") and state[k].is_floating_point())
    assert torch.allclose(tensors[key[len("module."):]].float(), state[key], atol=1e-3, rtol=1e-2)

    # Weights for another model: the strict load test refuses them, no file is written.
    wrong = tmp_path / "wrong.safetensors"
    assert "do not fit model 'convnet'" in cli("checkpoint", "import-legacy", str(legacy), "--model", "convnet",
                                               "-o", str(wrong), status=1).output
    # A pickle that would run code is refused without running it.
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(1), "x": _RunsCode()}, evil)
    assert "error:" in cli("checkpoint", "import-legacy", str(evil), "--model", "resnet",
                           "-o", str(tmp_path / "evil.safetensors"), status=1).output
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_RunsCode()))
    cli("checkpoint", "import-legacy", str(raw), "--model", "resnet", "-o", str(tmp_path / "raw.safetensors"),
        status=1)
    assert "pwned" not in capsys.readouterr().out
    assert not wrong.exists() and not (tmp_path / "evil.safetensors").exists()
    assert not (tmp_path / "raw.safetensors").exists() and read_manifest(out) is not None


def test_checkpoint_init_writes_a_labelled_placeholder_and_refuses_a_bad_config(cli, tmp_path):
    import numpy as np

    from pxdbg.models.loading import load_generator

    out = tmp_path / "placeholder.safetensors"
    cli("checkpoint", "init", "--model", "convnet", "--config", "width=0.0625", "--seed", "3",
        "--occupancy", "0.02", "-o", str(out))
    network, manifest = load_generator("convnet", out)
    assert manifest.training_steps == 0 and manifest.description.startswith("UNTRAINED placeholder")
    assert "2.0% pixel occupancy" in manifest.description and manifest.model_config == {"width": 0.0625}
    events = get_model("convnet").generate(network, torch.Generator().manual_seed(3))
    assert np.asarray(events).dtype == np.uint8 and events.shape == (1, 40, 250, 768)
    bad = cli("checkpoint", "init", "--model", "convnet", "--config", "width=abc", "-o", str(tmp_path / "x.st"),
              status=2)
    assert "--config" in bad.output and "does not fit convnet" in bad.output
    assert not (tmp_path / "x.st").exists()
