"""Fit the sparse model (:mod:`pxdbg.models.sparse`) to pxd-digits training files.

Fitting is one pass over the events, no iterations: every fired pixel is assigned to its
8-connected cluster (:func:`pxdbg.validation.metrics.find_clusters`), each cluster becomes
a library entry (centre, pixel offsets, ADC values), and each event a vector of 40
per-sensor cluster counts from which the event-level tables are computed. Minutes on one
core for hundreds of events; memory grows with the number of training pixels.

Nothing here is tuned to a sample: the library holds the sample's own clusters, the event
tables its own counts, and the two smoothing choices follow rules stated where they are
made (nearest neighbours for the counts, ``k = sqrt(N)`` neighbouring ranks for the pools).
When the sample has more pixels than the checkpoint budget (``library_megabytes``), a
seeded uniform subsample of clusters is kept; the counts always use every cluster.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.special import ndtri

from ..digits import DigitsReader
from ..models.sparse import N_CHANNELS, N_KINDS, SparseModel, cluster_kind
from ..sensors import N_SENSORS, N_UCELLS, N_VCELLS
from ..validation.metrics import PIXELS_PER_EVENT, PIXELS_PER_SENSOR, find_clusters

log = logging.getLogger(__name__)

#: Default size budget of the cluster library inside a checkpoint (the file stays < 50 MB).
DEFAULT_LIBRARY_MEGABYTES = 36.0
_BLOCK = 32


@dataclass
class TrainingEvents:
    """Which events of which files a fit uses (``None``: all of a file's events)."""

    path: Path
    events: np.ndarray | None = None


def _clusters_of_block(offsets: np.ndarray, pixel_key: np.ndarray, charge: np.ndarray):
    """Clusters of a block of events: per cluster (owner = event * 40 + sensor, centre u,
    centre v, size), and per pixel, cluster after cluster (du, dv, charge)."""
    n_events = len(offsets) - 1
    event = np.repeat(np.arange(n_events, dtype=np.int64), np.diff(offsets))
    key = event * PIXELS_PER_EVENT + pixel_key.astype(np.int64)
    if len(key) > 1 and np.any(np.diff(key) <= 0):
        order = np.argsort(key, kind="stable")
        key, charge = key[order], charge[order]
        if np.any(np.diff(key) == 0):
            raise ValueError("training events contain the same pixel twice")
    n_clusters, labels = find_clusters(key)
    order = np.argsort(labels, kind="stable")  # pixels grouped by cluster, clusters by owner
    key, charge, labels = key[order], charge[order], labels[order]
    size = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    first = np.zeros(n_clusters, np.int64)
    np.cumsum(size[:-1], out=first[1:])
    rest = key % PIXELS_PER_SENSOR
    u, v = np.divmod(rest, N_VCELLS)
    owner = key[first] // PIXELS_PER_SENSOR
    if n_clusters:
        cu = (np.minimum.reduceat(u, first) + np.maximum.reduceat(u, first)) // 2
        cv = (np.minimum.reduceat(v, first) + np.maximum.reduceat(v, first)) // 2
    else:
        cu = cv = np.zeros(0, np.int64)
    du = u - np.repeat(cu, size)
    dv = v - np.repeat(cv, size)
    return owner, cu, cv, size, du, dv, np.asarray(charge, np.uint8)


def _normal_scores(counts: np.ndarray) -> np.ndarray:
    """Per column, normal scores of the ranks; tied counts share their mean rank, so that a
    block of equal counts (say, the events without any cluster of a kind) is one point of
    the copula, not a spread that noise could carry across into another kind of event."""
    from scipy.stats import rankdata

    n = counts.shape[0]
    ranks = rankdata(counts, axis=0, method="average") - 1.0  # 0 .. n-1
    return ndtri((ranks + 0.5) / n)


def nearest_partners(scores: np.ndarray) -> np.ndarray:
    """Each row's nearest other row (Euclidean), the partner a new event is interpolated
    towards (see :mod:`pxdbg.models.sparse`)."""
    norm = (scores * scores).sum(axis=1)
    d2 = norm[:, None] - 2.0 * scores @ scores.T + norm[None, :]
    np.fill_diagonal(d2, np.inf)
    return np.argmin(d2, axis=1).astype(np.int32)


def read_training_events(sources: Sequence[TrainingEvents], *, progress: bool = False):
    """Clusters of all training events, in event order across the sources: returns
    ``(n_events, owner, cu, cv, size, du, dv, charge)`` with ``owner = event * 40 + sensor``,
    events counted from 0 over all sources."""
    total = 0
    readers = []
    for src in sources:
        reader = DigitsReader(src.path)
        readers.append(reader)
        total += reader.n_events if src.events is None else len(src.events)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="evt", desc="sparse: clustering")
    parts = []
    n_done = 0
    try:
        for src, reader in zip(sources, readers):
            wanted = np.arange(reader.n_events) if src.events is None else np.asarray(src.events, np.int64)
            for b0 in range(0, len(wanted), _BLOCK):
                idx = wanted[b0:b0 + _BLOCK]
                if len(idx) and np.all(np.diff(idx) == 1):
                    offsets, digits = reader.read_range(int(idx[0]), int(idx[-1]) + 1)
                    key, charge = digits.pixel_key, digits.charge
                else:  # a scattered selection (held-out split): event by event
                    events = [reader.event(int(i)) for i in idx]
                    sizes = np.array([len(e) for e in events], np.int64)
                    offsets = np.concatenate([[0], np.cumsum(sizes)])
                    key = np.concatenate([e.pixel_key for e in events]) if sizes.sum() else np.zeros(0, np.int64)
                    charge = np.concatenate([e.charge for e in events]) if sizes.sum() else np.zeros(0, np.uint8)
                owner, cu, cv, size, du, dv, q = _clusters_of_block(offsets, key, charge)
                parts.append((owner + n_done * N_SENSORS, cu.astype(np.uint8), cv.astype(np.uint16),
                              size.astype(np.int32), du.astype(np.int16), dv.astype(np.int16), q))
                n_done += len(idx)
                if bar is not None:
                    bar.update(len(idx))
    finally:
        for reader in readers:
            reader.close()
        if bar is not None:
            bar.close()
    if n_done == 0:
        raise ValueError("no training events")
    return (n_done,) + tuple(np.concatenate([p[i] for p in parts]) for i in range(7))


