"""Checkpoint files: safetensors with a manifest, and legacy torch state dicts.

New checkpoints are safetensors files (tensors only, no code) whose header metadata holds
the :class:`~registry.manifest.Manifest`. Legacy files, as basf2 distributes them, are
torch-serialized state dicts; they are read only through ``torch.load(weights_only=True)``,
which refuses any pickle that would import or call something other than tensors and plain
containers. A refused file raises :class:`UnsafeCheckpointError`; nothing in it runs.

A checkpoint payload's manifest comes, in this order, from the file's safetensors header,
from the payload's metadata (where ``pxdbg checkpoint upload --format basf2`` puts it, the
file itself being the plain state dict basf2's module ``torch.load``s), or, for basf2's own
payloads which carry none, it is inferred from the payload name
(``PXDBackgroundGenerator_<model>``) and the state dict: architecture version
:data:`BASF2_ARCHITECTURE_VERSION`, no training provenance; that is logged.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping

from .exceptions import CheckpointFormatError, ManifestError, UnsafeCheckpointError
from .manifest import Manifest

log = logging.getLogger(__name__)

#: Prefix of checkpoint payload names: ``PXDBackgroundGenerator_<model>``.
PAYLOAD_PREFIX = "PXDBackgroundGenerator_"
#: The architecture version of the weights basf2 publishes: pxdbg's version 1 of each
#: model is basf2's architecture (its state dicts load into the default model strictly).
BASF2_ARCHITECTURE_VERSION = 1
#: ``kind`` of the payload metadata of a checkpoint uploaded by pxdbg.
METADATA_KIND = "pxdbg-checkpoint"

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


def write_basf2_checkpoint(path: str | Path, state_dict: Mapping[str, "torch.Tensor"]) -> Path:
    """Write ``state_dict`` as basf2's module reads its payload: ``torch.save`` of the plain
    state dict (name -> tensor), which ``torch.load(path, map_location="cpu")`` returns
    unchanged, ``weights_only=True`` included. Serialized in memory first (torch's zip
    format, readable by torch >= 1.6): the bytes then depend only on the tensors, so the
    same weights give the same payload. Written atomically."""
    import torch

    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"a basf2 checkpoint holds name -> tensor only, got {key!r}: {type(value).__name__}")
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def manifest_from_metadata(metadata: Mapping[str, Any] | None) -> Manifest | None:
    """The manifest recorded in a checkpoint payload's metadata (None when there is none)."""
    if not metadata or metadata.get("kind") != METADATA_KIND or "manifest" not in metadata:
        return None
    recorded = metadata["manifest"]
    if not isinstance(recorded, Mapping):
        raise ManifestError(f"payload metadata 'manifest' is not an object: {recorded!r}")
    return Manifest.from_dict(recorded)


def infer_legacy_manifest(path: str | Path, payload_name: str) -> Manifest:
    """The manifest of a basf2 checkpoint payload that carries none: the model from the
    payload name ``PXDBackgroundGenerator_<model>``, basf2's architecture, and what the
    state dict holds; read with ``weights_only`` (nothing pickled runs)."""
    if not payload_name.startswith(PAYLOAD_PREFIX) or len(payload_name) == len(PAYLOAD_PREFIX):
        raise ManifestError(f"{path}: a legacy checkpoint without manifest, and its payload name {payload_name!r} "
                            f"does not say the model ({PAYLOAD_PREFIX}<model>)")
    model = payload_name[len(PAYLOAD_PREFIX):]
    state_dict = _read_legacy(Path(path))
    values = sum(t.numel() for t in state_dict.values())
    manifest = Manifest(
        model=model, architecture_version=BASF2_ARCHITECTURE_VERSION,
        description=(f"inferred by pxdbg from basf2 payload {payload_name}: a torch state dict of "
                     f"{len(state_dict)} tensors, {values} values; no training provenance recorded"),
    )
    log.info("%s: %s carries no manifest; inferred one (model %s, architecture version %d, %d tensors)",
             path, payload_name, model, BASF2_ARCHITECTURE_VERSION, len(state_dict))
    return manifest


def payload_manifest(path: str | Path, payload: Any) -> Manifest | None:
    """The manifest of checkpoint payload ``payload`` (a PayloadInfo) whose verified bytes
    are at ``path``: the file's own, else the payload metadata's, else inferred for a torch
    state dict (basf2's format). None for a safetensors file without any."""
    manifest = read_manifest(path)
    if manifest is not None:
        return manifest
    manifest = manifest_from_metadata(getattr(payload, "metadata", None))
    if manifest is not None:
        log.info("%s r%s: manifest read from the payload metadata (basf2-format checkpoint)",
                 payload.name, payload.revision)
        return manifest
    if sniff_format(path) == SAFETENSORS:
        return None
    return infer_legacy_manifest(path, payload.name)
