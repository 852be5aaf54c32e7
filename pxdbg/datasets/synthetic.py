"""A synthetic PXD background sample: a stand-in for demos and tests, NOT a physics simulation.

Real PXD background comes from basf2 beam-background simulation (Touschek, beam-gas,
radiative Bhabha, two-photon, synchrotron radiation) through Geant4 and the PXD digitizer.
This generator only imitates the features that the generative models and the validation
have to get right, so that the whole chain can be exercised without a basf2 sample:

- **Occupancy per sensor**: the inner layer sees more hits than the outer one (by about
  2.5x at the defaults), the backward sensors (number 2) more than the forward ones, a
  fixed azimuthal modulation over the ladders, and a linear gradient of the hit density
  along v (towards the end of the sensor nearer the interaction point).
- **Clusters of several pixels with charge sharing**: each particle deposits a total
  charge that is spread over a small footprint (1..4 u cells x 1..8 v cells, elongated in v
  for the "low-momentum" species) with Gaussian-like weights; overlapping clusters add.
- **Landau-like charge**: total cluster charge follows a Moyal distribution (the usual
  closed-form stand-in for Landau) with three species (MIP-like, heavily ionizing, and a few
  per cent very highly ionizing clusters that saturate), plus a
  little Gaussian noise per pixel; then the detector's cuts: ADC values are truncated to
  integers, pixels below 7 ADU are zero-suppressed and values saturate at 255.
- **Event-level fluctuations that correlate sensors**: the expected number of clusters of
  each sensor is multiplied by a per-event global factor (Gamma), a per-event factor per
  layer and per ladder (log-normal, shared by the two sensors of a ladder), a per-event
  azimuthal "hot spot" (sensors at nearby phi rise together) and a small independent
  per-sensor factor. The 40x40 Spearman matrix of occupancies therefore shows a positive
  baseline, stronger blocks within a layer, and the strongest pairs on the same ladder.

Everything is vectorized over the clusters of a block of events: no loop runs per pixel,
per cluster or per event. The same seed and configuration give the same file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..digits import DigitsWriter, PXDDigits
from ..sensors import (
    N_SENSORS,
    N_UCELLS,
    N_VCELLS,
    SENSOR_LADDER,
    SENSOR_LAYER,
    SENSOR_NUMBER,
    LADDERS_PER_LAYER,
    ZERO_SUPPRESSION_ADU,
)

_PIXELS_PER_SENSOR = N_UCELLS * N_VCELLS
_PIXELS_PER_EVENT = N_SENSORS * _PIXELS_PER_SENSOR
# The largest cluster footprint (u cells, v cells): clusters live in a fixed-size slot grid.
_MAX_DU, _MAX_DV = 4, 8

DESCRIPTION = "pxdbg synthetic PXD background: a stand-in for demos and tests, not physics"


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic sample. Defaults give ~0.25% occupancy on layer 1 and ~0.1% on
    layer 2 (about 20k fired pixels per event)."""

    #: Mean clusters per sensor and event, before all modulations, per layer.
    clusters_layer1: float = 170.0
    clusters_layer2: float = 70.0
    #: Static factor of sensor number 1 (forward) and 2 (backward).
    forward_factor: float = 0.85
    backward_factor: float = 1.15
    #: Static azimuthal modulation over ladders: 1 + amplitude * cos(phi - phase).
    phi_amplitude: float = 0.25
    phi_phase: float = 3.0
    #: Hit density along v: proportional to 1 + g * (2 v / 767 - 1), g = +gradient on
    #: forward sensors, -gradient on backward ones (denser towards the interaction point).
    v_gradient: float = 0.4
    #: Per-event factors: Gamma(shape) with mean 1 for the whole event; log-normal sigmas.
    event_gamma_shape: float = 6.0
    layer_sigma: float = 0.15
    ladder_sigma: float = 0.15
    sensor_sigma: float = 0.08
    #: Per-event hot spot: 1 + a * cos(phi - phi0), a ~ U(0, hotspot_max), phi0 ~ U(0, 2 pi).
    hotspot_max: float = 0.5
    #: Fractions of heavily ionizing (low-momentum) clusters and of very highly ionizing
    #: ones (slow protons, nuclear fragments: these saturate), and the Moyal spectra (ADU).
    heavy_fraction: float = 0.3
    highly_ionizing_fraction: float = 0.02
    mip_loc: float = 40.0
    mip_scale: float = 7.0
    heavy_loc: float = 120.0
    heavy_scale: float = 40.0
    highly_ionizing_loc: float = 600.0
    highly_ionizing_scale: float = 150.0
    #: Per-pixel Gaussian noise (ADU) before truncation and zero suppression.
    pixel_noise: float = 1.5
    zero_suppression: int = ZERO_SUPPRESSION_ADU
    #: Events generated per vectorized block (part of what makes a seed reproducible).
    block_events: int = 16

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def mean_clusters(self) -> np.ndarray:
        """(40,) expected clusters per sensor and event with all per-event factors at 1."""
        base = np.where(SENSOR_LAYER == 1, self.clusters_layer1, self.clusters_layer2)
        side = np.where(SENSOR_NUMBER == 1, self.forward_factor, self.backward_factor)
        return base * side * (1.0 + self.phi_amplitude * np.cos(_SENSOR_PHI - self.phi_phase))


