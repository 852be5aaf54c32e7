"""Fit the beam-conditioned sparse model (:mod:`pxdbg.models.sparse_beam`) to labelled samples.

Training files carry their beam conditions (:mod:`pxdbg.datasets.beam_labels`); files with
equal conditions form one *sample*. Fitting is the sparse model's single pass over the
pooled events (one cluster library for all samples, kinds split at the pooled median size,
partners found within each sample), plus, per sample, its conditions and mean channel
counts, from which the source-term coefficients are fitted (:func:`fit_terms`). At least two
samples with different conditions are needed; the model interpolates inside the hull of
their conditions and extrapolates moderately beyond it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from registry.beam import FIELDS, BeamConditions

from ..datasets.beam_labels import LABEL_ATTR, read_label
from ..models import sparse_beam
from ..models.sparse_beam import SparseBeamModel, drivers, fit_terms
from .sparse import (DEFAULT_LIBRARY_MEGABYTES, SparseTrainConfig, TrainingEvents, _is_synthetic, _split,
                     _summarize_events, build_sparse, check_training_files, read_training_events)

log = logging.getLogger(__name__)


@dataclass
class LabelledSample:
    """Training events taken under one set of beam conditions."""

    conditions: BeamConditions
    sources: list[TrainingEvents] = field(default_factory=list)


def group_by_conditions(files: Sequence[str | Path]) -> list[LabelledSample]:
    """The labelled samples of ``files``: files with equal conditions are one sample, in the
    order their conditions first appear. ValueError for a file without a label."""
    samples: dict[str, LabelledSample] = {}
    for path in map(Path, files):
        conditions = read_label(path)
        if conditions is None:
            raise ValueError(f"{path} carries no beam conditions (file attribute {LABEL_ATTR!r}): label it with "
                             "`pxdbg dataset synth --luminosity ...` or `pxdbg dataset import-root --conditions FILE`")
        key = json.dumps(conditions.values())
        samples.setdefault(key, LabelledSample(conditions)).sources.append(TrainingEvents(path))
    return list(samples.values())


def fit_sparse_beam(samples: Sequence[LabelledSample], *, seed: int = 0,
                    library_megabytes: float = DEFAULT_LIBRARY_MEGABYTES, progress: bool = False,
                    max_extrapolation: float = sparse_beam.DEFAULT_MAX_EXTRAPOLATION) -> SparseBeamModel:
    """Fit a :class:`~pxdbg.models.sparse_beam.SparseBeamModel` to labelled samples."""
    if len({json.dumps(s.conditions.values()) for s in samples}) < 2 or len(samples) != len(
            {json.dumps(s.conditions.values()) for s in samples}):
        raise ValueError("the sparse-beam model needs at least two samples with different beam conditions "
                         f"(got {len(samples)} sample(s)); the conditions must differ in luminosity, currents "
                         "or injection fraction")
    parts, sizes = [], []
    for sample in samples:
        n, *rest = read_training_events(sample.sources, progress=progress)
        if n < 2:
            raise ValueError(f"the sample at {sample.conditions.summary()} has {n} event(s); at least 2 are needed")
        parts.append(rest)
        sizes.append(n)
    start = np.zeros(len(samples) + 1, np.int64)
    np.cumsum(sizes, out=start[1:])
    pooled = [np.concatenate([p[0] + s * 40 for p, s in zip(parts, start[:-1])])]
    pooled += [np.concatenate([p[i] for p in parts]) for i in range(1, 7)]
    base = build_sparse((int(start[-1]), *pooled), seed=seed, library_megabytes=library_megabytes,
                        group_start=start)
    neighbours = np.array([max(1, min(n, int(round(math.sqrt(n))))) for n in sizes], np.int64)
    conditions = np.array([s.conditions.values() for s in samples], np.float64)
    counts = base.event_counts.astype(np.float64)
    means = np.stack([counts[a:b].mean(axis=0) for a, b in zip(start[:-1], start[1:])])
    coefficients = fit_terms(drivers(conditions), means)
    log.info("sparse-beam: %d samples, %d events, %d library clusters", len(samples), base.n_training_events,
             base.n_clusters)
    return SparseBeamModel(base=base, sample_start=start, sample_neighbours=neighbours,
                           sample_conditions=conditions, term_coefficients=coefficients,
                           max_extrapolation=max_extrapolation)


def train_sparse_beam(data: Sequence[str | Path], run_dir: str | Path, config: SparseTrainConfig | None = None, *,
                      max_extrapolation: float = sparse_beam.DEFAULT_MAX_EXTRAPOLATION,
                      progress: bool = False, plots: bool = True) -> Path:
    """Fit the model to the labelled files ``data`` and write
    ``<run_dir>/sparse-beam.safetensors`` (with its manifest) and ``config.json``; with a
    ``holdout`` fraction, each sample's held-out events are compared with events generated
    at that sample's conditions (``validation/sample-<j>/report.json``, and with ``plots``
    the plots)."""
    from registry.manifest import Manifest, software_versions

    from .sparse import validate_sparse

    config = config or SparseTrainConfig()
    files = check_training_files(data, config)
    run_dir = Path(run_dir)
    out_path = run_dir / "sparse-beam.safetensors"
    if out_path.exists():
        raise ValueError(f"{run_dir} already holds a sparse-beam checkpoint; use another directory")
    samples = group_by_conditions(files)
    train_samples, heldout, records = [], [], []
    for sample in samples:
        train, held, recs = _split([s.path for s in sample.sources], config, None)
        train_samples.append(LabelledSample(sample.conditions, train))
        heldout.append(held)
        records.append(recs)
    run_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = fit_sparse_beam(train_samples, seed=config.seed, library_megabytes=config.library_megabytes,
                            progress=progress, max_extrapolation=max_extrapolation)
    fit_seconds = time.perf_counter() - t0
    metrics: dict[str, float] = {"fit_seconds": round(fit_seconds, 3), "training_events": model.n_training_events,
                                 "samples": model.n_samples, "library_clusters": model.base.n_clusters,
                                 "library_pixels": model.base.n_pixels}
    sample_docs = []
    for j, (sample, held) in enumerate(zip(samples, heldout)):
        doc = {"conditions": sample.conditions.to_dict(),
               "training_events": int(model.sample_start[j + 1] - model.sample_start[j]),
               "files": records[j]}
        if held:
            from ..validation.plots import write_plots

            reference = _summarize_events(held)
            n_val = config.validate_events or min(reference.n_events, 1000)
            model.set_conditions(sample.conditions)
            report, generated = validate_sparse(model, reference, n_val, seed=config.seed)
            out = run_dir / "validation" / f"sample-{j}"
            out.mkdir(parents=True, exist_ok=True)
            report_doc = report.to_dict()
            report_doc["inputs"] = {"reference": "held-out events", "conditions": sample.conditions.to_dict(),
                                    "generated_events": n_val}
            (out / "report.json").write_text(json.dumps(report_doc, indent=2, allow_nan=False))
            if plots:  # about half a minute per sample on one core
                write_plots(generated, reference, report, out)
            scalars = {k: float(v) for k, v in report.scalars().items() if v is not None and math.isfinite(v)}
            doc["heldout"] = scalars
            for key in ("occupancy_mean_abs_relative_error", "frechet_distance"):
                if key in scalars:
                    metrics[f"heldout_s{j}_{key}"] = scalars[key]
        sample_docs.append(doc)
    model.fit = None

    synthetic = all(_is_synthetic(p) for p in files)
    description = (f"sparse-beam model fitted on CPU in {fit_seconds:.0f} s to {model.n_training_events} events of "
                   f"{model.n_samples} samples at different beam conditions ("
                   + "; ".join(s.conditions.summary() for s in samples) + ")")
    if synthetic:
        description += " of the synthetic stand-in sample; not a physics model"
    manifest = Manifest(
        model=sparse_beam.NAME, architecture_version=sparse_beam.ARCHITECTURE_VERSION, campaign=config.campaign,
        training_dataset="; ".join(f"{r['name']} sha256:{r['sha256']}" for recs in records for r in recs),
        training_steps=None, metrics=metrics, software=software_versions(),
        model_config={"holdout": config.holdout, "seed": config.seed, "library_megabytes": config.library_megabytes,
                      "max_extrapolation": max_extrapolation, "fields": list(FIELDS),
                      "drivers": list(sparse_beam.DRIVERS), "samples": sample_docs},
        description=description, training_files=[r for recs in records for r in recs], demo=synthetic,
    )
    path = sparse_beam.save(model, out_path, manifest)
    settings = {"model": sparse_beam.NAME, "data": [str(p) for p in files], "max_extrapolation": max_extrapolation,
                **config.__dict__}
    (run_dir / "config.json").write_text(json.dumps(settings, indent=2))
    return path
