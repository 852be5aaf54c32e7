"""Compare a generated PXD background sample with a reference sample.

Two steps, so that big files stream and the trainer can reuse a reference:

1. :func:`summarize` (or :class:`SummaryAccumulator`) reduces a sample, one block of events
   at a time, to a :class:`SampleSummary`: per-event fired-pixel counts per sensor, per-event
   Frechet features, and histograms of pixel charge, cluster size and cluster charge.
2. :func:`compare` turns two summaries into a :class:`ValidationReport` (JSON-ready).

Definitions (also written into every report under ``definitions``):

- **occupancy** of a sensor in an event: fired pixels / (250 * 768).
- **cluster**: a set of fired pixels of one sensor connected through their 8 neighbours
  (edges and corners), found with a sparse graph over the digits, never a dense scan.
  Cluster charge = sum of its pixels' ADC values.
- **distances between distributions**: Wasserstein-1 (earth mover's distance, in the
  quantity's own unit: ADU for charges, pixels for cluster size, occupancy fraction for
  occupancies) and the Kolmogorov-Smirnov statistic (largest CDF difference, 0..1). W1 says
  *how far* mass has moved, KS *whether* the shapes differ at all; both are 0 for identical
  samples. Histogram-based W1 uses the bin centres: pixel charge has one bin per ADU value
  (exact); cluster size one bin per pixel count up to 64 with an overflow bin;
  cluster charge 8-ADU bins up to 4096 ADU with an overflow bin.
- **positions**: the u (row) and v (column) cell of every fired pixel, one histogram per
  layer; ``hit_u_ks`` / ``hit_v_ks`` are the larger of the two layers' KS statistics. They
  see the v-pitch regions, gradients and sensor edges.
- **cluster extent**: rows (u) and columns (v) spanned by a cluster's bounding box (1 px
  bins up to 64, overflow), which tells compact clusters from long, thin grazing tracks.
- **Spearman matrix**: rank correlation over events of the 40 per-sensor occupancies. A
  sensor that never changes has no defined correlation; its row and column are reported as
  0 and listed under ``spearman_constant_sensors``.
- **Frechet distance** between Gaussians fitted to per-event feature vectors (as in FID):
  ``|mu_g - mu_r|^2 + Tr(C_g + C_r - 2 (C_g C_r)^(1/2))``. The 44 features per event are
  ``log10(1 + fired pixels)`` of each of the 40 sensors in basf2 order, ``log10(1 + number
  of clusters)``, the mean pixel charge (ADU), the mean cluster size (pixels) and the mean
  cluster charge (ADU) of the event (0 for an event without hits). Both samples are z-scored
  with the *reference* mean and standard deviation per feature first, so no feature
  dominates by its unit; a ridge of 1e-6 on both covariances keeps small samples regular.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.stats

from ..digits import DigitsReader, PXDDigits
from ..sensors import EVENT_SHAPE, N_SENSORS, N_UCELLS, N_VCELLS, sensor_name

PIXELS_PER_SENSOR = N_UCELLS * N_VCELLS
PIXELS_PER_EVENT = N_SENSORS * PIXELS_PER_SENSOR

#: Cluster-size histogram: bin i counts clusters of i pixels; the last bin is ">= MAX".
CLUSTER_SIZE_MAX = 64
#: Cluster-charge histogram: 8-ADU bins from 0 to 4096 ADU, then one overflow bin.
CLUSTER_CHARGE_BIN = 8
CLUSTER_CHARGE_MAX = 4096
N_CLUSTER_CHARGE_BINS = CLUSTER_CHARGE_MAX // CLUSTER_CHARGE_BIN + 1

FEATURE_NAMES = tuple(
    [f"log10(1+fired {sensor_name(i)})" for i in range(N_SENSORS)]
    + ["log10(1+clusters)", "mean pixel charge [ADU]", "mean cluster size [px]", "mean cluster charge [ADU]"]
)
N_FEATURES = len(FEATURE_NAMES)
#: Sensor index of the first layer-2 sensor.
_LAYER2_FIRST = 16
FRECHET_RIDGE = 1e-6

DEFINITIONS = {
    "occupancy": "fired pixels / (250*768) per sensor and event",
    "cluster": "8-connected fired pixels within one sensor; charge = sum of pixel ADC",
    "w1": "Wasserstein-1 distance in the quantity's unit (ADU, pixels, occupancy fraction)",
    "ks": "Kolmogorov-Smirnov statistic, max |CDF_gen - CDF_ref|",
    "histograms": (f"pixel charge: 1 ADU bins 0..255; cluster size: 1 px bins, overflow >= {CLUSTER_SIZE_MAX}; "
                   f"cluster charge: {CLUSTER_CHARGE_BIN} ADU bins, overflow >= {CLUSTER_CHARGE_MAX} ADU"),
    "positions": "u and v cell of every fired pixel, per layer; KS per layer, the larger one reported",
    "cluster_extent": f"u and v extent of each cluster's bounding box (cells), 1 px bins, overflow >= {64}",
    "floor": ("the same comparison between a second, independent reference sample (the floor sample) and "
              "the reference: what sample statistics alone give; ratio = value / floor"),
    "spearman": "rank correlation over events of the 40 per-sensor occupancies; constant sensors -> 0",
    "frechet": ("Frechet distance of Gaussians on 44 per-event features: log10(1+fired pixels) per sensor (40), "
                "log10(1+clusters), mean pixel charge, mean cluster size, mean cluster charge; z-scored with the "
                f"reference mean/std, ridge {FRECHET_RIDGE} on covariances"),
}


# ----------------------------------------------------------------------------------------
# Clusters


def find_clusters(key: np.ndarray) -> tuple[int, np.ndarray]:
    """Label 8-connected clusters among fired pixels.

    ``key``: strictly increasing int64 pixel keys ``((event * 40 + sensor) * 250 + u) * 768 + v``
    (the digits' pixel key, offset by event). Returns ``(n_clusters, label per pixel)``.
    Neighbours never cross a sensor edge, so clusters never span sensors or events.
    """
    n = len(key)
    if n == 0:
        return 0, np.empty(0, np.int32)
    rest = key % PIXELS_PER_SENSOR
    u, v = np.divmod(rest, N_VCELLS)
    has_right = v < N_VCELLS - 1
    has_left = v > 0
    has_below = u < N_UCELLS - 1
    # Only "forward" neighbours (same row to the right, and the three in the next row):
    # every 8-neighbour pair is then found exactly once.
    rows, cols = [], []
    for delta, valid in ((1, has_right),
                         (N_VCELLS - 1, has_below & has_left),
                         (N_VCELLS, has_below),
                         (N_VCELLS + 1, has_below & has_right)):
        target = key + delta
        idx = np.searchsorted(key, target)
        idx_clipped = np.minimum(idx, n - 1)
        hit = valid & (idx < n) & (key[idx_clipped] == target)
        rows.append(np.flatnonzero(hit))
        cols.append(idx_clipped[hit])
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    graph = scipy.sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n)).tocsr()
    n_clusters, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    return int(n_clusters), labels.astype(np.int32, copy=False)


def cluster_properties(key: np.ndarray, charge: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cluster: size (pixels), charge (ADU sum) and the ``key // PIXELS_PER_SENSOR`` of its
    sensor (``event * 40 + sensor``). ``key`` as in :func:`find_clusters`."""
    size, total, owner, _, _ = cluster_shapes(key, charge)
    return size, total, owner


def cluster_shapes(key: np.ndarray, charge: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`cluster_properties` plus each cluster's extent in u and in v (cells spanned by
    its bounding box)."""
    n_clusters, labels = find_clusters(key)
    size = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    total = np.bincount(labels, weights=charge.astype(np.float64), minlength=n_clusters).astype(np.int64)
    owner = np.empty(n_clusters, np.int64)
    owner[labels] = key // PIXELS_PER_SENSOR
    if n_clusters == 0:
        empty = np.zeros(0, np.int64)
        return size, total, owner, empty, empty
    order = np.argsort(labels, kind="stable")
    first = np.zeros(n_clusters, np.int64)
    np.cumsum(size[:-1], out=first[1:])
    u, v = np.divmod(key[order] % PIXELS_PER_SENSOR, N_VCELLS)
    extent_u = np.maximum.reduceat(u, first) - np.minimum.reduceat(u, first) + 1
    extent_v = np.maximum.reduceat(v, first) - np.minimum.reduceat(v, first) + 1
    return size, total, owner, extent_u, extent_v


# ----------------------------------------------------------------------------------------
# Summaries


@dataclass
class SampleSummary:
    """Everything :func:`compare` needs from one sample; small (about 340 bytes per event)."""

    n_events: int
    fired: np.ndarray  # (n_events, 40) int32: fired pixels per sensor
    features: np.ndarray  # (n_events, 44) float64: Frechet features, see FEATURE_NAMES
    charge_hist: np.ndarray  # (256,) int64: pixel ADC value counts, index = ADU
    cluster_size_hist: np.ndarray  # (CLUSTER_SIZE_MAX + 1,) int64, index = size, last = overflow
    cluster_charge_hist: np.ndarray  # (N_CLUSTER_CHARGE_BINS,) int64, last = overflow
    # Added later: None in summaries saved before (their comparisons are NaN).
    hit_u_hist: np.ndarray | None = None  # (2, 250) int64: fired pixels per u cell, per layer
    hit_v_hist: np.ndarray | None = None  # (2, 768) int64: fired pixels per v cell, per layer
    extent_u_hist: np.ndarray | None = None  # (CLUSTER_SIZE_MAX + 1,) cluster u extents, last = overflow
    extent_v_hist: np.ndarray | None = None  # (CLUSTER_SIZE_MAX + 1,) cluster v extents, last = overflow

    @property
    def occupancy(self) -> np.ndarray:
        """(n_events, 40) occupancy fraction per event and sensor."""
        return self.fired / PIXELS_PER_SENSOR

    @property
    def mean_occupancy(self) -> np.ndarray:
        if self.n_events == 0:
            return np.full(N_SENSORS, np.nan)
        return self.occupancy.mean(axis=0)

    def save(self, path: str | Path) -> None:
        """Store as .npz (plain arrays, no pickle), e.g. to reuse a reference summary."""
        np.savez_compressed(Path(path), **{k: np.asarray(v) for k, v in asdict(self).items() if v is not None})

    @classmethod
    def load(cls, path: str | Path) -> "SampleSummary":
        with np.load(Path(path), allow_pickle=False) as data:
            known = {f.name for f in fields(cls)}
            return cls(**{k: (int(data[k]) if k == "n_events" else data[k]) for k in data.files if k in known})


class SummaryAccumulator:
    """Builds a :class:`SampleSummary` from events fed block by block.

    ``add`` takes a :class:`PXDDigits` event, a sequence of them, a dense ``(40, 250, 768)``
    event, a dense batch ``(B, 40, 250, 768)``, or a torch tensor of either dense shape.
    """

    def __init__(self) -> None:
        self._fired: list[np.ndarray] = []
        self._features: list[np.ndarray] = []
        self.charge_hist = np.zeros(256, np.int64)
        self.cluster_size_hist = np.zeros(CLUSTER_SIZE_MAX + 1, np.int64)
        self.cluster_charge_hist = np.zeros(N_CLUSTER_CHARGE_BINS, np.int64)
        self.hit_u_hist = np.zeros((2, N_UCELLS), np.int64)
        self.hit_v_hist = np.zeros((2, N_VCELLS), np.int64)
        self.extent_u_hist = np.zeros(CLUSTER_SIZE_MAX + 1, np.int64)
        self.extent_v_hist = np.zeros(CLUSTER_SIZE_MAX + 1, np.int64)
        self.n_events = 0

    def add(self, item: Any) -> int:
        """Add events; returns how many were added."""
        if isinstance(item, PXDDigits):
            return self.add_digits([item])
        if hasattr(item, "detach"):  # a torch tensor, without importing torch here
            item = item.detach().cpu().numpy()
        if isinstance(item, np.ndarray):
            return self.add_dense(item)
        return self.add_digits(list(item))

    def add_digits(self, events: list[PXDDigits]) -> int:
        if not events:
            return 0
        sizes = np.array([len(d) for d in events], np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        key = np.concatenate([d.pixel_key for d in events]) if sizes.sum() else np.empty(0, np.int64)
        charge = np.concatenate([d.charge for d in events]) if sizes.sum() else np.empty(0, np.uint8)
        return self.add_block(offsets, key, charge)

    def add_block(self, offsets: np.ndarray, pixel_key: np.ndarray, charge: np.ndarray) -> int:
        """Add ``len(offsets) - 1`` events whose digits are concatenated: event j owns
        ``pixel_key[offsets[j]:offsets[j+1]]`` (per-event :attr:`PXDDigits.pixel_key`)."""
        n = len(offsets) - 1
        event = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
        key = event * PIXELS_PER_EVENT + pixel_key.astype(np.int64)
        if len(key) > 1:
            step = np.diff(key)
            if np.any(step <= 0):
                if np.any(step == 0) or np.unique(key).size != key.size:
                    raise ValueError("events contain the same pixel twice; digits must be unique per pixel")
                order = np.argsort(key, kind="stable")
                key, charge = key[order], charge[order]
        self._add_global(n, key, np.asarray(charge, np.uint8))
        return n

    def add_dense(self, batch: np.ndarray) -> int:
        batch = np.asarray(batch)
        if batch.shape == EVENT_SHAPE:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != EVENT_SHAPE:
            raise ValueError(f"dense events must have shape {EVENT_SHAPE} or (B, *{EVENT_SHAPE}), got {batch.shape}")
        if batch.dtype != np.uint8:
            if np.issubdtype(batch.dtype, np.floating) or batch.min(initial=0) < 0 or batch.max(initial=0) > 255:
                raise ValueError(f"dense events must be ADC values (uint8 0..255), got {batch.dtype}")
            batch = batch.astype(np.uint8)
        flat = np.ascontiguousarray(batch).reshape(-1)
        key = np.flatnonzero(flat)
        self._add_global(batch.shape[0], key, flat[key])
        return batch.shape[0]

    def _add_global(self, n_events: int, key: np.ndarray, charge: np.ndarray) -> None:
        """``key``: strictly increasing ``event * PIXELS_PER_EVENT + pixel key`` within this block."""
        if n_events == 0:
            return
        owner = key // PIXELS_PER_SENSOR  # event * 40 + sensor
        fired = np.bincount(owner, minlength=n_events * N_SENSORS).reshape(n_events, N_SENSORS)
        self.charge_hist += np.bincount(charge, minlength=256)[:256]

        pixel = key % PIXELS_PER_SENSOR
        outer = ((key // PIXELS_PER_SENSOR) % N_SENSORS >= _LAYER2_FIRST).astype(np.int64)
        u, v = np.divmod(pixel, N_VCELLS)
        self.hit_u_hist += np.bincount(outer * N_UCELLS + u, minlength=2 * N_UCELLS).reshape(2, N_UCELLS)
        self.hit_v_hist += np.bincount(outer * N_VCELLS + v, minlength=2 * N_VCELLS).reshape(2, N_VCELLS)

        size, ccharge, cowner, ext_u, ext_v = cluster_shapes(key, charge)
        self.cluster_size_hist += np.bincount(np.minimum(size, CLUSTER_SIZE_MAX), minlength=CLUSTER_SIZE_MAX + 1)
        self.extent_u_hist += np.bincount(np.minimum(ext_u, CLUSTER_SIZE_MAX), minlength=CLUSTER_SIZE_MAX + 1)
        self.extent_v_hist += np.bincount(np.minimum(ext_v, CLUSTER_SIZE_MAX), minlength=CLUSTER_SIZE_MAX + 1)
        cbin = np.minimum(ccharge // CLUSTER_CHARGE_BIN, N_CLUSTER_CHARGE_BINS - 1)
        self.cluster_charge_hist += np.bincount(cbin, minlength=N_CLUSTER_CHARGE_BINS)

        event = key // PIXELS_PER_EVENT
        cevent = cowner // N_SENSORS
        n_pix = fired.sum(axis=1)
        n_cl = np.bincount(cevent, minlength=n_events)
        sum_charge = np.bincount(event, weights=charge.astype(np.float64), minlength=n_events)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_charge = np.where(n_pix > 0, sum_charge / np.maximum(n_pix, 1), 0.0)
            mean_size = np.where(n_cl > 0, n_pix / np.maximum(n_cl, 1), 0.0)
            mean_ccharge = np.where(n_cl > 0, sum_charge / np.maximum(n_cl, 1), 0.0)
        feats = np.empty((n_events, N_FEATURES), np.float64)
        feats[:, :N_SENSORS] = np.log10(1.0 + fired)
        feats[:, N_SENSORS] = np.log10(1.0 + n_cl)
        feats[:, N_SENSORS + 1] = mean_charge
        feats[:, N_SENSORS + 2] = mean_size
        feats[:, N_SENSORS + 3] = mean_ccharge
        self._fired.append(fired.astype(np.int32))
        self._features.append(feats)
        self.n_events += n_events

    def summary(self) -> SampleSummary:
        fired = np.concatenate(self._fired) if self._fired else np.zeros((0, N_SENSORS), np.int32)
        feats = np.concatenate(self._features) if self._features else np.zeros((0, N_FEATURES))
        return SampleSummary(
            n_events=self.n_events, fired=fired, features=feats, charge_hist=self.charge_hist.copy(),
            cluster_size_hist=self.cluster_size_hist.copy(), cluster_charge_hist=self.cluster_charge_hist.copy(),
            hit_u_hist=self.hit_u_hist.copy(), hit_v_hist=self.hit_v_hist.copy(),
            extent_u_hist=self.extent_u_hist.copy(), extent_v_hist=self.extent_v_hist.copy(),
        )


def summarize(events: Iterable[Any], *, max_events: int | None = None) -> SampleSummary:
    """Summary of a stream of events; each item is whatever :meth:`SummaryAccumulator.add` takes.

    With ``max_events``, a dense batch that crosses the limit is cut to fit.
    """
    acc = SummaryAccumulator()
    for item in events:
        if max_events is not None:
            left = max_events - acc.n_events
            if left <= 0:
                break
            if hasattr(item, "detach"):
                item = item.detach().cpu().numpy()
            if isinstance(item, np.ndarray) and item.ndim == 4 and item.shape[0] > left:
                item = item[:left]
            elif isinstance(item, (list, tuple)) and len(item) > left:
                item = item[:left]
        acc.add(item)
    return acc.summary()


def summarize_file(path: str | Path, *, max_events: int | None = None, block: int = 64,
                   progress: bool = False, desc: str | None = None) -> SampleSummary:
    """Summary of a pxd-digits file, read ``block`` events at a time."""
    acc = SummaryAccumulator()
    with DigitsReader(path) as reader:
        stop = reader.n_events if max_events is None else min(max_events, reader.n_events)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=stop, desc=desc or Path(path).name, unit="evt")
        for b0 in range(0, stop, block):
            b1 = min(b0 + block, stop)
            offsets, digits = reader.read_range(b0, b1)
            acc.add_block(offsets, digits.pixel_key, digits.charge)
            if bar is not None:
                bar.update(b1 - b0)
        if bar is not None:
            bar.close()
    return acc.summary()


# ----------------------------------------------------------------------------------------
# Distances


def histogram_distances(hist_a: np.ndarray, hist_b: np.ndarray, bin_width: float = 1.0) -> tuple[float, float]:
    """(Wasserstein-1, KS) between two histograms on the same equally spaced bins.

    W1 is in units of the binned quantity (``bin_width`` per bin). An empty histogram has no
    distribution: both distances are NaN then.
    """
    a = np.asarray(hist_a, np.float64)
    b = np.asarray(hist_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"histograms differ in shape: {a.shape} vs {b.shape}")
    if a.sum() <= 0 or b.sum() <= 0:
        return math.nan, math.nan
    cdf_a = np.cumsum(a) / a.sum()
    cdf_b = np.cumsum(b) / b.sum()
    diff = np.abs(cdf_a - cdf_b)
    return float(diff[:-1].sum() * bin_width), float(diff.max())


def sample_distances(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Wasserstein-1, KS) between two 1-D samples; NaN if either is empty."""
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan
    w1 = float(scipy.stats.wasserstein_distance(a, b))
    ks = float(scipy.stats.ks_2samp(a, b).statistic)
    return w1, ks


def spearman_matrix(occupancy: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """40x40 Spearman rank correlation of per-sensor occupancies over events.

    Returns ``(matrix, constant_sensors)``; rows/columns of constant sensors are 0 (with 1 on
    the diagonal), and with fewer than 3 events the whole matrix is NaN.
    """
    occupancy = np.asarray(occupancy, np.float64)
    n, k = occupancy.shape
    if n < 3:
        return np.full((k, k), np.nan), []
    ranks = scipy.stats.rankdata(occupancy, axis=0)
    ranks -= ranks.mean(axis=0)
    norm = np.sqrt((ranks ** 2).sum(axis=0))
    constant = np.flatnonzero(norm == 0)
    norm[norm == 0] = 1.0
    z = ranks / norm
    rho = np.clip(z.T @ z, -1.0, 1.0)
    np.fill_diagonal(rho, 1.0)
    return rho, [int(i) for i in constant]


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray, *, ridge: float = FRECHET_RIDGE) -> float:
    """Frechet distance between Gaussians fitted to two feature samples ``(n, d)``."""
    feat_a = np.asarray(feat_a, np.float64)
    feat_b = np.asarray(feat_b, np.float64)
    if len(feat_a) < 2 or len(feat_b) < 2:
        return math.nan
    mu_a, mu_b = feat_a.mean(axis=0), feat_b.mean(axis=0)
    eye = np.eye(feat_a.shape[1])
    cov_a = np.atleast_2d(np.cov(feat_a, rowvar=False)) + ridge * eye
    cov_b = np.atleast_2d(np.cov(feat_b, rowvar=False)) + ridge * eye
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    covmean = np.real(covmean)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    # Round-off can push identical samples a hair below zero.
    return max(value, 0.0)


def standardized_features(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``features`` z-scored with the reference sample's per-feature mean and std."""
    mu = reference.mean(axis=0)
    sd = reference.std(axis=0)
    sd[sd < 1e-12] = 1.0  # a constant reference feature: keep its unit
    return (features - mu) / sd


# ----------------------------------------------------------------------------------------
# Report


def _jsonable(value: Any) -> Any:
    """Plain JSON: arrays to lists, NaN/inf to null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class ValidationReport:
    """Generated vs reference. Arrays are indexed by sensor (basf2 order, see ``sensors``)."""

    n_generated: int
    n_reference: int
    sensors: list[str]
    occupancy_generated: np.ndarray  # (40,) mean occupancy
    occupancy_reference: np.ndarray
    occupancy_relative_error: np.ndarray  # (gen - ref) / ref; NaN where ref == 0
    occupancy_mean_abs_relative_error: float
    occupancy_w1: np.ndarray  # (40,) W1 between per-event occupancy distributions
    occupancy_ks: np.ndarray
    charge_w1: float
    charge_ks: float
    cluster_size_w1: float
    cluster_size_ks: float
    cluster_charge_w1: float
    cluster_charge_ks: float
    mean_cluster_size_generated: float
    mean_cluster_size_reference: float
    spearman_generated: np.ndarray  # (40, 40)
    spearman_reference: np.ndarray
    spearman_difference: np.ndarray  # generated - reference
    spearman_mean_abs_difference: float  # off-diagonal
    spearman_max_abs_difference: float
    spearman_constant_sensors: dict[str, list[int]]
    frechet_distance: float
    hit_u_ks: float = math.nan
    hit_v_ks: float = math.nan
    cluster_extent_u_w1: float = math.nan
    cluster_extent_v_w1: float = math.nan
    #: With a floor sample (``compare(..., floor=...)``): its event count and its scalars
    #: (the floor sample compared with the reference).
    n_floor: int | None = None
    n_floor_samples: int | None = None
    floor_scalars: dict[str, float] | None = None
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))

    def scalars(self) -> dict[str, float]:
        """The headline numbers, e.g. for a training log or a checkpoint manifest."""
        return {
            "occupancy_mean_abs_relative_error": self.occupancy_mean_abs_relative_error,
            "occupancy_w1_mean": float(np.nanmean(self.occupancy_w1)) if self.n_generated else math.nan,
            "charge_w1": self.charge_w1,
            "charge_ks": self.charge_ks,
            "cluster_size_w1": self.cluster_size_w1,
            "cluster_charge_w1": self.cluster_charge_w1,
            "cluster_extent_u_w1": self.cluster_extent_u_w1,
            "cluster_extent_v_w1": self.cluster_extent_v_w1,
            "hit_u_ks": self.hit_u_ks,
            "hit_v_ks": self.hit_v_ks,
            "spearman_mean_abs_difference": self.spearman_mean_abs_difference,
            "frechet_distance": self.frechet_distance,
        }

    def floor_ratios(self) -> dict[str, float] | None:
        """Each scalar divided by its floor (None without a floor sample): at most ~1 means
        the generated sample is as close to the reference as sample statistics allow."""
        if self.floor_scalars is None:
            return None
        out = {}
        for key, value in self.scalars().items():
            floor = self.floor_scalars.get(key, math.nan)
            ok = floor is not None and math.isfinite(floor) and floor > 0 and math.isfinite(value)
            out[key] = value / floor if ok else math.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scalars"] = self.scalars()
        d["floor_ratios"] = self.floor_ratios()
        return _jsonable(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def summary_lines(self) -> list[str]:
        """A few lines for a terminal."""
        s = self.scalars()

        def f(x: float, fmt: str = ".4g") -> str:
            return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)

        worst = int(np.nanargmax(np.abs(self.occupancy_relative_error))) if np.isfinite(
            self.occupancy_relative_error).any() else None
        lines = [
            f"events: generated {self.n_generated}, reference {self.n_reference}",
            f"occupancy: mean |rel. error| {f(s['occupancy_mean_abs_relative_error'], '.1%')}"
            + (f", worst sensor {self.sensors[worst]} ({f(self.occupancy_relative_error[worst], '+.1%')})"
               if worst is not None else ""),
            f"pixel charge: W1 {f(self.charge_w1)} ADU, KS {f(self.charge_ks)}",
            f"cluster size: W1 {f(self.cluster_size_w1)} px (mean {f(self.mean_cluster_size_generated, '.2f')}"
            f" vs {f(self.mean_cluster_size_reference, '.2f')}), cluster charge: W1 {f(self.cluster_charge_w1)} ADU",
            f"Spearman 40x40: mean |diff| {f(self.spearman_mean_abs_difference, '.3f')}, "
            f"max |diff| {f(self.spearman_max_abs_difference, '.3f')}",
            f"positions: u KS {f(self.hit_u_ks)}, v KS {f(self.hit_v_ks)}; cluster extent W1: "
            f"u {f(self.cluster_extent_u_w1)} px, v {f(self.cluster_extent_v_w1)} px",
            f"Frechet distance (44 features, reference-standardized): {f(self.frechet_distance)}",
        ]
        ratios = self.floor_ratios()
        if ratios is not None:
            samples = (f"the mean of {self.n_floor_samples} independent reference samples"
                       if (self.n_floor_samples or 1) > 1 else "an independent reference sample")
            lines.append(f"against the floor ({self.n_floor} events of {samples}; "
                         "ratio <= 1: as good as the statistics allow):")
            width = max(len(k) for k in ratios)
            for key, value in self.scalars().items():
                lines.append(f"  {key:<{width}}  {f(value):>10}  floor {f(self.floor_scalars.get(key)):>10}  "
                             f"ratio {f(ratios[key], '.2f'):>6}")
        return lines


def _mean_cluster_size(hist: np.ndarray) -> float:
    total = hist.sum()
    return float((hist * np.arange(len(hist))).sum() / total) if total else math.nan


def _position_ks(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """The larger per-layer KS of two (2, cells) position histograms (NaN if unavailable)."""
    if a is None or b is None:
        return math.nan
    values = [histogram_distances(a[layer], b[layer])[1] for layer in range(2)]
    values = [v for v in values if math.isfinite(v)]
    return max(values) if values else math.nan


def _hist_w1(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return math.nan if a is None or b is None else histogram_distances(a, b, 1.0)[0]


def compare(generated: SampleSummary, reference: SampleSummary,
            floor: SampleSummary | Sequence[SampleSummary] | None = None) -> ValidationReport:
    """Compare a generated sample with a reference sample; with ``floor``, an independent
    second reference sample (or several: their mean is a steadier estimate), also report each
    scalar's floor (the floor sample compared with the reference), which is what sample
    statistics alone give."""
    report = _compare(generated, reference)
    if floor is not None:
        floors = [floor] if isinstance(floor, SampleSummary) else list(floor)
        if not floors:
            raise ValueError("give at least one floor sample")
        per_floor = [_compare(f, reference).scalars() for f in floors]
        report.n_floor = floors[0].n_events
        report.n_floor_samples = len(floors)
        report.floor_scalars = {k: float(np.mean([fs[k] for fs in per_floor])) for k in per_floor[0]}
    return report


def _compare(generated: SampleSummary, reference: SampleSummary) -> ValidationReport:
    occ_g, occ_r = generated.occupancy, reference.occupancy
    mean_g, mean_r = generated.mean_occupancy, reference.mean_occupancy
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(mean_r > 0, (mean_g - mean_r) / np.where(mean_r > 0, mean_r, 1.0), np.nan)
    finite = np.isfinite(rel)
    mare = float(np.abs(rel[finite]).mean()) if finite.any() else math.nan

    occ_w1 = np.full(N_SENSORS, np.nan)
    occ_ks = np.full(N_SENSORS, np.nan)
    for s in range(N_SENSORS):
        occ_w1[s], occ_ks[s] = sample_distances(occ_g[:, s], occ_r[:, s])

    charge_w1, charge_ks = histogram_distances(generated.charge_hist, reference.charge_hist, 1.0)
    size_w1, size_ks = histogram_distances(generated.cluster_size_hist, reference.cluster_size_hist, 1.0)
    cc_w1, cc_ks = histogram_distances(generated.cluster_charge_hist, reference.cluster_charge_hist,
                                       float(CLUSTER_CHARGE_BIN))

    rho_g, const_g = spearman_matrix(occ_g)
    rho_r, const_r = spearman_matrix(occ_r)
    diff = rho_g - rho_r
    off = ~np.eye(N_SENSORS, dtype=bool)
    if np.isfinite(diff[off]).any():
        sp_mean = float(np.nanmean(np.abs(diff[off])))
        sp_max = float(np.nanmax(np.abs(diff[off])))
    else:
        sp_mean = sp_max = math.nan

    if generated.n_events >= 2 and reference.n_events >= 2:
        fd = frechet_distance(standardized_features(generated.features, reference.features),
                              standardized_features(reference.features, reference.features))
    else:
        fd = math.nan

    return ValidationReport(
        n_generated=generated.n_events, n_reference=reference.n_events,
        sensors=[sensor_name(i) for i in range(N_SENSORS)],
        occupancy_generated=mean_g, occupancy_reference=mean_r, occupancy_relative_error=rel,
        occupancy_mean_abs_relative_error=mare, occupancy_w1=occ_w1, occupancy_ks=occ_ks,
        charge_w1=charge_w1, charge_ks=charge_ks, cluster_size_w1=size_w1, cluster_size_ks=size_ks,
        cluster_charge_w1=cc_w1, cluster_charge_ks=cc_ks,
        mean_cluster_size_generated=_mean_cluster_size(generated.cluster_size_hist),
        mean_cluster_size_reference=_mean_cluster_size(reference.cluster_size_hist),
        spearman_generated=rho_g, spearman_reference=rho_r, spearman_difference=diff,
        spearman_mean_abs_difference=sp_mean, spearman_max_abs_difference=sp_max,
        spearman_constant_sensors={"generated": const_g, "reference": const_r},
        frechet_distance=fd,
        hit_u_ks=_position_ks(generated.hit_u_hist, reference.hit_u_hist),
        hit_v_ks=_position_ks(generated.hit_v_hist, reference.hit_v_hist),
        cluster_extent_u_w1=_hist_w1(generated.extent_u_hist, reference.extent_u_hist),
        cluster_extent_v_w1=_hist_w1(generated.extent_v_hist, reference.extent_v_hist),
    )


def validate_files(generated_path: str | Path, reference_path: str | Path, out_dir: str | Path | None = None,
                   *, max_events: int | None = None, progress: bool = False,
                   plots: bool = True, floor_path: str | Path | Sequence[str | Path] | None = None
                   ) -> ValidationReport:
    """Compare two pxd-digits files; with ``out_dir``, write ``report.json`` and the PNG plots;
    with ``floor_path`` (a second, independent sample from the reference's source, or
    several), report each metric beside its floor."""
    gen = summarize_file(generated_path, max_events=max_events, progress=progress, desc="generated")
    ref = summarize_file(reference_path, max_events=max_events, progress=progress, desc="reference")
    floor_paths = [] if floor_path is None else (
        [floor_path] if isinstance(floor_path, (str, Path)) else list(floor_path))
    flo = [summarize_file(p, max_events=max_events, progress=progress, desc="floor") for p in floor_paths]
    report = compare(gen, ref, flo or None)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        doc = report.to_dict()
        doc["inputs"] = {"generated": str(generated_path), "reference": str(reference_path),
                         "floor": [str(p) for p in floor_paths] or None, "max_events": max_events}
        tmp = out / "report.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
        tmp.replace(out / "report.json")
        if plots:
            from .plots import write_plots

            write_plots(gen, ref, report, out)
    return report
