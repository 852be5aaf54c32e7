"""The beam-conditioned sparse model (``sparse-beam``): background for each run's conditions.

PXD background is a sum of source terms that scale with the machine: the luminosity term
(QED pairs) with the luminosity, the beam-loss terms (Touschek, beam-gas) with the square of
each ring's current, the injection bursts with the fraction of frames taken after an
injection, plus electronics noise that does not scale at all. This model is the sparse
model (:mod:`pxdbg.models.sparse`: digits made from a library of training clusters) fitted
to several training samples, each labelled with its :class:`~registry.beam.BeamConditions`;
at generation it is set to the conditions of the run (:meth:`SparseBeamModel.set_conditions`).

**Condition space.** A run's conditions map to four *drivers*, one per source term
(:data:`DRIVERS`): luminosity, (HER current / 1 A)^2, (LER current / 1 A)^2 and the injection
fraction. Each driver is measured in units of its largest value among the training samples.

**Where the run lies.** The run's driver vector is written as a convex combination of the
training samples' vectors, with non-negative weights that sum to one; among all such
combinations the one with the smallest weighted spread (sum of ``w_j |d_j - d|^2``) is
taken, so that a run is made from the training samples nearest to it (at most one more
than the number of drivers that vary). A run outside the convex hull of the training
conditions is first projected onto it (least absolute distance): the distance left, the
largest per driver, is the *extrapolation*: 0 inside (interpolation); up to
``max_extrapolation`` (default 0.5, half the largest trained value) the model extrapolates
and says so; beyond, it refuses (:class:`OutOfTrainingRangeError`) unless forced, and
beyond :data:`FORCE_LIMIT` (ten times) even when forced.

**Rates.** Per channel (sensor and cluster kind, 120 of them) the mean cluster count at the
run is the weighted mean of the samples' means: exact wherever the terms are linear in the
drivers, with no model of the terms needed. Outside the hull the *source-term model*
carries it on: each channel's mean count is a non-negative combination of the drivers
(plus a constant), fitted across the samples (:func:`fit_terms`), and the projection's
shortfall is added along it. The model never invents a term it was not trained on: a
driver that is the same in every sample (say the injection fraction) cannot be
extrapolated, and a run that differs in it is outside the hull.

**Events.** An event is made from one training sample, drawn with the weights: its
per-channel counts are that sample's (an interpolated training event, as in the sparse
model), each scaled by the ratio of the run's mean to the sample's mean on that channel and
rounded at random. So the event-to-event fluctuations, the inter-sensor correlations and
the rare busy frames of the nearby samples carry over, and the mixture of scaled samples
matches the rates of the run. **Clusters** of each channel are drawn from the samples in
proportion to what each contributes to the run's mean on that channel
(``w_j * mean_j / mean``), from the training events of that sample whose count on the
channel is nearest to the event's (measured in the sample's own units): the mix of cluster
types (compact low-charge hits with the luminosity, grazing tracks and heavy clusters with
the beam losses) follows the conditions within each kind, as the mix of kinds follows the
rates. Positions and placement are those of the sparse model.

An event depends only on its key and the conditions it was made for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from registry.beam import FIELDS, BeamConditions

from ..digits import PXDDigits
from .sparse import (ARRAYS as SPARSE_ARRAYS, N_CHANNELS, PLACEMENT_ROUNDS, RankIndex, SparseModel,
                     SparseModelError, event_stream)

KIND = "sparse"
NAME = "sparse-beam"
#: Version of the checkpoint layout and generation algorithm (checked against manifests).
ARCHITECTURE_VERSION = 1
LATENT_DIM = None
THRESHOLD = None
#: Made for each run's beam conditions (the generator module gives them at each run).
CONDITIONED = True

#: The source terms' drivers, functions of the run's conditions (see :func:`drivers`).
DRIVERS = ("luminosity", "her_beam_loss", "ler_beam_loss", "injection")
DRIVER_LABELS = {"luminosity": "luminosity [1e34 cm^-2 s^-1]", "her_beam_loss": "(HER current / 1 A)^2",
                 "ler_beam_loss": "(LER current / 1 A)^2", "injection": "injection fraction"}
#: How far beyond the training conditions (in units of each driver's largest trained
#: value) the model extrapolates without being forced.
DEFAULT_MAX_EXTRAPOLATION = 0.5
#: Distances below this are inside the training range (rounding of the LP solution).
_INSIDE = 1e-6
#: Not even forced: ten times a driver's largest trained value beyond the training range
#: is no extrapolation but a guess that could ask for billions of pixels.
FORCE_LIMIT = 10.0

#: Arrays of a checkpoint beyond the sparse model's.
BEAM_ARRAYS = {
    "sample_start": (np.int64,),
    "sample_neighbours": (np.int64,),
    "sample_conditions": (np.float64,),
    "term_coefficients": (np.float64,),
}


class OutOfTrainingRangeError(ValueError):
    """Conditions too far outside the training samples' (refused unless forced)."""