def kind_edges_of(size: np.ndarray) -> np.ndarray:
    """Largest size of each cluster kind but the last: isolated pixels (size 1), then the
    multi-pixel clusters split at their median size into small and large ones."""
    multi = size[size > 1]
    median = int(np.median(multi)) if len(multi) else 2
    return np.array([1, max(median, 2)], np.int32)


def fit_sparse(sources: Sequence[TrainingEvents | str | Path], *, seed: int = 0,
               library_megabytes: float = DEFAULT_LIBRARY_MEGABYTES, progress: bool = False) -> SparseModel:
    """Fit a :class:`~pxdbg.models.sparse.SparseModel` to the events of ``sources``."""
    sources = [s if isinstance(s, TrainingEvents) else TrainingEvents(Path(s)) for s in sources]
    if not sources:
        raise ValueError("give at least one training file")
    clusters = read_training_events(sources, progress=progress)
    return build_sparse(clusters, seed=seed, library_megabytes=library_megabytes)


def build_sparse(clusters: tuple, *, seed: int = 0, library_megabytes: float = DEFAULT_LIBRARY_MEGABYTES,
                 group_start: np.ndarray | None = None) -> SparseModel:
    """The sparse model of clustered training events (what :func:`read_training_events`
    returns). ``group_start``: events ``[group_start[g], group_start[g + 1])`` form group
    g, e.g. one labelled sample each; a training event's partner is then its nearest
    neighbour within its own group (default: one group)."""
    n_events, owner, cu, cv, size, du, dv, charge = clusters
    if n_events < 2:
        raise ValueError(f"the sparse model needs at least 2 training events, got {n_events}")
    if len(size) == 0:
        raise ValueError("the training events hold no fired pixels")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & ((1 << 64) - 1), 0x5BA25E]))
    group_start = np.array([0, n_events]) if group_start is None else np.asarray(group_start, np.int64)

    # Channels (sensor, kind); the library ordered by (event, channel).
    kind_edges = kind_edges_of(size)
    event, sensor = np.divmod(owner, N_SENSORS)
    slot = event * N_CHANNELS + sensor * N_KINDS + cluster_kind(size, kind_edges)
    order = np.argsort(slot, kind="stable")
    pixel_start = np.zeros(len(size) + 1, np.int64)
    np.cumsum(size, out=pixel_start[1:])
    size_sorted = size[order].astype(np.int64)
    first = np.zeros(len(order), np.int64)
    np.cumsum(size_sorted[:-1], out=first[1:])
    pixel_order = np.repeat(pixel_start[:-1][order] - first, size_sorted) + np.arange(int(size_sorted.sum()))
    slot, cu, cv, size = slot[order], cu[order], cv[order], size[order]
    du, dv, charge = du[pixel_order], dv[pixel_order], charge[pixel_order]
    counts = np.bincount(slot, minlength=n_events * N_CHANNELS).reshape(n_events, N_CHANNELS)

    # The library: every cluster, or a uniform subsample that fits the size budget.
    small = bool(np.abs(du).max() < 128 and np.abs(dv).max() < 128)
    bytes_per_pixel = 3 if small else 5
    needed = len(charge) * bytes_per_pixel + len(size) * 7
    budget = library_megabytes * 1e6
    if needed > budget:
        fraction = budget / needed
        keep = rng.random(len(size)) < fraction
        log.info("sparse: library subsampled to %.1f%% of %d clusters (%.0f MB budget)",
                 100 * fraction, len(size), library_megabytes)
        pixel_keep = np.repeat(keep, size)
        slot, cu, cv, size = slot[keep], cu[keep], cv[keep], size[keep]
        du, dv, charge = du[pixel_keep], dv[pixel_keep], charge[pixel_keep]
    library_counts = np.bincount(slot, minlength=n_events * N_CHANNELS).reshape(n_events, N_CHANNELS)

    # Event level: each event's nearest neighbour, and the pool resolution.
    partner = np.concatenate([nearest_partners(_normal_scores(counts[a:b])) + a
                              for a, b in zip(group_start[:-1], group_start[1:])]).astype(np.int32)
    neighbours = max(1, min(n_events, int(round(math.sqrt(n_events)))))
    log.info("sparse: %d events, %d clusters in the library, %d neighbours", n_events, len(size), neighbours)
    offset_dtype = np.int8 if small else np.int16
    return SparseModel(
        kind_edges=kind_edges,
        event_counts=counts.astype(np.int32), partner=partner, neighbours=neighbours,
        library_counts=library_counts.astype(np.int32), cluster_u=cu.astype(np.uint8),
        cluster_v=cv.astype(np.uint16), cluster_size=size.astype(np.int32),
        pixel_du=du.astype(offset_dtype), pixel_dv=dv.astype(offset_dtype), pixel_charge=charge.astype(np.uint8),
    )


