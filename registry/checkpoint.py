"""Checkpoint files: safetensors with a manifest, and legacy torch state dicts.

New checkpoints are safetensors files (tensors only, no code) whose header metadata holds
the :class:`~registry.manifest.Manifest`. Legacy files, as basf2 distributes them, are
torch-serialized state dicts; they are read only through ``torch.load(weights_only=True)``,
which refuses any pickle that would import or call something other than tensors and plain
containers. A refused file raises :class:`UnsafeCheckpointError`; nothing in it runs.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Mapping

from .exceptions import CheckpointFormatError, UnsafeCheckpointError
from .manifest import Manifest

#: How a checkpoint file is laid out, as told by its first bytes.
SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"  # torch.save since torch 1.6
TORCH_PICKLE = "torch-pickle"  # the legacy torch.save format (raw pickle stream)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint the registry resolved for one (model, exp, run).

    ``payload_key`` identifies the payload (e.g. name, revision and checksum): two runs
    that resolve to equal keys use the same weights, so the generator does not reload.
    """

    path: Path
    manifest: Manifest | None
    payload_key: Hashable


def sniff_format(path: str | Path) -> str:
    """The layout of a checkpoint file from its first bytes (no parsing, nothing executed)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise CheckpointFormatError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from exc
    # safetensors first: its 8-byte little-endian header length can begin with any byte
    # (0x80 and b"PK" included); a JSON header that fits in the file identifies it.
    if len(head) == 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len <= path.stat().st_size - 8:
            return SAFETENSORS
    if head[:4] == b"PK\x03\x04":
        return TORCH_ZIP
    if head[:1] == b"\x80":  # pickle protocol >= 2 opcode
        return TORCH_PICKLE
    raise CheckpointFormatError(f"{path}: neither a safetensors checkpoint nor a torch state dict")


def write_checkpoint(path: str | Path, state_dict: Mapping[str, "torch.Tensor"], manifest: Manifest) -> Path:
    """Write ``state_dict`` and ``manifest`` to a safetensors file, atomically.

    The file appears under its final name only when complete, so a crashed writer never
    leaves a truncated checkpoint that looks valid.
    """
    from safetensors.torch import save_file

    if not isinstance(manifest, Manifest):
        raise TypeError(f"manifest must be a registry.manifest.Manifest, got {type(manifest).__name__}")
    path = Path(path)
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be str, got {key!r}")
        # safetensors refuses tensors that share storage (tied weights, views); an
        # independent contiguous CPU copy of each is always writable.
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=manifest.to_metadata())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(path: str | Path) -> Manifest | None:
    """The manifest of a checkpoint, without loading its tensors (None for legacy files)."""
    if sniff_format(path) != SAFETENSORS:
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return Manifest.from_metadata(f.metadata())
    except (OSError, ValueError) as exc:
        if isinstance(exc, CheckpointFormatError):
            raise
        raise CheckpointFormatError(f"{path}: unreadable safetensors header ({exc})") from exc


def read_checkpoint(path: str | Path) -> tuple[dict[str, "torch.Tensor"], Manifest | None]:
    """The state dict (on CPU) and manifest of a checkpoint; the manifest is None for
    legacy torch files, which carry none."""
    path = Path(path)
    fmt = sniff_format(path)
    if fmt == SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        manifest = read_manifest(path)
        try:
            return load_file(str(path), device="cpu"), manifest
        except (SafetensorError, OSError) as exc:
            raise CheckpointFormatError(f"{path}: corrupt safetensors checkpoint ({exc})") from exc
    return _read_legacy(path), None


def _read_legacy(path: Path) -> dict[str, "torch.Tensor"]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses globals outside its allow-list before constructing them.
        raise UnsafeCheckpointError(
            f"{path}: refused to load a torch checkpoint whose pickle needs code beyond tensors "
            f"and plain containers ({str(exc).splitlines()[0] if str(exc) else 'unpickling error'})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointFormatError(f"{path}: unreadable torch checkpoint ({exc})") from exc
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointFormatError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointFormatError(
            f"{path}: not a plain state dict; entries that are not name -> tensor: {bad[:5]!r}"
        )
    return dict(obj)