def drivers(values: np.ndarray) -> np.ndarray:
    """(..., 4) drivers of conditions given as (..., 4) arrays in :data:`registry.beam.FIELDS`
    order (luminosity, HER current mA, LER current mA, injection fraction)."""
    values = np.asarray(values, np.float64)
    lumi, her, ler, inj = (values[..., i] for i in range(4))
    return np.stack([lumi, (her / 1000.0) ** 2, (ler / 1000.0) ** 2, inj], axis=-1)


def fit_terms(driver_values: np.ndarray, mean_counts: np.ndarray, *, ridge: float = 1e-4) -> np.ndarray:
    """(120, 5) non-negative clusters per unit of each driver (and a constant, last) per
    channel, fitted to the samples' (J, 120) mean counts at their (J, 4) drivers.

    Least squares with relative (Poisson-like) weights and a small ridge, under
    non-negativity: a term cannot remove clusters. Drivers that vary together in the
    training samples share their part evenly (the ridge); the fit is then only meaningful
    along the directions the samples explore, which is why extrapolation is measured and
    limited (see the module docstring).
    """
    from scipy.optimize import nnls

    scale = _driver_scale(driver_values)
    a = np.hstack([driver_values / scale, np.ones((len(driver_values), 1))])  # (J, 5)
    out = np.zeros((mean_counts.shape[1], a.shape[1]))
    for ch in range(mean_counts.shape[1]):
        b = mean_counts[:, ch]
        weight = 1.0 / np.sqrt(b + 1.0)
        level = max(float(b.mean()), 1.0)
        lhs = np.vstack([a * weight[:, None], math.sqrt(ridge * level) * np.eye(a.shape[1])])
        rhs = np.concatenate([b * weight, np.zeros(a.shape[1])])
        out[ch] = nnls(lhs, rhs)[0]
    out[:, :-1] /= scale  # per raw driver unit
    return out


def _driver_scale(driver_values: np.ndarray) -> np.ndarray:
    scale = np.abs(driver_values).max(axis=0)
    return np.where(scale > 0, scale, 1.0)


@dataclass(frozen=True)
class ConditionsFit:
    """How the model makes background for one set of conditions."""

    conditions: BeamConditions
    #: (J,) weight of each training sample.
    weights: np.ndarray
    #: "interpolation" (inside the training conditions) or "extrapolation".
    status: str
    #: Largest distance beyond the training range, in units of the driver's largest
    #: trained value, and that driver (None inside).
    excess: float
    excess_driver: str | None
    #: Extrapolated further than allowed, because forced.
    forced: bool
    #: (120,) mean clusters per channel the run gets; (J, 4) the samples' conditions.
    mean_counts: np.ndarray
    sample_conditions: np.ndarray
    driver_value: float | None = None
    driver_nearest: float | None = None
    driver_range: tuple[float, float] | None = None

    @property
    def extrapolated(self) -> bool:
        return self.status == "extrapolation"

    def describe(self) -> str:
        used = [(j, w) for j, w in enumerate(self.weights) if w > 1e-9]
        parts = ", ".join(f"{w:.0%} sample {j} ({_short(self.sample_conditions[j])})" for j, w in used)
        if not self.extrapolated:
            return f"interpolation between the training conditions: {parts}"
        lo, hi = self.driver_range or (math.nan, math.nan)
        return (f"EXTRAPOLATION{' (forced)' if self.forced else ''}: {DRIVER_LABELS[self.excess_driver]} "
                f"{self.driver_value:.4g} is {self.excess:.0%} of its largest trained value beyond the training "
                f"range ({lo:.4g}..{hi:.4g}; nearest trained point {self.driver_nearest:.4g}); made from {parts}")

    def record(self) -> dict[str, Any]:
        """For the provenance of generated events."""
        return {
            "status": self.status, "extrapolation": round(float(self.excess), 6),
            "extrapolated_driver": self.excess_driver, "forced": self.forced,
            "samples": [{"sample": j, "weight": round(float(w), 6),
                         "conditions": dict(zip(FIELDS, map(float, self.sample_conditions[j])))}
                        for j, w in enumerate(self.weights) if w > 1e-9],
        }


