"""A synthetic PXD background sample: a stand-in for demos and tests, NOT a physics simulation.

Real PXD background comes from basf2 beam-background simulation (Touschek, beam-gas,
radiative Bhabha, two-photon, synchrotron radiation) through Geant4 and the PXD digitizer.
This generator only imitates the features that the generative models and the validation
have to get right, so that the whole chain can be exercised without a basf2 sample. It is
parametrised by (relative) beam conditions, so that samples that differ *in kind* can be
made (see :data:`PRESETS`) and a model is never judged only on the sample it was built with.

Three source terms add up, each with its own event-to-event behaviour and cluster mix:

- **Luminosity term** (QED pairs; scales with ``luminosity``): flat in azimuth, barely
  fluctuating from event to event beyond Poisson, mostly compact low-charge clusters.
- **Beam-loss term** (Touschek and beam-gas; scales with ``beam_loss``): a fixed azimuthal
  modulation (losses concentrate in the ring plane), strong per-event fluctuations that
  correlate sensors (a global Gamma factor, log-normal factors per layer and per ladder, an
  azimuthal hot spot and a small per-sensor factor), more heavily ionizing clusters and a
  share of **grazing tracks**: long, thin clusters (tens of pixels) of particles crossing
  the sensor at a shallow angle.
- **Injection bursts**: a fraction ``injection_fraction`` of frames is taken while a
  freshly injected bunch is still noisy: a burst of several times the nominal beam-loss
  clusters, concentrated around one azimuth, rich in heavy clusters and grazing tracks. This
  gives the rare high-occupancy frames of the occupancy distributions, and a correlation
  between occupancy and cluster size.

On top of the terms:

- **Geometry**: the inner layer is busier than the outer one (by about 2.5x at the
  defaults), backward sensors (number 2) more than forward ones, and the hit density along
  v rises towards the interaction point. Each sensor has **two v-pitch regions**: the
  ``v_pitch_split`` cells nearest the interaction point are finer (55 vs 60 um on layer 1,
  70 vs 85 um on layer 2), so they collect fewer hits per cell and clusters are longer
  there in cells. Clusters at the **sensor edges** are cut by them.
- **Clusters with charge sharing**: a total charge (Moyal, the closed-form Landau stand-in,
  for MIP-like, heavily ionizing and a few saturating very highly ionizing particles) spread
  over a small footprint with Gaussian weights; grazing tracks deposit a MIP-like charge in
  each pixel they cross. Overlapping clusters add, a little Gaussian noise is added per
  pixel, ADC values are truncated, zero-suppressed below 7 ADU and saturate at 255.
- **Isolated noise pixels**: a few per sensor and event, uniform, just above threshold.

Everything is vectorized over the clusters of a block of events: no loop runs per pixel,
per cluster or per event. The same seed and configuration give the same file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from ..digits import DigitsWriter, PXDDigits
from ..sensors import (
    LADDERS_PER_LAYER,
    N_SENSORS,
    N_UCELLS,
    N_VCELLS,
    SENSOR_LADDER,
    SENSOR_LAYER,
    SENSOR_NUMBER,
    ZERO_SUPPRESSION_ADU,
)

_PIXELS_PER_SENSOR = N_UCELLS * N_VCELLS
_PIXELS_PER_EVENT = N_SENSORS * _PIXELS_PER_SENSOR
# The largest compact-cluster footprint (u cells, v cells): clusters live in a slot grid.
_MAX_DU, _MAX_DV = 4, 12
# The longest grazing track, in cells along its major axis.
_MAX_TRACK = 96

DESCRIPTION = "pxdbg synthetic PXD background: a stand-in for demos and tests, not physics"

# Cluster species.
_MIP, _HEAVY, _HIGHLY, _GRAZING = 0, 1, 2, 3


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic sample. Defaults (the ``nominal`` preset) give ~0.25% occupancy
    on layer 1 and ~0.1% on layer 2 (about 20k fired pixels per event)."""

    # -- beam conditions, relative to nominal -------------------------------------------
    #: Scales the luminosity term (QED pairs).
    luminosity: float = 1.0
    #: Scales the beam-loss term (Touschek, beam-gas) and its grazing tracks.
    beam_loss: float = 1.0
    #: Fraction of frames taken during an injection burst.
    injection_fraction: float = 0.03

    # -- rates ----------------------------------------------------------------------------
    #: Mean clusters per sensor and event at nominal conditions, before modulations, per layer.
    clusters_layer1: float = 170.0
    clusters_layer2: float = 70.0
    #: Share of the nominal clusters that comes from the luminosity term.
    luminosity_share: float = 0.6
    #: Static factor of sensor number 1 (forward) and 2 (backward).
    forward_factor: float = 0.85
    backward_factor: float = 1.15
    #: Static azimuthal modulation of the beam-loss term: 1 + amplitude * cos(phi - phase).
    phi_amplitude: float = 0.25
    phi_phase: float = 3.0
    #: Hit density along v: proportional to 1 + g * (2 v / 767 - 1), g = +gradient on
    #: forward sensors, -gradient on backward ones (denser towards the interaction point).
    v_gradient: float = 0.4

    # -- event-to-event fluctuations --------------------------------------------------------
    #: Log-normal sigma of the (global) luminosity factor per event.
    luminosity_sigma: float = 0.05
    #: Beam-loss term: Gamma(shape) with mean 1 for the whole event; log-normal sigmas.
    event_gamma_shape: float = 6.0
    layer_sigma: float = 0.15
    ladder_sigma: float = 0.15
    sensor_sigma: float = 0.08
    #: Per-event hot spot of the beam-loss term: 1 + a * cos(phi - phi0), a ~ U(0, max).
    hotspot_max: float = 0.5
    #: Injection bursts: mean burst size in units of the nominal beam-loss clusters, its
    #: log-normal spread, and the azimuthal width (rad) of the burst around a random phi.
    injection_scale: float = 3.0
    injection_sigma: float = 0.6
    injection_width: float = 0.9

    # -- cluster species and charge -----------------------------------------------------------
    #: Heavily ionizing and very highly ionizing fractions per term.
    luminosity_heavy_fraction: float = 0.15
    heavy_fraction: float = 0.4
    highly_ionizing_fraction: float = 0.03
    injection_heavy_fraction: float = 0.5
    #: Grazing tracks: fraction of beam-loss and of injection clusters, mean length (cells).
    grazing_fraction: float = 0.03
    injection_grazing_fraction: float = 0.08
    grazing_length: float = 16.0
    #: Moyal spectra (ADU): cluster totals, and the charge per pixel of grazing tracks.
    mip_loc: float = 40.0
    mip_scale: float = 7.0
    heavy_loc: float = 120.0
    heavy_scale: float = 40.0
    highly_ionizing_loc: float = 600.0
    highly_ionizing_scale: float = 150.0
    track_pixel_loc: float = 22.0
    track_pixel_scale: float = 5.0
    #: Per-pixel Gaussian noise (ADU) before truncation and zero suppression.
    pixel_noise: float = 1.5
    zero_suppression: int = ZERO_SUPPRESSION_ADU
    #: Isolated noise pixels per sensor and event; their charge is threshold + Exp(scale).
    noise_pixels: float = 3.0
    noise_scale: float = 2.5

    # -- geometry -----------------------------------------------------------------------------
    #: v cells of the fine-pitch region at the interaction-point end of each sensor, and the
    #: coarse/fine pitch ratio per layer (60/55 um, 85/70 um).
    v_pitch_split: int = 256
    pitch_ratio_layer1: float = 60.0 / 55.0
    pitch_ratio_layer2: float = 85.0 / 70.0

    #: Events generated per vectorized block (part of what makes a seed reproducible).
    block_events: int = 16

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SyntheticConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    def mean_clusters(self) -> np.ndarray:
        """(40,) expected clusters per sensor and event from the luminosity and beam-loss
        terms, with all per-event factors at 1 (injection bursts not included)."""
        lumi, loss = self._term_means()
        return lumi + loss

    def _term_means(self) -> tuple[np.ndarray, np.ndarray]:
        base = np.where(SENSOR_LAYER == 1, self.clusters_layer1, self.clusters_layer2)
        side = np.where(SENSOR_NUMBER == 1, self.forward_factor, self.backward_factor)
        lumi = base * side * self.luminosity_share * self.luminosity
        loss = (base * side * (1.0 - self.luminosity_share) * self.beam_loss
                * (1.0 + self.phi_amplitude * np.cos(_SENSOR_PHI - self.phi_phase)))
        return lumi, loss


