"""Validation of generated PXD background against a reference sample (see ``metrics``)."""

from .metrics import (
    DEFINITIONS,
    FEATURE_NAMES,
    SampleSummary,
    SummaryAccumulator,
    ValidationReport,
    compare,
    frechet_distance,
    histogram_distances,
    spearman_matrix,
    summarize,
    summarize_file,
    validate_files,
)

__all__ = [
    "DEFINITIONS", "FEATURE_NAMES", "SampleSummary", "SummaryAccumulator", "ValidationReport", "compare",
    "frechet_distance", "histogram_distances", "spearman_matrix", "summarize", "summarize_file", "validate_files",
]
