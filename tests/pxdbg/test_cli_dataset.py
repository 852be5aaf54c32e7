"""`pxdbg dataset synth|info|import-root` and `pxdbg validate` end to end (CliRunner, real files)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from pxdbg.cli import main
from pxdbg.digits import DigitsReader


def synth(tmp_path, name: str, n: int, seed: int):
    out = tmp_path / name
    result = CliRunner().invoke(main, ["dataset", "synth", "-n", str(n), "-s", str(seed), "--run", "7",
                                       "--no-progress", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_synth_is_seeded_and_info_describes_it(tmp_path):
    a, b, c = synth(tmp_path, "a.h5", 3, 1), synth(tmp_path, "b.h5", 3, 1), synth(tmp_path, "c.h5", 3, 2)
    with DigitsReader(a) as ra, DigitsReader(b) as rb, DigitsReader(c) as rc:
        assert ra.n_events == 3 and list(ra.run) == [7, 7, 7]
        same = [np.array_equal(ra.event(i).charge, rb.event(i).charge) for i in range(3)]
        other = [np.array_equal(ra.event(i).charge, rc.event(i).charge) for i in range(3)]
        n_digits = int(ra.offsets[-1])
    assert all(same) and not any(other)
    result = CliRunner().invoke(main, ["dataset", "info", str(a)])
    assert result.exit_code == 0, result.output
    assert f"3 events, {n_digits} digits" in result.output and "exp/run: 0/7" in result.output
    assert "mean occupancy: layer 1" in result.output


def test_validate_writes_report_and_plots(tmp_path):
    gen, ref = synth(tmp_path, "gen.h5", 3, 1), synth(tmp_path, "ref.h5", 4, 2)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["validate", "-g", str(gen), "-r", str(ref), "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_generated"] == 3 and report["n_reference"] == 4
    assert report["charge_ks"] > 0 and report["frechet_distance"] > 0  # two different seeds
    assert {p.name for p in out.glob("*.png")} >= {"occupancy.png", "charge_spectrum.png", "spearman_difference.png"}
    assert f"report: {out / 'report.json'}" in result.output
    # The same sample against itself: zero distances, and no plots with --no-plots.
    same_dir = tmp_path / "same"
    same = CliRunner().invoke(main, ["validate", "-g", str(ref), "-r", str(ref), "-o", str(same_dir),
                                     "--no-plots", "--no-progress"])
    assert same.exit_code == 0, same.output
    scalars = json.loads((same_dir / "report.json").read_text())["scalars"]
    assert scalars["charge_w1"] == 0 and scalars["occupancy_mean_abs_relative_error"] == 0
    assert scalars["frechet_distance"] < 1e-5
    assert not list(same_dir.glob("*.png"))


def test_bad_files_and_paths_are_clear_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["dataset", "synth", "-n", "2", "--no-progress", "-o", str(tmp_path / "no" / "x.h5")])
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not data")
    result = runner.invoke(main, ["dataset", "info", str(junk)])
    assert result.exit_code == 1 and "not a readable HDF5 file" in result.output
    result = runner.invoke(main, ["dataset", "import-root", str(junk), "--no-progress", "-o", str(tmp_path / "r.h5")])
    assert result.exit_code == 1 and "not a readable ROOT file" in result.output
    assert not (tmp_path / "r.h5").exists()
    result = runner.invoke(main, ["validate", "-g", str(junk), "-r", str(junk), "-o", str(tmp_path / "v")])
    assert result.exit_code == 1 and "not a readable HDF5 file" in result.output
    result = runner.invoke(main, ["validate", "-g", str(tmp_path / "none.h5"), "-r", str(junk), "-o", str(tmp_path / "v")])
    assert result.exit_code == 2 and "no such file" in result.output
