"""The sparse model: PXD background made as digits, never as images.

A dense GAN spends ~600 GFLOP on an event to emit some 20,000 fired pixels out of 7.7
million. This model emits the fired pixels directly, in milliseconds on one CPU core. It is
learned entirely from pxd-digits training files (:mod:`pxdbg.training.sparse` fits it); no
number in it is tuned to one sample. It is a hierarchical, non-parametric model:

1. **Clusters, by kind.** A cluster is a set of 8-connected fired pixels (as in
   :mod:`pxdbg.validation.metrics`). Clusters fall into three kinds by size: isolated pixels,
   small and large clusters (split at the median size of the multi-pixel clusters of the
   training sample). A *channel* is a (sensor, kind) pair: 120 channels.
2. **Event level: how many clusters each channel gets.** Each training event is a vector of
   120 channel counts. A new event's counts lie on the line through a training event (drawn
   uniformly) and its nearest neighbour among the training events, up to a quarter of the
   way towards or away from the neighbour (uniformly), rounded at random: a SMOTE-like
   construction, centred so that the mean counts stay the sample's and short so that their
   spread grows by at most 4%. Distances are taken between
   normal scores of the counts (each channel's ranks through the inverse normal CDF, ties
   sharing their mean rank), so that every channel weighs alike. The marginals (mean
   occupancy, event-to-event spread, the rare high-occupancy frames), the dependence
   between sensors and the event-to-event changes of the cluster mix (an injection-like
   frame has more large clusters everywhere) are those of the training sample, including
   non-Gaussian structure: a neighbour in all 120 channels is an event of the same kind,
   so distinct kinds of event (a burst, a quiet frame) are never blended into each other.
3. **Which clusters.** A cluster of a channel is drawn from the *library* of training
   clusters of that channel, in the ``k = sqrt(N)`` training events whose count on the
   channel is nearest to the new event's count (among equal counts, at random). Cluster shapes, pixel charges, the relation
   between a cluster's size and charge, grazing tracks, overlapping clusters and noise pixels
   follow the sensor, the kind and how busy the channel is.
4. **Where.** A drawn cluster stays in the position *region* (a 5 x 12 grid over u and v)
   where it was seen, and takes the position of another library cluster of the same sensor,
   kind and region: positions follow the sample's density at the resolution of single cells
   (two v-pitch regions, gradients, edges), and shapes keep their dependence on position. A
   cluster that touched a sensor edge in training keeps touching that edge (it was cut by
   it); any other cluster is placed so that it does not reach an edge.

Clusters in the library are already what the detector made of overlapping particles, so new
clusters are not allowed to touch each other (a hard-core placement): of two clusters of an
event that would touch or overlap, the smaller is moved to another drawn position, for up to
:data:`PLACEMENT_ROUNDS` rounds; after that, overlapping pixels add their charges, clipped
at 255. The merge rate of the sample is then reproduced instead of doubled.

Randomness: each event draws from its own stream, seeded by an *event key* (a tuple of
non-negative ints, e.g. ``(seed, event number)`` or ``(seed, exp, run, evt)``), so an event
depends only on its key, whatever the batch size or the job's partitioning. Generation is
vectorised over the clusters and pixels of a batch; Python loops run per event (the random
draws) and per placement round, never per cluster or per digit.

The checkpoint (:func:`save`, :func:`load`) is a safetensors file of plain integer and float
arrays (no pickle, no code) with the manifest in its header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..digits import PXDDigits
from ..sensors import N_SENSORS, N_UCELLS, N_VCELLS

KIND = "sparse"
#: Version of the checkpoint layout and generation algorithm (checked against manifests).
ARCHITECTURE_VERSION = 1
#: Not a latent-variable model; kept for the model contract.
LATENT_DIM = None
#: Charges come from the training sample, which was zero-suppressed by the detector.
THRESHOLD = None

#: Cluster kinds (isolated pixels, small, large) and channels (sensor, kind).
N_KINDS = 3
N_CHANNELS = N_SENSORS * N_KINDS
#: Position regions per sensor: u and v are cut into this many equal bands.
REGIONS_U, REGIONS_V = 5, 12
N_REGIONS = REGIONS_U * REGIONS_V
#: Rounds of re-placing clusters that touch another one before overlaps are merged.
PLACEMENT_ROUNDS = 5
_PIXELS_PER_SENSOR = N_UCELLS * N_VCELLS
_SEED_MASK = (1 << 64) - 1

#: name -> dtypes allowed, of the arrays a checkpoint holds.
ARRAYS = {
    "kind_edges": (np.int32,),
    "event_counts": (np.int32,),
    "partner": (np.int32,),
    "neighbours": (np.int64,),
    "library_counts": (np.int32,),
    "cluster_u": (np.uint8,),
    "cluster_v": (np.uint16,),
    "cluster_size": (np.int32,),
    "pixel_du": (np.int8, np.int16),
    "pixel_dv": (np.int8, np.int16),
    "pixel_charge": (np.uint8,),
}


class SparseModelError(ValueError):
    """Arrays that do not make a valid sparse model (e.g. a damaged or hostile checkpoint)."""


def cluster_kind(size: np.ndarray, kind_edges: np.ndarray) -> np.ndarray:
    """Kind 0..N_KINDS-1 of clusters of ``size`` pixels: kind i holds sizes up to
    ``kind_edges[i]`` (inclusive), the last kind everything larger."""
    return np.searchsorted(np.asarray(kind_edges), size, side="left")


def _key_entropy(key: Sequence[int] | int) -> list[int]:
    if isinstance(key, (int, np.integer)):
        key = (int(key),)
    return [int(k) & _SEED_MASK for k in key]


def event_stream(key: Sequence[int] | int) -> np.random.Generator:
    """The random stream of the event with ``key`` (see the module docstring)."""
    return np.random.default_rng(np.random.SeedSequence(_key_entropy(key)))


@dataclass
class RankIndex:
    """Training events in rank order of their count on a channel, and the cumulative
    library clusters along that order: what the cluster pools are drawn from.

    One *row* per (group of training events, channel), row ``g * N_CHANNELS + channel``; a
    group is a run of consecutive training events (the whole sample for the sparse model,
    one labelled sample each for :mod:`pxdbg.models.sparse_beam`). Rows are flattened
    into single arrays whose values are shifted row by row so that they increase, so that
    one ``searchsorted`` serves every row at once.
    """

    #: Sorted counts of each row, shifted by ``count_shift[row]``; row r starts at ``pos[r]``.
    count_flat: np.ndarray
    count_shift: np.ndarray
    pos: np.ndarray
    #: Events and window width (pool size in events) of each row.
    n: np.ndarray
    k: np.ndarray
    #: Training event (index over all groups) at each rank, flattened like ``count_flat``.
    order_flat: np.ndarray
    #: Cumulative library clusters along the rank order (rows of n + 1, shifted to increase).
    cum_flat: np.ndarray
    cum_shift: np.ndarray
    cum_pos: np.ndarray

    @classmethod
    def build(cls, event_counts: np.ndarray, library_counts: np.ndarray, group_start: np.ndarray,
              group_k: np.ndarray) -> "RankIndex":
        """Rows for the groups of events ``[group_start[g], group_start[g + 1])`` with
        window widths ``group_k[g]``. Ties are ordered at random, by a fixed seed."""
        tiebreak = np.random.default_rng(0).random(event_counts.shape)
        counts, orders, cums, ns, ks = [], [], [], [], []
        for g in range(len(group_start) - 1):
            a, b = int(group_start[g]), int(group_start[g + 1])
            order = np.lexsort((tiebreak[a:b], event_counts[a:b]), axis=0).T  # (120, n)
            counts.append(np.take_along_axis(event_counts[a:b].T.astype(np.int64), order, axis=1))
            per_rank = np.take_along_axis(library_counts[a:b].T.astype(np.int64), order, axis=1)
            cum = np.zeros((N_CHANNELS, b - a + 1), np.int64)
            np.cumsum(per_rank, axis=1, out=cum[:, 1:])
            orders.append(order + a)
            cums.append(cum)
            ns.append(np.full(N_CHANNELS, b - a, np.int64))
            ks.append(np.full(N_CHANNELS, int(group_k[g]), np.int64))
        n = np.concatenate(ns)
        table_rows = [row for t in counts for row in t]
        cum_rows = [row for c in cums for row in c]
        count_shift = np.zeros(len(n), np.int64)
        np.cumsum([int(r[-1]) + 2 for r in table_rows[:-1]], out=count_shift[1:])
        cum_shift = np.zeros(len(n), np.int64)
        np.cumsum([int(r[-1]) + 1 for r in cum_rows[:-1]], out=cum_shift[1:])
        pos = np.zeros(len(n), np.int64)
        np.cumsum(n[:-1], out=pos[1:])
        return cls(
            count_flat=np.concatenate([r + s for r, s in zip(table_rows, count_shift)]), count_shift=count_shift,
            pos=pos, n=n, k=np.concatenate(ks), order_flat=np.concatenate([o.reshape(-1) for o in orders]),
            cum_flat=np.concatenate([r + s for r, s in zip(cum_rows, cum_shift)]), cum_shift=cum_shift,
            cum_pos=pos + np.arange(len(n), dtype=np.int64),
        )

    def windows(self, rows: np.ndarray, counts: np.ndarray, u: np.ndarray) -> np.ndarray:
        """First rank of the window of ``k`` consecutive ranks of each row whose counts are
        nearest to ``counts`` (smallest largest distance), centred on the count's rank among
        equally near ones: near a gap between kinds of event the window grows away from the
        gap. The count's rank is uniform (``u``) within a block of equal counts, or between
        blocks for a count the row never had."""
        pos, n, k, shift = self.pos[rows], self.n[rows], self.k[rows], self.count_shift[rows]
        flat = self.count_flat
        # A count above a row's largest ranks after it, not among the next row's counts.
        query = np.minimum(counts, flat[pos + n - 1] - shift + 1) + shift
        lo = np.searchsorted(flat, query, side="left") - pos
        hi = np.searchsorted(flat, query, side="right") - pos
        rank = np.where(hi > lo, lo + np.floor(u * (hi - lo)), lo).astype(np.int64)
        k_max = int(k.max())
        start = np.clip(rank[:, None] + np.arange(-k_max, 1)[None, :], 0, (n - k)[:, None])  # (rows, k_max + 1)
        first = flat[pos[:, None] + start] - shift[:, None]
        last = flat[pos[:, None] + start + k[:, None] - 1] - shift[:, None]
        radius = np.maximum(counts[:, None] - first, last - counts[:, None])
        off_centre = np.abs(start + (k[:, None] - 1) / 2.0 - rank[:, None])
        best = np.argmin(radius * (2.0 * n[:, None] + 2.0) + off_centre, axis=1)
        return start[np.arange(len(rows)), best]

    def choose(self, row: np.ndarray, start: np.ndarray, u0: np.ndarray, library_start: np.ndarray,
               channel: np.ndarray) -> np.ndarray:
        """Library index of one cluster per draw: uniform (``u0``) among the library clusters
        of the training events of window (``row``, ``start``); -1 for an empty window.

        One dimension per channel keeps every training event equally used on average;
        nearest neighbours in all 120 dimensions would favour a few central "hub" events and
        overuse their clusters.
        """
        cum_pos, shift = self.cum_pos[row], self.cum_shift[row]
        lo = self.cum_flat[cum_pos + start] - shift
        total = self.cum_flat[cum_pos + start + self.k[row]] - shift - lo
        target = lo + np.minimum(np.floor(u0 * total).astype(np.int64), np.maximum(total - 1, 0))
        # The rank whose clusters hold `target`, for all rows in one searchsorted.
        at = np.searchsorted(self.cum_flat, target + shift, side="right") - 1
        rank = np.clip(at - cum_pos, 0, self.n[row] - 1)
        train_event = self.order_flat[self.pos[row] + rank]
        index = library_start[train_event, channel] + (target - (self.cum_flat[cum_pos + rank] - shift))
        return np.where(total > 0, index, -1)


@dataclass
class SparseModel:
    """A fitted sparse model (see the module docstring). Build one with
    :func:`pxdbg.training.sparse.fit_sparse` or :func:`load`."""

    #: (N_KINDS - 1,) largest cluster size of each kind but the last.
    kind_edges: np.ndarray
    #: (N, 120) cluster counts of each channel in the N training events.
    event_counts: np.ndarray
    #: (N,) each training event's nearest neighbour among the others (normal-score space).
    partner: np.ndarray
    #: Training events (consecutive count ranks of a channel) a new cluster is drawn from.
    neighbours: int
    #: (N, 120) library clusters of each training event and channel; the library is ordered
    #: by event, then channel (channel = sensor * N_KINDS + kind).
    library_counts: np.ndarray
    #: Per library cluster: centre of its bounding box (u, v), pixel count.
    cluster_u: np.ndarray
    cluster_v: np.ndarray
    cluster_size: np.ndarray
    #: Per library pixel, cluster after cluster: offset from its cluster's centre, ADC value.
    pixel_du: np.ndarray
    pixel_dv: np.ndarray
    pixel_charge: np.ndarray
    manifest: object | None = None
    _derived: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.neighbours = int(np.asarray(self.neighbours).reshape(-1)[0])
        self._check()
        self._derive()

    # -- properties ------------------------------------------------------------------------

    @property
    def n_training_events(self) -> int:
        return int(self.event_counts.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_size.shape[0])

    @property
    def n_pixels(self) -> int:
        return int(self.pixel_charge.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that define the model (what a checkpoint stores)."""
        out = {name: np.ascontiguousarray(getattr(self, name)) for name in ARRAYS if name != "neighbours"}
        out["neighbours"] = np.array([self.neighbours], np.int64)
        return out

    def mean_clusters(self) -> np.ndarray:
        """(40,) mean clusters per sensor and event in the training sample."""
        return self.event_counts.mean(axis=0).reshape(N_SENSORS, N_KINDS).sum(axis=1)

    # -- consistency -----------------------------------------------------------------------

    def _check(self) -> None:
        """Refuse arrays that would make generation fail or write invalid digits."""
        for name, dtypes in ARRAYS.items():
            if name == "neighbours":
                continue
            value = getattr(self, name)
            if not isinstance(value, np.ndarray):
                raise SparseModelError(f"sparse model array {name!r} is not an array")
            if value.dtype not in dtypes:
                raise SparseModelError(f"sparse model array {name!r} has dtype {value.dtype}, expected "
                                       + " or ".join(np.dtype(t).name for t in dtypes))
        if self.kind_edges.shape != (N_KINDS - 1,) or (np.diff(self.kind_edges) < 0).any() \
                or (self.kind_edges < 1).any():
            raise SparseModelError(f"kind_edges must be {N_KINDS - 1} increasing sizes >= 1")
        n = self.event_counts.shape[0] if self.event_counts.ndim == 2 else 0
        if n < 2 or self.event_counts.shape != (n, N_CHANNELS):
            raise SparseModelError(f"event_counts must be (N >= 2, {N_CHANNELS}), got {self.event_counts.shape}")
        for name, shape in {"partner": (n,), "library_counts": (n, N_CHANNELS)}.items():
            if getattr(self, name).shape != shape:
                raise SparseModelError(f"{name} must have shape {shape}, got {getattr(self, name).shape}")
        if (self.event_counts < 0).any() or (self.partner < 0).any() or (self.partner >= n).any():
            raise SparseModelError("event_counts must be >= 0 and partner indices in 0..N-1")
        if not 1 <= self.neighbours <= n:
            raise SparseModelError(f"bad neighbours {self.neighbours} (N = {n})")
        if (self.library_counts > self.event_counts).any():
            raise SparseModelError("the library holds more clusters of an event than it had")
        m = self.cluster_size.shape
        if len(m) != 1 or self.cluster_u.shape != m or self.cluster_v.shape != m:
            raise SparseModelError("cluster arrays differ in length")
        if (self.library_counts < 0).any() or int(self.library_counts.sum(dtype=np.int64)) != m[0]:
            raise SparseModelError("library_counts do not add up to the number of library clusters")
        if m[0] and (self.cluster_size < 1).any():
            raise SparseModelError("library clusters must have at least one pixel")
        p = self.pixel_charge.shape
        if self.pixel_du.shape != p or self.pixel_dv.shape != p or int(self.cluster_size.sum(dtype=np.int64)) != p[0]:
            raise SparseModelError("pixel arrays do not match the cluster sizes")
        if p[0] and self.pixel_charge.min() == 0:
            raise SparseModelError("library pixels with zero charge")

    def _derive(self) -> None:
        """Indexes used by generation, computed once at load."""
        d = self._derived
        size = self.cluster_size.astype(np.int64)
        start = np.zeros(len(size) + 1, np.int64)
        np.cumsum(size, out=start[1:])
        d["pixel_start"] = start
        u = self.cluster_u.astype(np.int64)
        v = self.cluster_v.astype(np.int64)
        if self.n_clusters:
            first = start[:-1]
            du, dv = self.pixel_du, self.pixel_dv  # reduced in their own small dtype
            du_min = np.minimum.reduceat(du, first).astype(np.int64)
            du_max = np.maximum.reduceat(du, first).astype(np.int64)
            dv_min = np.minimum.reduceat(dv, first).astype(np.int64)
            dv_max = np.maximum.reduceat(dv, first).astype(np.int64)
        else:
            du_min = du_max = dv_min = dv_max = np.zeros(0, np.int64)
        outside = (u + du_min < 0) | (u + du_max >= N_UCELLS) | (v + dv_min < 0) | (v + dv_max >= N_VCELLS)
        if outside.any():
            raise SparseModelError("library clusters reach outside the sensor at their own position")
        d["du_min"], d["du_max"], d["dv_min"], d["dv_max"] = du_min, du_max, dv_min, dv_max
        # A cluster cut by a sensor edge in training keeps touching that edge.
        d["pin_u"] = (u + du_min == 0) | (u + du_max == N_UCELLS - 1)
        d["pin_v"] = (v + dv_min == 0) | (v + dv_max == N_VCELLS - 1)
        n_train = self.n_training_events
        channel = np.repeat(np.tile(np.arange(N_CHANNELS, dtype=np.int64), n_train),
                            self.library_counts.reshape(-1).astype(np.int64))
        if (cluster_kind(size, self.kind_edges) != channel % N_KINDS).any():
            raise SparseModelError("library clusters are filed under the wrong kind")
        # Position pools: (channel, region), i.e. sensor, kind and region.
        region = (u * REGIONS_U // N_UCELLS) * REGIONS_V + (v * REGIONS_V // N_VCELLS)
        group = channel * N_REGIONS + region
        d["group"] = group
        d["group_members"] = np.argsort(group, kind="stable")
        group_start = np.zeros(N_CHANNELS * N_REGIONS + 1, np.int64)
        np.cumsum(np.bincount(group, minlength=N_CHANNELS * N_REGIONS), out=group_start[1:])
        d["group_start"] = group_start
        # Library clusters of a channel in any event (a fallback pool), and where each
        # (event, channel) block of the library starts.
        d["channel_start"] = group_start[::N_REGIONS]
        lib_start = np.zeros(self.library_counts.size + 1, np.int64)
        np.cumsum(self.library_counts.reshape(-1), out=lib_start[1:])
        d["library_start"] = lib_start[:-1].reshape(self.library_counts.shape)
        # Training events in rank order of each channel's count, for the cluster pools.
        n = self.n_training_events
        d["ranks"] = RankIndex.build(self.event_counts, self.library_counts, np.array([0, n]),
                                     np.array([self.neighbours]))

    # -- generation ------------------------------------------------------------------------

    def generate(self, keys: Iterable[Sequence[int] | int]) -> tuple[np.ndarray, PXDDigits]:
        """One event per key, as ``(offsets, digits)``: event j owns
        ``digits[offsets[j]:offsets[j + 1]]``, sorted by (sensor, ucell, vcell), unique per
        pixel. Each event depends only on its key (see the module docstring)."""
        keys = list(keys)
        if not keys:
            return np.zeros(1, np.int64), PXDDigits.empty()
        draws = [self._event_draws(key) for key in keys]
        starts = np.stack([dr[0] for dr in draws])
        counts = np.stack([dr[1] for dr in draws])
        return self._place(counts, starts, np.concatenate([dr[2] for dr in draws]))

    def generate_events(self, keys: Iterable[Sequence[int] | int]) -> list[PXDDigits]:
        """:meth:`generate` as one :class:`PXDDigits` per event."""
        offsets, d = self.generate(keys)
        return [PXDDigits(d.sensor[a:b], d.ucell[a:b], d.vcell[a:b], d.charge[a:b])
                for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    def _event_draws(self, key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Everything random about one event, drawn from the event's own stream: for each
        channel its cluster count and the first rank of the training events its clusters are
        drawn from; uniforms for choosing and placing each cluster."""
        rng = event_stream(key)
        n = self.n_training_events
        parent = int(rng.integers(n))
        # A step along the line through the drawn event and its neighbour, centred on the
        # drawn event: the mean counts stay the sample's (a step only towards neighbours
        # would pull every channel towards the "hub" events that are many events' nearest),
        # and short, so that the counts' own spread grows by at most 2 E[step^2] = 4%.
        step = 0.5 * (rng.random() - 0.5)
        value = (1.0 - step) * self.event_counts[parent] + step * self.event_counts[self.partner[parent]]
        counts = np.maximum(np.floor(value + rng.random(N_CHANNELS)), 0).astype(np.int64)
        start = self._derived["ranks"].windows(np.arange(N_CHANNELS), counts, rng.random(N_CHANNELS))
        uniforms = rng.random((int(counts.sum()), 2 + PLACEMENT_ROUNDS))
        return start, counts, uniforms

    def _choose_clusters(self, counts: np.ndarray, starts: np.ndarray, u0: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Library index (-1: none available), event and channel of each new cluster, in
        the order of the draws (events, then channels); see :meth:`RankIndex.choose`."""
        rows = np.repeat(np.arange(counts.size), counts.reshape(-1))
        event, channel = np.divmod(rows, N_CHANNELS)
        index = self.choose_in_windows(channel, starts.reshape(-1)[rows], u0, channel)
        return index, event, channel

    def choose_in_windows(self, row: np.ndarray, start: np.ndarray, u0: np.ndarray, channel: np.ndarray,
                          ranks: RankIndex | None = None) -> np.ndarray:
        """Library index of one cluster per draw: from the window (``row`` of the rank index
        ``ranks``, default the model's own; first rank ``start``) picked by uniform ``u0``; a
        window without clusters of the channel falls back to the channel's clusters in any
        training event (-1: none)."""
        d = self._derived
        index = (ranks or d["ranks"]).choose(row, start, u0, d["library_start"], channel)
        empty = index < 0
        if empty.any():
            c = channel[empty]
            lo_c = d["channel_start"][c]
            n_c = d["channel_start"][c + 1] - lo_c
            pick = lo_c + np.minimum(np.floor(u0[empty] * n_c).astype(np.int64), np.maximum(n_c - 1, 0))
            members = d["group_members"]
            index[empty] = np.where(n_c > 0, members[np.minimum(pick, max(len(members) - 1, 0))], -1)
        return index

    def _positions(self, index: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre (u, v) for library clusters ``index``: the position of another library
        cluster of the same sensor, kind and region (picked by uniforms ``u``), edges
        respected."""
        d = self._derived
        group = d["group"][index]
        lo = d["group_start"][group]
        n = d["group_start"][group + 1] - lo  # >= 1: the cluster itself is a member
        anchor = d["group_members"][lo + np.minimum(np.floor(u * n).astype(np.int64), n - 1)]
        own_u, own_v = self.cluster_u[index].astype(np.int64), self.cluster_v[index].astype(np.int64)
        cu, cv = self.cluster_u[anchor].astype(np.int64), self.cluster_v[anchor].astype(np.int64)
        # Not cut by an edge in training: must not reach one here either (else stay put).
        fits_u = (cu + d["du_min"][index] >= 1) & (cu + d["du_max"][index] <= N_UCELLS - 2)
        fits_v = (cv + d["dv_min"][index] >= 1) & (cv + d["dv_max"][index] <= N_VCELLS - 2)
        pu = np.where(d["pin_u"][index] | ~fits_u, own_u, cu)
        pv = np.where(d["pin_v"][index] | ~fits_v, own_v, cv)
        return pu, pv

    def _place(self, counts: np.ndarray, starts: np.ndarray, allu: np.ndarray) -> tuple[np.ndarray, PXDDigits]:
        index, event, channel = self._choose_clusters(counts, starts, allu[:, 0])
        return self.place_clusters(index, event, channel, allu, len(counts))

    def place_clusters(self, index: np.ndarray, event: np.ndarray, channel: np.ndarray, allu: np.ndarray,
                       n_events: int) -> tuple[np.ndarray, PXDDigits]:
        """Digits of ``n_events`` events made of library clusters ``index`` (-1: skipped) of
        events ``event`` and channels ``channel``, placed with the uniforms ``allu[:, 1:]``
        (see the module docstring), as ``(offsets, digits)``."""
        d = self._derived
        keep = index >= 0
        if not keep.all():
            index, event, channel, allu = index[keep], event[keep], channel[keep], allu[keep]
        sensor = channel // N_KINDS
        pu, pv = self._positions(index, allu[:, 1])

        # Pixels of the new clusters, cluster after cluster.
        size = self.cluster_size[index].astype(np.int64)
        n_pix = int(size.sum())
        owner = np.repeat(np.arange(len(index), dtype=np.int64), size)
        first = np.zeros(len(index), np.int64)
        np.cumsum(size[:-1], out=first[1:])
        pixel = (d["pixel_start"][:-1][index] - first)[owner] + np.arange(n_pix, dtype=np.int64)
        # key = base + centre: only the centre changes when a cluster moves.
        base = (((event * N_SENSORS + sensor) * _PIXELS_PER_SENSOR)[owner]
                + self.pixel_du[pixel].astype(np.int64) * N_VCELLS + self.pixel_dv[pixel])
        centre = pu * N_VCELLS + pv

        # Sorted (key, pixel) pairs. Of two clusters that touch, the smaller one moves (it
        # finds room more easily than a long track); between equals, the later one.
        spx = np.argsort(base + centre[owner], kind="stable")
        skey = base[spx] + centre[owner[spx]]
        priority = (size << 32) + (len(index) - np.arange(len(index), dtype=np.int64))
        moving = _touching(skey, owner[spx], priority)
        for round_ in range(PLACEMENT_ROUNDS):
            if not moving.any():
                break
            mv = np.flatnonzero(moving)
            pu[mv], pv[mv] = self._positions(index[mv], allu[mv, 2 + round_])
            centre[mv] = pu[mv] * N_VCELLS + pv[mv]
            # Settled pixels stay sorted; moved clusters are checked against them and each other.
            settled = ~moving[owner[spx]]
            skey, spx = skey[settled], spx[settled]
            mpx = np.flatnonzero(moving[owner])
            mkey = base[mpx] + centre[owner[mpx]]
            morder = np.argsort(mkey, kind="stable")
            mkey, mpx = mkey[morder], mpx[morder]
            moving = _touching(mkey, owner[mpx], priority) | _touching_settled(mkey, owner[mpx], skey, len(index))
            merged = np.argsort(np.concatenate([skey, mkey]), kind="stable")  # two sorted runs: a merge
            skey = np.concatenate([skey, mkey])[merged]
            spx = np.concatenate([spx, mpx])[merged]

        # Pixels fired by two clusters (left after the rounds) add their charges.
        charge = self.pixel_charge[pixel[spx]].astype(np.int64)
        if len(skey):
            starts = np.flatnonzero(np.concatenate([[True], skey[1:] != skey[:-1]]))
            if len(starts) != len(skey):
                skey = skey[starts]
                charge = np.minimum(np.add.reduceat(charge, starts), 255)
        per_event = N_SENSORS * _PIXELS_PER_SENSOR
        ev = skey // per_event
        offsets = np.searchsorted(ev, np.arange(n_events + 1), side="left").astype(np.int64)
        digits = PXDDigits.from_pixel_key(skey - ev * per_event, charge.astype(np.uint8))
        return offsets, digits


def _row_hits(skey: np.ndarray, target: np.ndarray, valid: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (query i, array position j) where sorted ``skey[j]`` is one of the three cells
    ``target[i] + o``, o = 0, 1, 2, with ``valid[o][i]`` (cells of one sensor row: the caller
    passes the cell left of the wanted column and masks cells beyond the row's ends). One
    searchsorted finds the first candidate; the others follow it in sorted order."""
    n = len(skey)
    first = np.searchsorted(skey, target)
    valid_any = np.stack(valid)  # (3, queries)
    rows_i, rows_j = [], []
    for step in range(3):
        j = np.minimum(first + step, n - 1)
        offset = skey[j] - target
        inside = (first + step < n) & (offset >= 0) & (offset <= 2)
        idx = np.flatnonzero(inside)
        idx = idx[valid_any[offset[idx], idx]]
        rows_i.append(idx)
        rows_j.append(j[idx])
    return np.concatenate(rows_i), np.concatenate(rows_j)


def _touching(skey: np.ndarray, scl: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Clusters that overlap or 8-touch a cluster of higher ``priority`` (which stays), among
    pixels with sorted keys ``skey`` owned by clusters ``scl``."""
    moving = np.zeros(len(priority), bool)
    n = len(skey)
    if n < 2:
        return moving
    v = skey % N_VCELLS
    u = (skey // N_VCELLS) % N_UCELLS
    # Overlaps (equal keys) and right neighbours (key + 1 in the same row) are adjacent in
    # sorted order.
    nxt = skey[1:] - skey[:-1]
    same_or_right = np.flatnonzero((nxt == 0) | ((nxt == 1) & (v[:-1] < N_VCELLS - 1)))
    pairs = [(scl[same_or_right], scl[same_or_right + 1])]
    # The three cells of the next row (v - 1, v, v + 1): every 8-neighbour pair once.
    below = u < N_UCELLS - 1
    valid = (below & (v > 0), below, below & (v < N_VCELLS - 1))
    i, j = _row_hits(skey, skey + N_VCELLS - 1, valid)
    pairs.append((scl[i], scl[j]))
    for ca, cb in pairs:
        other = ca != cb
        ca, cb = ca[other], cb[other]
        moving[np.where(priority[ca] < priority[cb], ca, cb)] = True
    return moving


def _touching_settled(mkey: np.ndarray, mcl: np.ndarray, skey: np.ndarray, n_clusters: int) -> np.ndarray:
    """Moved clusters (pixels ``mkey``) that overlap or 8-touch any settled pixel ``skey``."""
    moving = np.zeros(n_clusters, bool)
    if len(mkey) == 0 or len(skey) == 0:
        return moving
    v = mkey % N_VCELLS
    u = (mkey // N_VCELLS) % N_UCELLS
    for du in (-1, 0, 1):
        row_ok = (u + du >= 0) & (u + du < N_UCELLS)
        valid = (row_ok & (v > 0), row_ok, row_ok & (v < N_VCELLS - 1))
        i, _ = _row_hits(skey, mkey + du * N_VCELLS - 1, valid)
        moving[mcl[i]] = True
    return moving


# ----------------------------------------------------------------------------------------
# Checkpoints


def save(model: SparseModel, path: str | Path, manifest) -> Path:
    """Write ``model`` with ``manifest`` as a safetensors checkpoint (atomically)."""
    from registry.checkpoint import write_checkpoint

    return write_checkpoint(path, model.arrays(), manifest)


def from_arrays(arrays: dict[str, np.ndarray], manifest=None) -> SparseModel:
    missing = sorted(set(ARRAYS) - set(arrays))
    unexpected = sorted(set(arrays) - set(ARRAYS))
    if missing or unexpected:
        from registry.exceptions import CheckpointMismatchError

        parts = [f"{label}: {', '.join(keys)}" for label, keys in (("missing", missing), ("unexpected", unexpected))
                 if keys]
        raise CheckpointMismatchError("checkpoint arrays do not fit the sparse model: " + "; ".join(parts))
    return SparseModel(**{name: arrays[name] for name in ARRAYS}, manifest=manifest)


def load(path: str | Path) -> SparseModel:
    """The sparse model in checkpoint ``path``; its manifest is checked first (model name
    and architecture version), before any array is read."""
    from registry.checkpoint import read_arrays
    from registry.exceptions import CheckpointFormatError, CheckpointMismatchError
    from registry.manifest import check_manifest

    arrays, manifest = read_arrays(path)
    if manifest is None:
        raise CheckpointMismatchError(f"{path}: a sparse checkpoint must carry a manifest")
    check_manifest(manifest, "sparse", ARCHITECTURE_VERSION)
    try:
        return from_arrays(arrays, manifest)
    except SparseModelError as exc:
        raise CheckpointFormatError(f"{path}: {exc}") from exc
