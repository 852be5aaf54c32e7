"""The embedded default conditions store, shipped inside the package.

It makes ``pxdbg generate --events N`` work on a fresh install with no network and no
configuration: it holds one default checkpoint per model (payloads
``PXDBackgroundGenerator_<model>``) in the PUBLISHED global tag ``PXDBackgroundGenerator``,
each with the IoV "always" ``(0, 0, -1, -1)``. The registry asks it last, after every
configured source (see :mod:`registry.resolve`).

Layout (relative to this package, nothing else is referenced)::

    registry/embedded/store/metadata.sqlite                          basf2 snapshot metadata
    registry/embedded/store/<md5[0:2]>/PXDBackgroundGenerator_<model>_r<rev>.safetensors

The store is a basf2-format snapshot (:mod:`conditions.snapshot`): an SQLite file in
rollback-journal mode, opened with ``mode=ro``, so it is read in place even when the
installation directory is read-only (system or CVMFS installs); nothing is copied or
written. Payload files are MD5-verified before use, as from any other source. basf2 itself
could read the same directory as a local metadata provider.

Rebuild it with ``python scripts/build_embedded.py`` (see :mod:`registry.build_embedded`).
"""

from __future__ import annotations

from pathlib import Path

from conditions.exceptions import NotAStoreError

#: The snapshot directory inside the installed package.
EMBEDDED_STORE_DIR = Path(__file__).resolve().parent / "store"
#: The tag it holds.
EMBEDDED_GLOBALTAG = "PXDBackgroundGenerator"
#: How it is named as the source of a checkpoint (logs, provenance records).
EMBEDDED_SOURCE = "embedded default store"


def open_embedded(directory: str | Path | None = None):
    """The embedded default store as a read-only :class:`conditions.snapshot.SnapshotSource`."""
    from conditions.snapshot import METADATA_FILE, SnapshotSource

    path = Path(directory) if directory is not None else EMBEDDED_STORE_DIR
    if not (path / METADATA_FILE).is_file():
        raise NotAStoreError(
            f"the embedded default store is missing ({path / METADATA_FILE}); this pxdbg "
            "installation is incomplete (reinstall, or rebuild it with scripts/build_embedded.py)"
        )
    source = SnapshotSource(path)
    source.description = f"embedded default store ({path})"
    return source
