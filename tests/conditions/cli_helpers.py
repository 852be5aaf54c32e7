"""Running the real ``conditionsdb`` command in a subprocess, isolated from the user's
environment (no CONDITIONSDB_* variables, no real token file, a private payload cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: config (token file) and cache under ``home``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CONDITIONSDB_") and k not in ("CONDITIONS_CACHE_DIR", "XDG_CONFIG_HOME")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CONFIG_HOME"] = str(home / "config")  # where the default token file is looked for
    env["CONDITIONS_CACHE_DIR"] = str(home / "cache")
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str], check: int | None = 0, input: str | None = None,
            ) -> subprocess.CompletedProcess:
    """``conditionsdb ARGS``; asserts the exit status when ``check`` is not None."""
    result = subprocess.run([sys.executable, "-m", "conditions.cli", *args], capture_output=True, text=True,
                            env=env, input=input if input is not None else "", timeout=180, cwd=ROOT)
    if check is not None:
        assert result.returncode == check, (args, result.returncode, result.stdout, result.stderr)
    return result


def write_testing_payloads(directory: Path, prefix: str = "") -> Path:
    """A basf2 testing-payloads directory: ``database.txt`` naming payload files of
    ``{prefix}A``, ``{prefix}B``, ``{prefix}C`` in 5 lines with 3 distinct contents (A r1
    and r2 are the same bytes; C is listed twice) and 4 distinct IoVs."""
    directory.mkdir(parents=True, exist_ok=True)
    a, b, c = f"{prefix}A", f"{prefix}B", f"{prefix}C"
    (directory / f"dbstore_{a}_rev_1.root").write_bytes(b"alpha constants " + prefix.encode())
    (directory / f"dbstore_{a}_rev_2.root").write_bytes(b"alpha constants " + prefix.encode())
    (directory / f"dbstore_{b}_rev_1.root").write_bytes(b"beta constants " + prefix.encode())
    (directory / f"dbstore_{c}_rev_7.root").write_bytes(b"gamma constants " + prefix.encode())
    text = (
        "# local payloads\n"
        f"dbstore/{a} 1 0,0,0,10\n"
        f"dbstore/{a} 2 0,11,0,-1   # same bytes as revision 1\n"
        f"dbstore/{b} 1 0,0,-1,-1\n"
        f"dbstore/{c} 7 1,0,1,-1\n"
        f"dbstore/{c} 7 1,0,1,-1\n"
    )
    (directory / "database.txt").write_text(text)
    return directory / "database.txt"