def _short(values: np.ndarray) -> str:
    lumi, her, ler, inj = (float(v) for v in values)
    return f"L {lumi:g}, HER {her:g} mA, LER {ler:g} mA, inj {inj:g}"


@dataclass
class SparseBeamModel:
    """The sparse model over the pooled training samples (``base``; sample j owns training
    events ``[sample_start[j], sample_start[j + 1])``), plus the samples' conditions and the
    source-term coefficients. Build one with :func:`pxdbg.training.sparse_beam.fit_sparse_beam`
    or :func:`load`; call :meth:`set_conditions` before generating."""

    base: SparseModel
    sample_start: np.ndarray
    sample_neighbours: np.ndarray
    sample_conditions: np.ndarray
    term_coefficients: np.ndarray
    max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION
    manifest: object | None = None

    #: Tells the generator module to give this model each run's conditions.
    conditioned = True

    def __post_init__(self) -> None:
        self._check()
        n_samples = len(self.sample_start) - 1
        counts = self.base.event_counts.astype(np.float64)
        self.sample_means = np.stack([counts[a:b].mean(axis=0) for a, b in
                                      zip(self.sample_start[:-1], self.sample_start[1:])])  # (J, 120)
        self.sample_drivers = drivers(self.sample_conditions)
        self._scale = _driver_scale(self.sample_drivers)
        self._ranks = RankIndex.build(self.base.event_counts, self.base.library_counts, self.sample_start,
                                      self.sample_neighbours)
        self.n_samples = n_samples
        self.fit: ConditionsFit | None = None

    def _check(self) -> None:
        n = self.base.n_training_events
        for name, dtypes in BEAM_ARRAYS.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype not in dtypes:
                raise SparseModelError(f"sparse-beam array {name!r} must be a {np.dtype(dtypes[0]).name} array")
        start = self.sample_start
        j = len(start) - 1
        if start.ndim != 1 or j < 1 or start[0] != 0 or start[-1] != n or (np.diff(start) < 2).any():
            raise SparseModelError(f"sample_start must run from 0 to {n} with at least 2 events per sample")
        if self.sample_neighbours.shape != (j,) or (self.sample_neighbours < 1).any() \
                or (self.sample_neighbours > np.diff(start)).any():
            raise SparseModelError("sample_neighbours must give 1..N_j events per sample")
        if self.sample_conditions.shape != (j, len(FIELDS)) or not np.isfinite(self.sample_conditions).all() \
                or (self.sample_conditions < 0).any():
            raise SparseModelError(f"sample_conditions must be ({j}, {len(FIELDS)}) finite values >= 0")
        if self.term_coefficients.shape != (N_CHANNELS, len(DRIVERS) + 1) \
                or not np.isfinite(self.term_coefficients).all() or (self.term_coefficients < 0).any():
            raise SparseModelError(f"term_coefficients must be ({N_CHANNELS}, {len(DRIVERS) + 1}) finite values >= 0")
        partner = self.base.partner
        owner = np.searchsorted(start, np.arange(n), side="right") - 1
        if (owner[partner] != owner).any():
            raise SparseModelError("a training event's partner lies in another sample")

    # -- conditions ----------------------------------------------------------------------

    def locate(self, conditions: BeamConditions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weights of the training samples for ``conditions`` and the nearest point of the
        training conditions' hull, as (weights, hull point drivers, run drivers)."""
        from scipy.optimize import linprog

        target = drivers(np.array(conditions.values()))
        dn, tn = self.sample_drivers / self._scale, target / self._scale
        n_s, n_d = dn.shape
        # 1. The nearest point of the hull, in least absolute distance (slacks s+ and s-).
        cost = np.concatenate([np.zeros(n_s), np.ones(2 * n_d)])
        a_eq = np.vstack([np.hstack([dn.T, np.eye(n_d), -np.eye(n_d)]),
                          np.concatenate([np.ones(n_s), np.zeros(2 * n_d)])])
        first = linprog(cost, A_eq=a_eq, b_eq=np.concatenate([tn, [1.0]]), bounds=(0, None), method="highs")
        if first.status != 0:  # pragma: no cover - always feasible
            raise RuntimeError(f"cannot place the conditions among the training samples: {first.message}")
        point = dn.T @ first.x[:n_s]
        # 2. Among the combinations that make that point, the most local one.
        spread = ((dn - point) ** 2).sum(axis=1)
        second = linprog(spread, A_eq=np.vstack([dn.T, np.ones(n_s)]), b_eq=np.concatenate([point, [1.0]]),
                         bounds=(0, None), method="highs")
        weights = second.x if second.status == 0 else first.x[:n_s]
        weights = np.clip(weights, 0.0, None)
        weights /= weights.sum()
        return weights, (dn.T @ weights) * self._scale, target

    def set_conditions(self, conditions: BeamConditions, *, force: bool = False,
                       max_extrapolation: float | None = None) -> ConditionsFit:
        """Make the following events for ``conditions``. Refuses conditions further than
        ``max_extrapolation`` (default: the model's) outside the training range unless
        ``force``; returns how the conditions were met (also kept as :attr:`fit`)."""
        if not isinstance(conditions, BeamConditions):
            raise TypeError(f"conditions must be a registry.beam.BeamConditions, got {type(conditions).__name__}")
        limit = self.max_extrapolation if max_extrapolation is None else float(max_extrapolation)
        weights, point, target = self.locate(conditions)
        excess_by_driver = np.abs(target - point) / self._scale
        worst = int(np.argmax(excess_by_driver))
        excess = float(excess_by_driver[worst])
        inside = excess <= _INSIDE
        details: dict[str, Any] = {}
        if not inside:
            column = self.sample_drivers[:, worst]
            details = {"driver_value": float(target[worst]), "driver_nearest": float(point[worst]),
                       "driver_range": (float(column.min()), float(column.max()))}
        fit_kwargs = dict(conditions=conditions, weights=weights, excess=0.0 if inside else excess,
                          excess_driver=None if inside else DRIVERS[worst], sample_conditions=self.sample_conditions,
                          status="interpolation" if inside else "extrapolation", **details)
        if not inside and excess > limit and (not force or excess > FORCE_LIMIT):
            preview = ConditionsFit(forced=False, mean_counts=np.zeros(N_CHANNELS), **fit_kwargs)
            hint = (f"not even forced beyond {FORCE_LIMIT:.0%}" if force else
                    "or force it (--force-conditions) and expect the rates to be a guess")
            raise OutOfTrainingRangeError(
                f"beam conditions {conditions.summary()} are too far outside the training samples' to trust: "
                f"{preview.describe()}; at most {limit:.0%} is allowed. Train with samples that cover these "
                f"conditions, {hint}")
        # Rates: the samples' weighted means, carried on along the source terms outside.
        mean = weights @ self.sample_means
        if not inside:
            mean = mean + self.term_coefficients[:, :-1] @ (target - point)
        mean = np.maximum(mean, 0.0)
        fit = ConditionsFit(forced=not inside and excess > limit, mean_counts=mean, **fit_kwargs)
        self._set_tables(weights, mean)
        self.fit = fit
        return fit

    def _set_tables(self, weights: np.ndarray, mean: np.ndarray) -> None:
        m = self.sample_means  # (J, 120)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(m > 0, mean[None, :] / m, 0.0)
        share = weights[:, None] * m
        total = share.sum(axis=0)
        share = np.where(total > 0, share / np.where(total > 0, total, 1.0), weights[:, None])
        self._cum_weights = np.cumsum(weights)
        self._count_scale = scale  # (J, 120): run mean / sample mean
        self._cum_share = np.cumsum(share, axis=0).T  # (120, J): clusters of a channel, by sample

    # -- generation ----------------------------------------------------------------------

    def generate(self, keys: Iterable[Sequence[int] | int]) -> tuple[np.ndarray, PXDDigits]:
        """One event per key for the conditions set last, as ``(offsets, digits)`` (see
        :meth:`pxdbg.models.sparse.SparseModel.generate`)."""
        if self.fit is None:
            raise RuntimeError("no beam conditions set: call set_conditions() (the generator module does it "
                               "at each run) before generating")
        keys = list(keys)
        if not keys:
            return np.zeros(1, np.int64), PXDDigits.empty()
        draws = [self._event_draws(key) for key in keys]
        counts = np.stack([d[0] for d in draws])  # (events, 120)
        rows = np.stack([d[1] for d in draws])
        starts = np.stack([d[2] for d in draws])
        allu = np.concatenate([d[3] for d in draws])
        flat = np.repeat(np.arange(counts.size), counts.reshape(-1))
        event, channel = np.divmod(flat, N_CHANNELS)
        index = self.base.choose_in_windows(rows.reshape(-1)[flat], starts.reshape(-1)[flat], allu[:, 0], channel,
                                            ranks=self._ranks)
        return self.base.place_clusters(index, event, channel, allu, len(keys))

    def generate_events(self, keys: Iterable[Sequence[int] | int]) -> list[PXDDigits]:
        offsets, d = self.generate(keys)
        return [PXDDigits(d.sensor[a:b], d.ucell[a:b], d.vcell[a:b], d.charge[a:b])
                for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    def _event_draws(self, key) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per channel: the cluster count, the rank-index row (sample, channel) and first
        rank of the window the clusters come from; uniforms for choosing and placing them."""
        rng = event_stream(key)
        channels = np.arange(N_CHANNELS)
        j = min(int(np.searchsorted(self._cum_weights, rng.random(), side="right")), self.n_samples - 1)
        a, b = int(self.sample_start[j]), int(self.sample_start[j + 1])
        parent = a + int(rng.integers(b - a))
        step = rng.random() - 0.5  # centred on the drawn event, as in the sparse model
        ec = self.base.event_counts
        value = np.maximum((1.0 - step) * ec[parent] + step * ec[self.base.partner[parent]], 0.0)
        target = value * self._count_scale[j]
        counts = np.floor(target + rng.random(N_CHANNELS)).astype(np.int64)
        # The sample each channel's clusters come from, and the event's count in its units.
        source = np.minimum((rng.random(N_CHANNELS)[:, None] >= self._cum_share).sum(axis=1), self.n_samples - 1)
        factor = self._count_scale[source, channels]
        with np.errstate(divide="ignore", invalid="ignore"):
            own = np.where(factor > 0, target / np.where(factor > 0, factor, 1.0), 0.0)
        own = np.floor(own + rng.random(N_CHANNELS)).astype(np.int64)
        rows = source * N_CHANNELS + channels
        start = self._ranks.windows(rows, own, rng.random(N_CHANNELS))
        uniforms = rng.random((int(counts.sum()), 2 + PLACEMENT_ROUNDS))
        return counts, rows, start, uniforms

    # -- checkpoints ---------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        out = self.base.arrays()
        out.update({name: np.ascontiguousarray(getattr(self, name)) for name in BEAM_ARRAYS})
        return out

    @property
    def n_training_events(self) -> int:
        return self.base.n_training_events


def save(model: SparseBeamModel, path: str | Path, manifest) -> Path:
    """Write ``model`` with ``manifest`` as a safetensors checkpoint (atomically)."""
    from registry.checkpoint import write_checkpoint

    return write_checkpoint(path, model.arrays(), manifest)


def from_arrays(arrays: dict[str, np.ndarray], manifest=None) -> SparseBeamModel:
    expected = set(SPARSE_ARRAYS) | set(BEAM_ARRAYS)
    missing, unexpected = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if missing or unexpected:
        from registry.exceptions import CheckpointMismatchError

        parts = [f"{label}: {', '.join(keys)}" for label, keys in (("missing", missing), ("unexpected", unexpected))
                 if keys]
        raise CheckpointMismatchError("checkpoint arrays do not fit the sparse-beam model: " + "; ".join(parts))
    base = SparseModel(**{name: arrays[name] for name in SPARSE_ARRAYS})
    limit = DEFAULT_MAX_EXTRAPOLATION
    if manifest is not None:
        limit = float(manifest.model_config.get("max_extrapolation", limit))
    return SparseBeamModel(base=base, **{name: arrays[name] for name in BEAM_ARRAYS}, max_extrapolation=limit,
                           manifest=manifest)


def load(path: str | Path) -> SparseBeamModel:
    """The model in checkpoint ``path``; its manifest is checked first (model name and
    architecture version), before any array is read."""
    from registry.checkpoint import read_arrays
    from registry.exceptions import CheckpointFormatError, CheckpointMismatchError
    from registry.manifest import check_manifest

    arrays, manifest = read_arrays(path)
    if manifest is None:
        raise CheckpointMismatchError(f"{path}: a sparse-beam checkpoint must carry a manifest")
    check_manifest(manifest, NAME, ARCHITECTURE_VERSION)
    try:
        return from_arrays(arrays, manifest)
    except SparseModelError as exc:
        raise CheckpointFormatError(f"{path}: {exc}") from exc
