"""Every script in examples/ runs, as a user would run it: a subprocess in a fresh temp dir,
with small arguments so that it stays cheap on a 2-core CI machine. The checks read what
the scripts wrote (pxd-digits files, the processes they started), not only their text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pxdbg.digits import DigitsReader
from pxdbg.models import get_model

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

pytestmark = pytest.mark.slow


def run_example(script: str, tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PXDBG_", "CONDITIONSDB_"))}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
               CONDITIONS_CACHE_DIR=str(tmp_path / "user-cache"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_every_example_is_tested_and_documented():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == ["01_generate_default.py", "02_production_run_list.py", "03_admin_campaign_server.py"]
    readme = (EXAMPLES / "README.md").read_text()
    assert all(name in readme for name in scripts)


def test_01_generate_with_the_embedded_default(tmp_path):
    out = run_example("01_generate_default.py", tmp_path, "--events", "1", "--run", "3", "-o", "bg.h5")
    # No source configured: the embedded store answers, and the script says so.
    assert re.search(r"answered by\s+: embedded default store", out)
    assert "PXDBackgroundGenerator_convnet revision" in out and "verified" in out
    # Whatever checkpoint the embedded store holds, it must fit this pxdbg's model.
    assert f"model         : convnet, architecture version {get_model('convnet').ARCHITECTURE_VERSION}" in out
    with DigitsReader(tmp_path / "bg.h5") as reader:
        assert len(reader) == 1
        assert f"digits per event  : {len(reader.event(0))}" in out
        with __import__("h5py").File(tmp_path / "bg.h5") as f:
            assert list(f["run"][:]) == [3] and list(f["evt"][:]) == [1]


def test_02_run_list_across_two_campaigns_switches_checkpoints_at_iov_boundaries(tmp_path):
    out = run_example("02_production_run_list.py", tmp_path, "--events", "1", "--runs", "1:9-10,2:1-2",
                      "--width", "0.0625", "--workdir", "work", "-o", "bg.h5")
    plan = re.findall(r"^\s+(\d+)\s+(\d+)\s+(demo-\w+)\s+PXDBackgroundGenerator_convnet r(\d)\s+(\S+)", out, re.M)
    assert plan == [("1", "9", "demo-early", "1", "1,0,1,9"), ("1", "10", "demo-early", "2", "1,10,1,-1"),
                    ("2", "1", "demo-late", "3", "2,0,2,-1"), ("2", "2", "demo-late", "3", "2,0,2,-1")]
    actions = re.findall(r"^\s+\d+\s+\d+\s+r\d (loaded|same)", out, re.M)
    assert actions == ["loaded", "loaded", "loaded", "same"]
    assert "3 load(s)" in out and "demo-early 2, demo-late 2" in out
    with DigitsReader(tmp_path / "bg.h5") as reader:
        sizes = [len(reader.event(i)) for i in range(len(reader))]
    with __import__("h5py").File(tmp_path / "bg.h5") as f:
        assert list(zip(f["exp"][:], f["run"][:])) == [(1, 9), (1, 10), (2, 1), (2, 2)]
        assert f.attrs["generator_loads"] == 3
    # The demo checkpoints aim at 0.5%, 1% and 2% occupancy: each switch shows in the data.
    assert sizes[0] < sizes[1] < min(sizes[2:]), sizes
    assert np.all(np.array(sizes) > 0)


def test_03_admin_publishes_through_a_server_and_stops_it(tmp_path):
    out = run_example("03_admin_campaign_server.py", tmp_path, "--events", "1", "--workdir", "work")
    assert "(refused, as it should be)" in out and "needs the 'admin' scope" in out
    assert "global tag PXDBackgroundGenerator_demo-admin-2026 is PUBLISHED" in out
    assert "PXDBackgroundGenerator_convnet r1  IoV 5,0,5,-1" in out  # campaign show
    assert re.search(r"exp 5 run 42: PXDBackgroundGenerator_convnet r1 .* from http://127\.0\.0\.1:\d+", out)
    assert "exp 6 run 1 is outside the campaign's IoVs and is refused" in out
    # Server down: the failure is logged with its reason, then the snapshot answers.
    assert re.search(r"WARNING conditions source http://127\.0\.0\.1:\d+ failed \(failing over to the next source\): .*refused", out)
    assert "answered by: snapshot:" in out
    # Secrets are never printed in full.
    assert not re.search(r"cdb_[A-Za-z0-9_-]{20,}", out)
    # The server the script started is gone.
    pid = int(re.search(r"server ready at \S+ after [\d.]+ s \(pid (\d+)\)", out).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (tmp_path / "work" / "snapshot" / "metadata.sqlite").is_file()
