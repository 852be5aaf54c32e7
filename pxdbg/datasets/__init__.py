"""PXD background samples: the synthetic stand-in, basf2 ROOT import, dense batches for training."""

from .dense import count_events, iter_dense_events, read_dense
from .root_import import RootImportError, import_root
from .synthetic import SyntheticBackground, SyntheticConfig, write_synthetic

__all__ = [
    "count_events", "iter_dense_events", "read_dense", "RootImportError", "import_root",
    "SyntheticBackground", "SyntheticConfig", "write_synthetic",
]
