"""Build the embedded default store (:mod:`registry.embedded`) from checkpoint files.

Input: one safetensors checkpoint with a manifest per model. Each is (optionally) cast to
float16 storage, uploaded into a scratch SQLite store as payload
``PXDBackgroundGenerator_<model>`` with IoV ``(0, 0, -1, -1)`` in tag
``PXDBackgroundGenerator``, the tag is walked to PUBLISHED, and the tag is exported as a
basf2 snapshot that replaces ``registry/embedded/store`` in one rename.

This module does not import :mod:`pxdbg` (the registry sits below it); the command
``python scripts/build_embedded.py`` adds what needs the model code: checking the
architecture versions and making untrained placeholder checkpoints.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from conditions.iov import IntervalOfValidity

from .admin import cast_checkpoint, copy_tree_atomically, publish_tag, upload_checkpoint
from .checkpoint import read_manifest
from .embedded import EMBEDDED_GLOBALTAG, EMBEDDED_STORE_DIR
from .exceptions import ManifestError, ManifestMismatchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedEntry:
    model: str
    file: Path
    size: int
    md5: str
    note: str | None


def build_embedded_store(checkpoints: Mapping[str, str | Path], destination: str | Path = EMBEDDED_STORE_DIR,
                         *, dtype: str | None | Mapping[str, str | None] = "float16",
                         architecture_versions: Mapping[str, int] | None = None) -> list[EmbeddedEntry]:
    """Write the embedded store for ``checkpoints`` ({model: file}) into ``destination``.

    ``dtype``: storage precision of floating-point weights (None keeps them as they are), or
    one per model ({model: dtype}; models not listed are kept as they are).
    ``architecture_versions``: {model: version} the manifests must match.
    """
    destination = Path(destination)
    if not checkpoints:
        raise ValueError("give at least one checkpoint")
    with tempfile.TemporaryDirectory(prefix="pxdbg-embedded-") as scratch:
        scratch = Path(scratch)
        from conditions.snapshot import export_snapshot
        from conditions.store import open_store

        with open_store(scratch / "build.db") as store:
            store.create_tag(EMBEDDED_GLOBALTAG, "default PXD background generator checkpoints (embedded)")
            for model, file in sorted(checkpoints.items()):
                file = Path(file)
                manifest = read_manifest(file)
                if manifest is None:
                    raise ManifestError(f"{file}: an embedded checkpoint needs a manifest")
                if manifest.model != model:
                    raise ManifestMismatchError(f"{file} holds a {manifest.model!r} checkpoint, not {model!r}")
                storage = dtype.get(model) if isinstance(dtype, Mapping) else dtype
                if storage is not None:
                    file = cast_checkpoint(file, scratch / f"{model}.safetensors", storage)
                upload_checkpoint(store, file, model=model, globaltag=EMBEDDED_GLOBALTAG,
                                  iov=IntervalOfValidity.always(),
                                  architecture_version=(architecture_versions or {}).get(model))
            publish_tag(store, EMBEDDED_GLOBALTAG)
            staging = scratch / "snapshot"
            export_snapshot(store, [EMBEDDED_GLOBALTAG], staging)
        destination.parent.mkdir(parents=True, exist_ok=True)
        copy_tree_atomically(staging, destination)

    from conditions.snapshot import SnapshotSource

    entries = []
    with SnapshotSource(destination) as snapshot:
        for record in snapshot.iovs(EMBEDDED_GLOBALTAG):
            path = snapshot.local_path(record.payload)
            entries.append(EmbeddedEntry(record.payload.name.removeprefix("PXDBackgroundGenerator_"),
                                         path, path.stat().st_size, record.payload.checksum,
                                         read_manifest(path).description))
    return sorted(entries, key=lambda e: e.model)