# ----------------------------------------------------------------------------------------
# A training run: split, fit, validate on held-out events, write the checkpoint.


@dataclass(frozen=True)
class SparseTrainConfig:
    """Settings of ``pxdbg train --model sparse`` (recorded in the run's config.json)."""

    #: Fraction of the training events held out for validation (when no validation file).
    holdout: float = 0.2
    seed: int = 0
    library_megabytes: float = DEFAULT_LIBRARY_MEGABYTES
    max_events: int | None = None
    campaign: str | None = None
    #: Events generated for the held-out validation (default: as many as held out, <= 1000).
    validate_events: int | None = None


def _is_synthetic(path: Path) -> bool:
    with DigitsReader(path) as reader:
        generator = reader.attrs.get("generator")
    if isinstance(generator, bytes):
        generator = generator.decode("utf-8", "replace")
    return generator == "pxdbg.datasets.synthetic"


def _split(files: Sequence[Path], config: SparseTrainConfig, validation: Path | None
           ) -> tuple[list[TrainingEvents], list[TrainingEvents], list[dict]]:
    """Training and held-out events of ``files`` (held out: a seeded random ``holdout``
    fraction, unless a separate validation file is given), and the files' records."""
    records, sizes = [], []
    for path in files:
        with DigitsReader(path) as reader:
            n = reader.n_events
        from .data import file_sha256

        records.append({"name": path.name, "events": n, "sha256": file_sha256(path)})
        sizes.append(n)
    total = sum(sizes)
    if config.max_events is not None:
        total = min(total, config.max_events)
    global_index = np.arange(total)
    held = np.zeros(total, bool)
    if validation is None and config.holdout > 0:
        n_held = int(round(config.holdout * total))
        if n_held < 1 or total - n_held < 2:
            raise ValueError(f"cannot hold out {config.holdout:.0%} of {total} events and keep at least 2 to fit; "
                             "use --holdout 0 or a --validation file")
        rng = np.random.default_rng(np.random.SeedSequence([int(config.seed) & ((1 << 64) - 1), 0x401D]))
        held[rng.choice(total, n_held, replace=False)] = True
    train, heldout = [], []
    start = 0
    for path, n in zip(files, sizes):
        idx = global_index[start:start + n] if start < total else np.zeros(0, np.int64)
        local = idx - start
        if len(local):
            train.append(TrainingEvents(path, local[~held[idx]]))
            if held[idx].any():
                heldout.append(TrainingEvents(path, local[held[idx]]))
        start += n
    if validation is not None:
        heldout = [TrainingEvents(validation)]
    return train, heldout, records