def _sensor_phi() -> np.ndarray:
    n_ladders = np.array([LADDERS_PER_LAYER[int(layer)] for layer in SENSOR_LAYER])
    return 2.0 * np.pi * (SENSOR_LADDER.astype(np.float64) - 1.0) / n_ladders


_SENSOR_PHI = _sensor_phi()
# One index per ladder (0..19), shared by a ladder's two sensors.
_SENSOR_LADDER_INDEX = np.arange(N_SENSORS) // 2


class SyntheticBackground:
    """Seeded generator of synthetic PXD background events (see the module docstring)."""

    def __init__(self, config: SyntheticConfig | None = None, seed: int | np.random.SeedSequence | None = 0):
        self.config = config or SyntheticConfig()
        if self.config.block_events < 1:
            raise ValueError("block_events must be at least 1")
        self.rng = np.random.default_rng(seed)
        self._mean_clusters = self.config.mean_clusters()

    # -- event-level intensities --------------------------------------------------------

    def cluster_intensity(self, n_events: int) -> np.ndarray:
        """(n_events, 40) expected clusters per sensor, with the per-event factors drawn."""
        c, rng = self.config, self.rng
        k = c.event_gamma_shape
        glob = rng.gamma(k, 1.0 / k, size=(n_events, 1))
        layer = rng.lognormal(-0.5 * c.layer_sigma ** 2, c.layer_sigma, size=(n_events, 2))[:, SENSOR_LAYER - 1]
        ladder = rng.lognormal(-0.5 * c.ladder_sigma ** 2, c.ladder_sigma, size=(n_events, 20))[:, _SENSOR_LADDER_INDEX]
        sensor = rng.lognormal(-0.5 * c.sensor_sigma ** 2, c.sensor_sigma, size=(n_events, N_SENSORS))
        amp = rng.uniform(0.0, c.hotspot_max, size=(n_events, 1))
        phi0 = rng.uniform(0.0, 2.0 * np.pi, size=(n_events, 1))
        hot = 1.0 + amp * np.cos(_SENSOR_PHI[None, :] - phi0)
        return self._mean_clusters[None, :] * glob * layer * ladder * sensor * hot

    # -- clusters -----------------------------------------------------------------------

    def _v_positions(self, forward: np.ndarray) -> np.ndarray:
        """v in [0, 768) with density 1 + g * (2 v / 768 - 1) (inverse CDF of a linear pdf)."""
        g = np.where(forward, self.config.v_gradient, -self.config.v_gradient)
        x = self.rng.random(len(forward))
        # On t in [0, 1]: pdf 1 + g (2t - 1), CDF (1 - g) t + g t^2.
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(np.abs(g) < 1e-9, x,
                         (-(1.0 - g) + np.sqrt((1.0 - g) ** 2 + 4.0 * g * x)) / (2.0 * np.where(g == 0, 1, g)))
        return np.clip(t, 0.0, 1.0 - 1e-9) * N_VCELLS

    def generate_block(self, n_events: int) -> tuple[np.ndarray, PXDDigits]:
        """``n_events`` events as ``(offsets, digits)``: event j owns
        ``digits[offsets[j]:offsets[j + 1]]`` (sorted by sensor, u, v; unique pixels)."""
        c, rng = self.config, self.rng
        n_clusters = rng.poisson(self.cluster_intensity(n_events))  # (n_events, 40)
        owner = np.repeat(np.arange(n_events * N_SENSORS, dtype=np.int64), n_clusters.reshape(-1))
        n = len(owner)
        sensor = owner % N_SENSORS

        species = rng.random(n)
        heavy = species < c.heavy_fraction + c.highly_ionizing_fraction
        highly = species < c.highly_ionizing_fraction
        # Moyal variates: -log(Z^2) with Z standard normal.
        moyal = -np.log(np.square(rng.standard_normal(n)) + 1e-300)
        loc = np.where(highly, c.highly_ionizing_loc, np.where(heavy, c.heavy_loc, c.mip_loc))
        scale = np.where(highly, c.highly_ionizing_scale, np.where(heavy, c.heavy_scale, c.mip_scale))
        total = np.maximum(loc + scale * moyal, 0.0)
        # Footprints: MIP-like clusters are compact, heavy ones longer and elongated in v.
        du = 1 + np.where(heavy, rng.binomial(_MAX_DU - 1, 0.45, n), rng.binomial(2, 0.3, n))
        dv = 1 + np.where(heavy, rng.binomial(_MAX_DV - 1, 0.35, n), rng.binomial(3, 0.3, n))

        uc = rng.uniform(0.0, N_UCELLS, n)
        vc = self._v_positions(SENSOR_NUMBER[sensor] == 1)
        u0 = np.floor(uc).astype(np.int64) - (du - 1) // 2
        v0 = np.floor(vc).astype(np.int64) - (dv - 1) // 2

        # Charge sharing on the slot grid: Gaussian weights around a jittered centre.
        i = np.arange(_MAX_DU, dtype=np.float64)[None, :, None]
        j = np.arange(_MAX_DV, dtype=np.float64)[None, None, :]
        cu = ((du - 1) / 2.0 + rng.uniform(-0.35, 0.35, n))[:, None, None]
        cv = ((dv - 1) / 2.0 + rng.uniform(-0.35, 0.35, n))[:, None, None]
        su = (0.35 + 0.3 * du)[:, None, None]
        sv = (0.35 + 0.3 * dv)[:, None, None]
        inside = (i < du[:, None, None]) & (j < dv[:, None, None])
        w = np.exp(-0.5 * (((i - cu) / su) ** 2 + ((j - cv) / sv) ** 2)) * inside
        w /= w.sum(axis=(1, 2), keepdims=True)
        q = total[:, None, None] * w

        u = u0[:, None, None] + i.astype(np.int64)
        v = v0[:, None, None] + j.astype(np.int64)
        keep = inside & (u >= 0) & (u < N_UCELLS) & (v >= 0) & (v < N_VCELLS)
        cl, su_idx, sv_idx = np.nonzero(keep)
        key = (owner[cl] * N_UCELLS + u[cl, su_idx, 0]) * N_VCELLS + v[cl, 0, sv_idx]
        charge = q[cl, su_idx, sv_idx]

        # Overlapping clusters share pixels: their charges add.
        order = np.argsort(key, kind="stable")
        key, charge = key[order], charge[order]
        if len(key):
            first = np.concatenate([[True], key[1:] != key[:-1]])
            starts = np.flatnonzero(first)
            key = key[starts]
            charge = np.add.reduceat(charge, starts)
        charge = charge + c.pixel_noise * rng.standard_normal(len(charge))
        adc = np.floor(np.clip(charge, 0.0, 255.0)).astype(np.int64)
        fired = adc >= max(c.zero_suppression, 1)
        key, adc = key[fired], adc[fired]

        event = key // _PIXELS_PER_EVENT
        offsets = np.searchsorted(event, np.arange(n_events + 1), side="left").astype(np.int64)
        digits = PXDDigits.from_pixel_key(key - event * _PIXELS_PER_EVENT, adc.astype(np.uint8))
        return offsets, digits

    def generate(self, n_events: int) -> list[PXDDigits]:
        """``n_events`` events as a list of :class:`PXDDigits` (generated block by block)."""
        out: list[PXDDigits] = []
        for b0 in range(0, n_events, self.config.block_events):
            offsets, d = self.generate_block(min(self.config.block_events, n_events - b0))
            out.extend(_split(offsets, d))
        return out


