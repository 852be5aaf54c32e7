"""Resumable training state: a safetensors file of tensors plus a JSON file of the rest.

Nothing here is pickled, so loading a run directory someone else wrote cannot execute
code. Optimizer state dicts are flattened into named tensors (``<prefix>.<param>.<key>``)
and their param groups into JSON; random generator states are uint8 tensors.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

STATE_FORMAT = "pxdbg-training-state"
STATE_VERSION = 1
TENSORS_NAME = "training_state.safetensors"
JSON_NAME = "training_state.json"


class TrainingStateError(ValueError):
    """A run directory whose training state is missing, incomplete or inconsistent."""

    code = "training_state"


def flatten_optimizer(prefix: str, state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer ``state_dict()`` -> (named tensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    head = prefix + "."
    for name, value in tensors.items():
        if name.startswith(head):
            idx, key = name[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    groups = []
    for group in rest["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state(run_dir: str | Path, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """Write the training state. The tensor file goes first and the JSON file, which names
    the step, last: both carry the step, and :func:`load_state` refuses a pair that
    disagrees (a crash between the two writes)."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    step = int(info["step"])
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"format": STATE_FORMAT, "version": str(STATE_VERSION), "step": str(step)}
    _atomic_write(run_dir / TENSORS_NAME, lambda tmp: save_file(clean, tmp, metadata=meta))
    doc = {"format": STATE_FORMAT, "version": STATE_VERSION, **info}

    def write_json(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)

    _atomic_write(run_dir / JSON_NAME, write_json)


def has_state(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / TENSORS_NAME).is_file() and (run_dir / JSON_NAME).is_file()


def load_state(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, info) of a run directory; :class:`TrainingStateError` if unusable."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not has_state(run_dir):
        raise TrainingStateError(f"{run_dir}: no training state to resume ({TENSORS_NAME} + {JSON_NAME})")
    try:
        with open(run_dir / JSON_NAME) as f:
            info = json.load(f)
        with safe_open(str(run_dir / TENSORS_NAME), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(run_dir / TENSORS_NAME), device="cpu")
    except (OSError, ValueError) as exc:
        raise TrainingStateError(f"{run_dir}: unreadable training state ({exc})") from exc
    if info.get("format") != STATE_FORMAT or meta.get("format") != STATE_FORMAT:
        raise TrainingStateError(f"{run_dir}: not a pxdbg training state")
    if int(info.get("version", -1)) != STATE_VERSION or meta.get("version") != str(STATE_VERSION):
        raise TrainingStateError(f"{run_dir}: unsupported training state version")
    if meta.get("step") != str(info.get("step")):
        raise TrainingStateError(
            f"{run_dir}: training state files disagree (tensors at step {meta.get('step')}, "
            f"JSON at step {info.get('step')}); the run was interrupted while saving"
        )
    return tensors, info