def _summarize_events(sources: Sequence[TrainingEvents]):
    from ..validation.metrics import SummaryAccumulator

    acc = SummaryAccumulator()
    for src in sources:
        with DigitsReader(src.path) as reader:
            wanted = np.arange(reader.n_events) if src.events is None else src.events
            for b0 in range(0, len(wanted), _BLOCK):
                acc.add_digits([reader.event(int(i)) for i in wanted[b0:b0 + _BLOCK]])
    return acc.summary()


def check_training_files(data: Sequence[str | Path], config: SparseTrainConfig,
                         others: Sequence[str | Path] = ()) -> list[Path]:
    """The training files as paths, after checking that there are some, that they (and
    ``others``) exist, and that the hold-out fraction is usable."""
    files = [Path(p) for p in data]
    if not files:
        raise ValueError("give at least one training file")
    if not 0.0 <= config.holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {config.holdout}")
    for path in files + [Path(p) for p in others]:
        if not path.is_file():
            raise ValueError(f"no such training file: {path}")
    return files


def validate_sparse(model: SparseModel, reference, n_events: int, *, seed: int = 0, floor=None):
    """Compare ``n_events`` generated events with a reference summary (and a floor)."""
    from ..validation.metrics import SummaryAccumulator, compare

    acc = SummaryAccumulator()
    for b0 in range(0, n_events, 64):
        offsets, digits = model.generate([(int(seed) & ((1 << 64) - 1), 0x7A11D, i)
                                          for i in range(b0, min(n_events, b0 + 64))])
        acc.add_block(offsets, digits.pixel_key, digits.charge)
    generated = acc.summary()
    return compare(generated, reference, floor), generated