def _split(offsets: np.ndarray, d: PXDDigits) -> list[PXDDigits]:
    return [PXDDigits(d.sensor[a:b], d.ucell[a:b], d.vcell[a:b], d.charge[a:b])
            for a, b in zip(offsets[:-1], offsets[1:])]


def write_synthetic(path: str | Path, n_events: int, seed: int = 0, *, config: SyntheticConfig | None = None,
                    exp: int = 0, run: int = 0, first_event: int = 1, progress: bool = False) -> Path:
    """Write ``n_events`` synthetic events to a pxd-digits file (atomically, see DigitsWriter).

    Events are numbered ``first_event, first_event + 1, ...`` in experiment ``exp``, run
    ``run``. The seed and the configuration go into the file attributes.
    """
    if n_events < 0:
        raise ValueError("n_events must not be negative")
    gen = SyntheticBackground(config, seed)
    attrs = {"generator": "pxdbg.datasets.synthetic", "description": DESCRIPTION, "seed": int(seed),
             "synthetic_config": gen.config.to_json()}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_events, desc=Path(path).name, unit="evt")
    with DigitsWriter(path, attrs=attrs) as writer:
        for b0 in range(0, n_events, gen.config.block_events):
            nb = min(gen.config.block_events, n_events - b0)
            offsets, d = gen.generate_block(nb)
            evt = np.arange(first_event + b0, first_event + b0 + nb)
            writer.append_many(_split(offsets, d), exp=[exp] * nb, run=[run] * nb, evt=evt)
            if bar is not None:
                bar.update(nb)
    if bar is not None:
        bar.close()
    return Path(path)
