"""`pxdbg generate` and `pxdbg overlay` end to end (CliRunner, real files)."""

import hashlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import pxdbg.module
from pxdbg import provenance
from pxdbg.cli import main
from pxdbg.cli.generate import parse_run_spec, parse_runs_file
from pxdbg.digits import DigitsReader
from pxdbg.models.loading import save_generator
from registry.checkpoint import ResolvedCheckpoint, read_manifest
from tests.pxdbg.tiny_models import tiny_convnet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {"A": save_generator(d / "a.safetensors", "convnet", tiny_convnet(1), campaign="A"),
            "B": save_generator(d / "b.safetensors", "convnet", tiny_convnet(2), campaign="B")}


def test_run_spec_parsing(tmp_path):
    assert parse_run_spec("0:1-3,0:6, 1:2") == [(0, 1), (0, 2), (0, 3), (0, 6), (1, 2)]
    for bad, msg in (("0:5-3", "last run before first"), ("1-3", "expected EXP:RUN"), ("0:1,0:1", "twice"),
                     ("", "empty"), ("0:1-99999999", "longer than")):
        with pytest.raises(ValueError, match=msg):
            parse_run_spec(bad)
    f = tmp_path / "runs.txt"
    f.write_text("# campaign A\n0:1-2 3\n\n0:6   # default events\n")
    assert parse_runs_file(f, 5) == [(0, 1, 3), (0, 2, 3), (0, 6, 5)]
    f.write_text("0:1 x\n")
    with pytest.raises(ValueError, match="runs.txt:1: events must be a positive integer"):
        parse_runs_file(f, 5)


def test_generate_with_fixed_checkpoint_is_reproducible(checkpoints, tmp_path):
    runner = CliRunner()
    outs = []
    for name in ("a.h5", "b.h5"):
        out = tmp_path / name
        result = runner.invoke(main, ["generate", "--events", "2", "--exp", "3", "--run", "7", "--checkpoint",
                                      str(checkpoints["A"]), "--seed", "99", "--batch", "2", "-o", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(out)
    with DigitsReader(outs[0]) as a, DigitsReader(outs[1]) as b:
        assert len(a) == 2 and list(a.exp) == [3, 3] and list(a.run) == [7, 7] and list(a.evt) == [1, 2]
        assert a.attrs["generator_seed"] == 99 and a.attrs["generator_model"] == "convnet"
        for i in range(2):
            ea, eb = a.event(i), b.event(i)
            ea.validate()
            assert len(ea) > 0 and np.array_equal(ea.pixel_key, eb.pixel_key)
            assert np.array_equal(ea.charge, eb.charge)


def test_generate_over_runs_crossing_an_iov_boundary(checkpoints, tmp_path, monkeypatch):
    calls = []

    def resolver(model, exp, run, campaign, globaltag):  # IoVs: runs 1..5 -> A, 6.. -> B
        calls.append((exp, run, campaign))
        name = "A" if run <= 5 else "B"
        path = checkpoints[name]
        return ResolvedCheckpoint(path, read_manifest(path), name)

    monkeypatch.setattr(pxdbg.module, "default_resolver", resolver)
    runs = tmp_path / "runs.txt"
    runs.write_text("0:4-5\n0:6 2\n")
    out = tmp_path / "out.h5"
    result = CliRunner().invoke(main, ["generate", "--model", "convnet", "--events", "1", "--runs-file", str(runs),
                                       "--campaign", "c", "--seed", "1", "--no-progress", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 checkpoint load(s)" in result.output
    assert calls == [(0, 4, "c"), (0, 5, "c"), (0, 6, "c")]
    with DigitsReader(out) as r:
        assert list(r.run) == [4, 5, 6, 6] and list(r.evt) == [1, 1, 1, 2]
        assert r.attrs["generator_loads"] == 2
        # What was used, by name and hash (never a local path); which run came from which.
        lines = r.attrs["generator_checkpoints"].split("\n")
        assert lines == [f"file {checkpoints[k].name} sha256 {hashlib.sha256(checkpoints[k].read_bytes()).hexdigest()}"
                         for k in "AB"]
        record = provenance.read(r)
        assert [(run["run"], run["checkpoint"]) for run in record["runs"]] == [(4, 0), (5, 0), (6, 1)]


def test_generate_refuses_bad_input(checkpoints, tmp_path):
    runner = CliRunner()
    out = tmp_path / "x.h5"
    result = runner.invoke(main, ["generate", "--model", "resnet", "--checkpoint", str(checkpoints["A"]),
                                  "--seed", "1", "-o", str(out)])
    assert result.exit_code == 1 and "error:" in result.output and "'convnet'" in result.output
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    result = runner.invoke(main, ["generate", "--runs", "0:3-1", "-o", str(out)])
    assert result.exit_code == 1 and "last run before first" in result.output
    result = runner.invoke(main, ["generate", "--model", "gan", "-o", str(out)])
    assert result.exit_code == 2 and "unknown model 'gan'" in result.output
    result = runner.invoke(main, ["generate", "--events", "0", "-o", str(out)])
    assert result.exit_code == 2


def test_overlay_command(checkpoints, tmp_path):
    runner = CliRunner()
    sig, bg, merged = tmp_path / "sig.h5", tmp_path / "bg.h5", tmp_path / "merged.h5"
    for path, seed in ((sig, "5"), (bg, "6")):
        result = runner.invoke(main, ["generate", "--events", "1", "--checkpoint", str(checkpoints["A"]),
                                      "--seed", seed, "-o", str(path)])
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["overlay", "--signal", str(sig), "--background", str(bg), "-o", str(merged)])
    assert result.exit_code == 0, result.output
    with DigitsReader(sig) as s, DigitsReader(bg) as b, DigitsReader(merged) as m:
        expected = np.minimum(s.dense(0).astype(np.int32) + b.dense(0), 255)
        assert np.array_equal(m.dense(0), expected)
    result = runner.invoke(main, ["overlay", "--signal", str(sig), "--background", str(tmp_path / "no.h5"),
                                  "-o", str(merged)])
    assert result.exit_code == 2


def test_generate_shows_a_progress_bar(checkpoints, tmp_path):
    result = CliRunner().invoke(main, ["generate", "--events", "2", "--checkpoint", str(checkpoints["A"]),
                                       "--seed", "3", "--progress", "-o", str(tmp_path / "p.h5")])
    assert result.exit_code == 0, result.output
    assert "pxdbg generate convnet" in result.output and "2/2" in result.output


def test_generate_output_problems_are_errors_not_tracebacks(checkpoints, tmp_path):
    runner = CliRunner()
    # A missing directory is a usage error, found before any checkpoint is loaded.
    result = runner.invoke(main, ["generate", "--checkpoint", str(checkpoints["A"]), "--seed", "1",
                                  "-o", str(tmp_path / "missing" / "x.h5")])
    assert result.exit_code == 2 and "does not exist" in result.output
    # A file that cannot be created (here: a directory sits where the temporary file goes).
    out = tmp_path / "x.h5"
    (tmp_path / "x.h5.tmp").mkdir()
    result = runner.invoke(main, ["generate", "--checkpoint", str(checkpoints["A"]), "--seed", "1",
                                  "--no-progress", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and "x.h5.tmp" in result.output and "Traceback" not in result.output
    assert not out.exists()