def train_sparse(data: Sequence[str | Path], run_dir: str | Path, config: SparseTrainConfig | None = None, *,
                 validation: str | Path | None = None, floor: str | Path | None = None,
                 progress: bool = False, plots: bool = True) -> Path:
    """Fit the sparse model to ``data`` and write ``<run_dir>/sparse.safetensors`` (with the
    manifest), ``config.json`` and, with held-out events, ``validation/report.json`` and its
    plots. Returns the checkpoint path."""
    import json
    import time

    from registry.manifest import Manifest, software_versions

    from ..models import sparse as sparse_model

    config = config or SparseTrainConfig()
    files = check_training_files(data, config, [p for p in (validation, floor) if p is not None])
    if floor is not None and validation is None:
        raise ValueError("a floor sample needs a --validation sample from the same source")
    run_dir = Path(run_dir)
    if (run_dir / "sparse.safetensors").exists():
        raise ValueError(f"{run_dir} already holds a sparse checkpoint; use another directory")
    validation = Path(validation) if validation is not None else None
    train, heldout, records = _split(files, config, validation)
    run_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = fit_sparse(train, seed=config.seed, library_megabytes=config.library_megabytes, progress=progress)
    fit_seconds = time.perf_counter() - t0
    metrics: dict[str, float] = {"fit_seconds": round(fit_seconds, 3), "training_events": model.n_training_events,
                                 "library_clusters": model.n_clusters, "library_pixels": model.n_pixels,
                                 "neighbours": model.neighbours}
    if heldout:
        reference = _summarize_events(heldout)
        n_val = config.validate_events or min(reference.n_events, 1000)
        floor_summary = _summarize_events([TrainingEvents(Path(floor))]) if floor is not None else None
        report, generated = validate_sparse(model, reference, n_val, seed=config.seed, floor=floor_summary)
        out = run_dir / "validation"
        out.mkdir(exist_ok=True)
        doc = report.to_dict()
        doc["inputs"] = {"reference": "held-out events" if validation is None else str(validation),
                         "generated_events": n_val}
        (out / "report.json").write_text(json.dumps(doc, indent=2, allow_nan=False))
        if plots:
            from ..validation.plots import write_plots

            write_plots(generated, reference, report, out)
        metrics.update({f"heldout_{k}": float(v) for k, v in report.scalars().items() if v is not None
                        and math.isfinite(v)})
        metrics.update({"heldout_generated_events": float(n_val), "heldout_reference_events": float(reference.n_events)})
        ratios = report.floor_ratios() or {}
        metrics.update({f"heldout_floor_ratio_{k}": float(v) for k, v in ratios.items() if math.isfinite(v)})

    synthetic = all(_is_synthetic(p) for p in files)
    names = ", ".join(f"{r['name']} ({r['events']} events)" for r in records)
    description = (f"sparse model fitted on CPU in {fit_seconds:.0f} s to {model.n_training_events} events of "
                   f"{'the synthetic stand-in sample ' if synthetic else ''}{names}")
    if synthetic:
        description += "; not a physics model"
    if heldout:
        description += (f"; validated on {int(metrics['heldout_reference_events'])} held-out events"
                        if validation is None else f"; validated on {validation.name}")
    manifest = Manifest(
        model="sparse", architecture_version=sparse_model.ARCHITECTURE_VERSION, campaign=config.campaign,
        training_dataset="; ".join(f"{r['name']} sha256:{r['sha256']}" for r in records),
        training_steps=None, metrics=metrics, software=software_versions(),
        model_config={"holdout": config.holdout, "seed": config.seed,
                      "library_megabytes": config.library_megabytes},
        description=description, training_files=records,
        # Fitted to the synthetic stand-in only: a demo, never a production model.
        demo=synthetic,
    )
    path = sparse_model.save(model, run_dir / "sparse.safetensors", manifest)
    settings = {"model": "sparse", "data": [str(p) for p in files],
                "validation": None if validation is None else str(validation), **config.__dict__}
    (run_dir / "config.json").write_text(json.dumps(settings, indent=2))
    return path