#: The beam conditions of the synthetic sample at its defaults (``luminosity = beam_loss =
#: 1``): how its relative scales are written as absolute :class:`~registry.beam.BeamConditions`
#: labels. Luminosity scales the luminosity term; the beam-loss term grows with the square of
#: the currents (Touschek and beam-gas), so ``beam_loss = b`` means both currents times
#: ``sqrt(b)``; the injection fraction is the same number.
NOMINAL_LUMINOSITY = 1.0  # 1e34 cm^-2 s^-1
NOMINAL_HER_CURRENT = 1000.0  # mA
NOMINAL_LER_CURRENT = 1200.0  # mA


def beam_conditions_of(config: SyntheticConfig):
    """The :class:`~registry.beam.BeamConditions` label of a sample made with ``config``."""
    from registry.beam import BeamConditions

    root = config.beam_loss ** 0.5
    return BeamConditions(luminosity=config.luminosity * NOMINAL_LUMINOSITY, her_current=root * NOMINAL_HER_CURRENT,
                          ler_current=root * NOMINAL_LER_CURRENT, injection_fraction=config.injection_fraction)


def config_for_conditions(conditions, base: SyntheticConfig | None = None) -> SyntheticConfig:
    """``base`` (default: nominal) with the relative scales that give ``conditions`` (a
    :class:`~registry.beam.BeamConditions`): the inverse of :func:`beam_conditions_of`. The
    two rings' currents enter through the sum of their squares."""
    beam_loss = ((conditions.her_current ** 2 + conditions.ler_current ** 2)
                 / (NOMINAL_HER_CURRENT ** 2 + NOMINAL_LER_CURRENT ** 2))
    # Rounded to 12 significant digits: a label written by beam_conditions_of maps back exactly.
    return replace(base or SyntheticConfig(), luminosity=float(f"{conditions.luminosity / NOMINAL_LUMINOSITY:.12g}"),
                   beam_loss=float(f"{beam_loss:.12g}"), injection_fraction=conditions.injection_fraction)


