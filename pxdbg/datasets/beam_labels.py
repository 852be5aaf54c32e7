"""Beam conditions as labels of training files.

A conditioned model (``sparse-beam``) is trained on several samples, each taken under known
beam conditions. A pxd-digits file carries its conditions in the file attribute
``beam_conditions``: the canonical JSON of a :class:`registry.beam.BeamConditions`
(``pxdbg dataset synth`` writes it from the synthetic sample's parameters, ``pxdbg dataset
import-root --conditions`` from the conditions given for real overlay files). Readers of
pxd-digits that do not know it ignore it, as the format allows.
"""

from __future__ import annotations

from pathlib import Path

from registry.beam import BeamConditions

from ..digits import DigitsReader

#: The file attribute holding a sample's beam conditions.
LABEL_ATTR = "beam_conditions"


def label_attrs(conditions: BeamConditions | None) -> dict[str, str]:
    """File attributes that label a sample with ``conditions`` (none for None)."""
    return {} if conditions is None else {LABEL_ATTR: conditions.to_json()}


def read_label(path: str | Path) -> BeamConditions | None:
    """The beam conditions a pxd-digits file is labelled with (None: not labelled);
    BeamConditionsError for a label that is not valid."""
    with DigitsReader(path) as reader:
        raw = reader.attrs.get(LABEL_ATTR)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return BeamConditions.from_json(str(raw), where=f"{path}: attribute {LABEL_ATTR}")