#: Sample presets that differ in kind, not only in scale (``pxdbg dataset synth --campaign``).
PRESETS: dict[str, SyntheticConfig] = {
    "nominal": SyntheticConfig(),
    # Twice and a half the luminosity: the (smooth, Poisson-like) luminosity term dominates,
    # so sensors are less correlated and clusters more compact.
    "high-lumi": SyntheticConfig(luminosity=2.5),
    # A quarter of the frames in injection bursts: a heavy high-occupancy tail.
    "injection": SyntheticConfig(injection_fraction=0.25, injection_scale=4.0),
    # Beam losses dominate, with many long grazing tracks.
    "beam-loss": SyntheticConfig(luminosity=0.6, beam_loss=2.2, grazing_fraction=0.12, grazing_length=28.0,
                                 hotspot_max=0.8),
    # A quiet machine: few hits, weak correlations, no injection bursts.
    "quiet": SyntheticConfig(luminosity=0.3, beam_loss=0.25, injection_fraction=0.0, event_gamma_shape=30.0,
                             ladder_sigma=0.05, layer_sigma=0.05, noise_pixels=6.0),
}


def preset(name: str, **overrides) -> SyntheticConfig:
    """The configuration of preset ``name``, with ``overrides`` applied; ValueError for an
    unknown name (the message lists the presets)."""
    try:
        config = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic campaign preset {name!r} (presets: {', '.join(PRESETS)})") from None
    return replace(config, **overrides) if overrides else config


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
        c = self.config
        if c.block_events < 1:
            raise ValueError("block_events must be at least 1")
        for name in ("luminosity", "beam_loss", "clusters_layer1", "clusters_layer2", "noise_pixels",
                     "injection_scale", "grazing_length"):
            if getattr(c, name) < 0:
                raise ValueError(f"synthetic config: {name} must not be negative, got {getattr(c, name)}")
        if not 0.0 <= c.injection_fraction <= 1.0 or not 0.0 <= c.luminosity_share <= 1.0:
            raise ValueError("synthetic config: injection_fraction and luminosity_share must be in [0, 1]")
        if not 0 <= c.v_pitch_split <= N_VCELLS:
            raise ValueError(f"synthetic config: v_pitch_split must be in [0, {N_VCELLS}]")
        self.rng = np.random.default_rng(seed)
        self._lumi_mean, self._loss_mean = c._term_means()
        self._v_cdf, self._fine = self._v_tables()

    # -- geometry -------------------------------------------------------------------------

    def _v_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Per sensor: the CDF of the hit v cell (40, 768), and whether each cell is in the
        fine-pitch region (40, 768)."""
        c = self.config
        t = (np.arange(N_VCELLS) + 0.5) / N_VCELLS
        forward = (SENSOR_NUMBER == 1)[:, None]
        g = np.where(forward, c.v_gradient, -c.v_gradient)
        # The interaction point is at high v on forward sensors, at low v on backward ones.
        cell = np.arange(N_VCELLS)[None, :]
        fine = np.where(forward, cell >= N_VCELLS - c.v_pitch_split, cell < c.v_pitch_split)
        ratio = np.where(SENSOR_LAYER == 1, c.pitch_ratio_layer1, c.pitch_ratio_layer2)[:, None]
        # A cell collects hits in proportion to its area: coarse cells `ratio` times more.
        pdf = (1.0 + g * (2.0 * t[None, :] - 1.0)) * np.where(fine, 1.0, ratio)
        cdf = np.cumsum(pdf, axis=1)
        cdf /= cdf[:, -1:]
        return cdf, fine

    def _v_cells(self, sensor: np.ndarray) -> np.ndarray:
        x = self.rng.random(len(sensor))
        # Row-wise inverse CDF in one searchsorted: rows are offset by their index.
        flat = (self._v_cdf + np.arange(N_SENSORS)[:, None]).ravel()
        return np.searchsorted(flat, sensor + x, side="right") - sensor * N_VCELLS

    # -- event-level intensities --------------------------------------------------------

    def term_intensities(self, n_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n_events, 40) expected clusters per sensor of the luminosity term, the beam-loss
        term and the injection bursts, with the per-event factors drawn."""
        c, rng = self.config, self.rng
        lumi = self._lumi_mean[None, :] * rng.lognormal(-0.5 * c.luminosity_sigma ** 2, c.luminosity_sigma,
                                                        size=(n_events, 1))
        k = c.event_gamma_shape
        glob = rng.gamma(k, 1.0 / k, size=(n_events, 1))
        layer = rng.lognormal(-0.5 * c.layer_sigma ** 2, c.layer_sigma, size=(n_events, 2))[:, SENSOR_LAYER - 1]
        ladder = rng.lognormal(-0.5 * c.ladder_sigma ** 2, c.ladder_sigma, size=(n_events, 20))[:, _SENSOR_LADDER_INDEX]
        sensor = rng.lognormal(-0.5 * c.sensor_sigma ** 2, c.sensor_sigma, size=(n_events, N_SENSORS))
        amp = rng.uniform(0.0, c.hotspot_max, size=(n_events, 1))
        phi0 = rng.uniform(0.0, 2.0 * np.pi, size=(n_events, 1))
        hot = 1.0 + amp * np.cos(_SENSOR_PHI[None, :] - phi0)
        loss = self._loss_mean[None, :] * glob * layer * ladder * sensor * hot

        burst = rng.random((n_events, 1)) < c.injection_fraction
        size = rng.lognormal(-0.5 * c.injection_sigma ** 2, c.injection_sigma, size=(n_events, 1))
        phi_inj = rng.uniform(0.0, 2.0 * np.pi, size=(n_events, 1))
        shape = np.exp((np.cos(_SENSOR_PHI[None, :] - phi_inj) - 1.0) / c.injection_width ** 2)
        nominal_loss = self._loss_mean / max(c.beam_loss, 1e-12)  # bursts do not scale with beam_loss
        inj = burst * c.injection_scale * size * nominal_loss[None, :] * shape / shape.mean(axis=1, keepdims=True)
        return lumi, loss, inj

    def cluster_intensity(self, n_events: int) -> np.ndarray:
        """(n_events, 40) expected clusters per sensor, all terms, with the per-event factors drawn."""
        lumi, loss, inj = self.term_intensities(n_events)
        return lumi + loss + inj

    # -- clusters -----------------------------------------------------------------------

    def _species(self, term: np.ndarray) -> np.ndarray:
        """A species per cluster from its term's mix (0 luminosity, 1 beam loss, 2 injection)."""
        c = self.config
        # Rows: term; columns: cumulative probability of MIP, heavy, highly ionizing, grazing.
        heavy = np.array([c.luminosity_heavy_fraction, c.heavy_fraction, c.injection_heavy_fraction])
        highly = np.array([c.highly_ionizing_fraction / 4, c.highly_ionizing_fraction, 2 * c.highly_ionizing_fraction])
        grazing = np.array([0.0, c.grazing_fraction, c.injection_grazing_fraction])
        x = self.rng.random(len(term))
        g, hi, he = grazing[term], highly[term], heavy[term]
        return np.where(x < g, _GRAZING, np.where(x < g + hi, _HIGHLY, np.where(x < g + hi + he, _HEAVY, _MIP)))

    def _compact_pixels(self, owner: np.ndarray, species: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel keys (event * 40 + sensor, u, v packed) and charges of compact clusters."""
        c, rng = self.config, self.rng
        n = len(owner)
        sensor = owner % N_SENSORS
        heavy = species != _MIP
        highly = species == _HIGHLY
        # Moyal variates: -log(Z^2) with Z standard normal.
        moyal = -np.log(np.square(rng.standard_normal(n)) + 1e-300)
        loc = np.where(highly, c.highly_ionizing_loc, np.where(heavy, c.heavy_loc, c.mip_loc))
        scale = np.where(highly, c.highly_ionizing_scale, np.where(heavy, c.heavy_scale, c.mip_scale))
        total = np.maximum(loc + scale * moyal, 0.0)
        uc = rng.uniform(0.0, N_UCELLS, n)
        vcell = self._v_cells(sensor)
        # Footprints: MIP-like clusters are compact, heavy ones longer and elongated in v;
        # in the fine-pitch region a cluster spans more cells along v.
        du = 1 + np.where(heavy, rng.binomial(3, 0.45, n), rng.binomial(2, 0.3, n))
        dv = 1 + np.where(heavy, rng.binomial(7, 0.35, n), rng.binomial(3, 0.3, n))
        ratio = np.where(SENSOR_LAYER[sensor] == 1, c.pitch_ratio_layer1, c.pitch_ratio_layer2)
        fine = self._fine[sensor, vcell]
        dv = np.minimum(dv + np.where(fine, rng.binomial(dv, np.clip(ratio - 1.0, 0.0, 1.0)), 0), _MAX_DV)
        u0 = np.floor(uc).astype(np.int64) - (du - 1) // 2
        v0 = vcell.astype(np.int64) - (dv - 1) // 2

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
        cl, iu, iv = np.nonzero(keep)
        key = (owner[cl] * N_UCELLS + u[cl, iu, 0]) * N_VCELLS + v[cl, 0, iv]
        return key, q[cl, iu, iv]

    def _track_pixels(self, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel keys and charges of grazing tracks: straight lines one pixel wide, mostly
        along v (the beam direction), a MIP-like charge in each pixel crossed."""
        c, rng = self.config, self.rng
        n = len(owner)
        sensor = owner % N_SENSORS
        length = np.minimum(2 + np.floor(rng.exponential(max(c.grazing_length - 2.0, 0.0), n)), _MAX_TRACK)
        length = length.astype(np.int64)
        along_v = rng.random(n) < 0.75
        slope = rng.uniform(-0.6, 0.6, n)  # minor-axis cells per major-axis cell
        u_start = rng.uniform(0.0, N_UCELLS, n)
        v_start = self._v_cells(sensor) + rng.random(n)
        t = np.arange(_MAX_TRACK)[None, :]
        direction = np.where(rng.random(n) < 0.5, -1, 1)[:, None]
        major = direction * t
        minor = np.floor(slope[:, None] * t + 0.5).astype(np.int64)
        u = np.floor(u_start)[:, None].astype(np.int64) + np.where(along_v[:, None], minor, major)
        v = np.floor(v_start)[:, None].astype(np.int64) + np.where(along_v[:, None], major, minor)
        keep = (t < length[:, None]) & (u >= 0) & (u < N_UCELLS) & (v >= 0) & (v < N_VCELLS)
        cl, it = np.nonzero(keep)
        key = (owner[cl] * N_UCELLS + u[cl, it]) * N_VCELLS + v[cl, it]
        moyal = -np.log(np.square(rng.standard_normal(len(cl))) + 1e-300)
        charge = np.maximum(c.track_pixel_loc + c.track_pixel_scale * moyal, 0.0)
        return key, charge

    def _noise_pixels(self, n_events: int) -> tuple[np.ndarray, np.ndarray]:
        c, rng = self.config, self.rng
        count = rng.poisson(c.noise_pixels, size=n_events * N_SENSORS)
        owner = np.repeat(np.arange(n_events * N_SENSORS, dtype=np.int64), count)
        pixel = rng.integers(0, _PIXELS_PER_SENSOR, size=len(owner))
        charge = c.zero_suppression + rng.exponential(c.noise_scale, size=len(owner))
        return owner * _PIXELS_PER_SENSOR + pixel, charge

    def generate_block(self, n_events: int) -> tuple[np.ndarray, PXDDigits]:
        """``n_events`` events as ``(offsets, digits)``: event j owns
        ``digits[offsets[j]:offsets[j + 1]]`` (sorted by sensor, u, v; unique pixels)."""
        c, rng = self.config, self.rng
        terms = self.term_intensities(n_events)
        counts = np.stack([rng.poisson(lam) for lam in terms])  # (3, n_events, 40)
        cells = np.arange(n_events * N_SENSORS, dtype=np.int64)
        owner = np.concatenate([np.repeat(cells, k.reshape(-1)) for k in counts])
        term = np.repeat(np.arange(3), counts.reshape(3, -1).sum(axis=1))
        species = self._species(term)
        track = species == _GRAZING
        parts = [self._compact_pixels(owner[~track], species[~track]), self._track_pixels(owner[track]),
                 self._noise_pixels(n_events)]
        key = np.concatenate([p[0] for p in parts])
        charge = np.concatenate([p[1] for p in parts])

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
                    exp: int = 0, run: int = 0, first_event: int = 1, progress: bool = False,
                    campaign: str | None = None) -> Path:
    """Write ``n_events`` synthetic events to a pxd-digits file (atomically, see DigitsWriter).

    Events are numbered ``first_event, first_event + 1, ...`` in experiment ``exp``, run
    ``run``. ``campaign`` names a preset (:data:`PRESETS`) used when no ``config`` is given.
    The seed, the preset name, the configuration and the beam conditions it stands for
    (:func:`beam_conditions_of`, attribute ``beam_conditions``) go into the file attributes.
    """
    if n_events < 0:
        raise ValueError("n_events must not be negative")
    if config is None and campaign is not None:
        config = preset(campaign)
    gen = SyntheticBackground(config, seed)
    from .beam_labels import label_attrs

    attrs = {"generator": "pxdbg.datasets.synthetic", "description": DESCRIPTION, "seed": int(seed),
             "synthetic_config": gen.config.to_json(), "synthetic_campaign": campaign or "",
             **label_attrs(beam_conditions_of(gen.config))}
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
