"""The PXD background generator as a framework-independent processing module.

:class:`PXDBackgroundGenerator` follows basf2's module lifecycle (``initialize``,
``begin_run``, ``event``, ``terminate``) and basf2's ``PXDBackgroundGenerator``
parameters, so :mod:`pxdbg.basf2` only has to wrap it, and the CLI and tests drive it
without basf2. Each ``event()`` returns one event of background digits.

Checkpoints: a fixed file (``checkpoint=PATH``), or, by default, the checkpoint the
registry resolves for the current (exp, run) in the campaign or global tag. When a new
run resolves to another payload (another IoV), the weights are switched; when it
resolves to the same payload nothing is reloaded.

Beam conditions: a conditioned model (``sparse-beam``) makes each run's background for
that run's beam conditions, the payload ``BeamConditions`` resolved per run like the
checkpoint (or conditions given for the whole job); it switches at each run whose
conditions differ, and refuses conditions far outside its training range unless forced.

Models: the default ``sparse`` model emits digits directly (milliseconds per event, no
images); the GANs (``convnet``, ``resnet``, ``ieagan``) emit images that are turned into
digits. :meth:`PXDBackgroundGenerator.generate_dense` gives images for any model, densifying
the sparse model's digits only then.

Seeding: an explicit ``seed``, or one derived from the framework's random seed exactly as
basf2 does it (the first 8 bytes of the SHA-512 digest of its string form, read as a
signed big-endian integer). For the GANs the seed initializes one private
``torch.Generator`` (same stream as ``torch.manual_seed`` in basf2) from which the latents
of all events are drawn in order; the sparse model seeds event k of the job from
``(seed, k)``. Either way identical seeds give identical events, whatever the batch size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np
import torch

from registry.checkpoint import ResolvedCheckpoint
from registry.embedded import EMBEDDED_SOURCE
from registry.manifest import Manifest
from registry.policy import check_checkpoint

from .digits import PXDDigits, dense_to_digits
from .sensors import EVENT_SHAPE
from .models import DEFAULT_MODEL, MODELS, SPARSE, get_model, model_kind
from .models.common import check_device_usable
from .models.loading import load_generator

log = logging.getLogger(__name__)

DEFAULT_GLOBALTAG = "PXDBackgroundGenerator"
#: Models that run faster in channels-last memory format on CPU (default layout choice).
_CHANNELS_LAST_ON_CPU = frozenset({"convnet", "resnet"})
_SEED_MIN, _SEED_MAX = -(2**63), 2**63 - 1
_SEED_MASK = 2**64 - 1

#: ``resolver(model, exp, run, campaign, globaltag)`` -> a ResolvedCheckpoint, or a
#: ``(path, manifest)`` pair.
Resolver = Callable[[str, int, int, "str | tuple[str, ...] | None", str], Any]


def seed_from_framework(framework_seed: Any) -> int:
    """basf2's derivation of the generator seed from its random seed (any object; its
    ``str()`` is hashed): the first 8 bytes of SHA-512, signed, big-endian."""
    digest = hashlib.sha512(str(framework_seed).encode("utf-8")).digest()[:8]
    return int.from_bytes(digest, "big", signed=True)


#: The model of a legacy checkpoint file without a manifest: basf2's module default.
LEGACY_DEFAULT_MODEL = "convnet"


def model_of_checkpoint(path: Path) -> str:
    """The model a checkpoint file is for: its manifest's, or basf2's default (convnet) for
    a legacy torch file that carries none."""
    from registry.checkpoint import read_manifest

    manifest = read_manifest(path)
    if manifest is None:
        log.info("%s carries no manifest: taking it for a %s checkpoint (basf2's default model)",
                 path, LEGACY_DEFAULT_MODEL)
        return LEGACY_DEFAULT_MODEL
    return manifest.model


def default_resolver(model: str, exp: int, run: int, campaign: str | tuple[str, ...] | None, globaltag: str):
    """Resolve through the checkpoint registry (imported only when first needed)."""
    from registry.resolve import resolve_checkpoint

    return resolve_checkpoint(model, exp, run, campaign=campaign, globaltag=globaltag,
                              architecture_version=get_model(model).ARCHITECTURE_VERSION)


def default_beam_resolver(exp: int, run: int, campaign: str | tuple[str, ...] | None, globaltag: Any):
    """Resolve a run's beam conditions through the registry (imported when first needed)."""
    from registry.resolve import resolve_beam_conditions

    return resolve_beam_conditions(exp, run, campaign=campaign, globaltag=globaltag)


def _as_beam(value: Any):
    """Conditions given for a whole job: a BeamConditions, a mapping, or a JSON file path."""
    from registry.beam import BeamConditions, ResolvedBeamConditions

    if value is None or isinstance(value, ResolvedBeamConditions):
        return value
    if isinstance(value, BeamConditions):
        return ResolvedBeamConditions(value)
    if isinstance(value, (str, os.PathLike)):
        return ResolvedBeamConditions(BeamConditions.from_file(value))
    if isinstance(value, dict):
        return ResolvedBeamConditions(BeamConditions.from_mapping(value, "`beam_conditions`"))
    raise TypeError(f"`beam_conditions` must be None, a BeamConditions, a mapping or a JSON file path, "
                    f"got {type(value).__name__}")


def _as_resolved(result: Any) -> ResolvedCheckpoint:
    if isinstance(result, ResolvedCheckpoint):
        return result
    if hasattr(result, "path") and hasattr(result, "manifest"):
        key = getattr(result, "payload_key", None)
        path = Path(result.path)
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        path, key = Path(result[0]), None
        result = ResolvedCheckpoint(path, result[1], None)
    else:
        raise TypeError(f"a checkpoint resolver must return a ResolvedCheckpoint or (path, manifest), "
                        f"got {type(result).__name__}")
    if key is None:
        # Without a payload identity from the resolver, the file is the identity.
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    return ResolvedCheckpoint(path, result.manifest, key)


def _check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None,
               allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "None or an int" if allow_none else "an int"
        raise TypeError(f"`{name}` must be {expected}, got {type(value).__name__} {value!r}")
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"`{name}` must be {bounds}, got {value}")
    return value


@dataclass
class GeneratorStats:
    """What the module did, for logs and benchmarks."""

    events: int = 0
    digits: int = 0
    loads: int = 0
    generate_seconds: float = 0.0
    convert_seconds: float = 0.0
    checkpoints: list[str] = field(default_factory=list)


class PXDBackgroundGenerator:
    """Generates PXD background digits, one event per :meth:`event` call.

    :param model: generator model name: ``sparse`` (the default), ``convnet``, ``resnet``,
        ``ieagan``; None: the model a fixed ``checkpoint`` says it is (its manifest; basf2's
        default, convnet, for a legacy file without one), else ``sparse``
    :param checkpoint: checkpoint file; None resolves it per run from the registry
    :param seed: int in [-2**63, 2**63 - 1]; None derives it from ``framework_seed``
        like basf2 (or, without one, draws a fresh seed and logs it)
    :param nintra: intra-op CPU threads (``torch.set_num_threads``)
    :param ninter: inter-op CPU threads (``torch.set_num_interop_threads``)
    :param globaltag: global tag holding the default checkpoints
    :param campaign: background campaign, or a list of them (highest priority first) for a run
        list spanning several; selects their global tags instead of ``globaltag``
    :param device: torch device, e.g. ``"cpu"`` or ``"cuda:0"``
    :param resolver: ``(model, exp, run, campaign, globaltag) -> ResolvedCheckpoint`` (or
        ``(path, manifest)``); defaults to :func:`registry.resolve.resolve_checkpoint`
    :param framework_seed: the framework's random seed (basf2: ``basf2.get_random_seed()``)
    :param images_per_forward: at most this many sensor images per forward pass (memory)
    :param channels_last: run convolutions in channels-last memory format; None picks the
        layout measured faster (BENCHMARKS.md, "Generation"): channels-last for convnet and
        resnet on CPU, NCHW otherwise
    :param require_production: refuse demo or untrained checkpoints (DemoCheckpointError);
        None reads ``PXDBG_REQUIRE_PRODUCTION`` (see :mod:`registry.policy`)
    :param beam_conditions: conditioned models: the beam conditions of every run (a
        :class:`registry.beam.BeamConditions`, a mapping or a JSON file); None resolves the
        payload ``BeamConditions`` per run
    :param beam_resolver: ``(exp, run, campaign, globaltag) -> ResolvedBeamConditions``;
        defaults to :func:`registry.resolve.resolve_beam_conditions`
    :param beam_globaltag: global tag(s) holding the ``BeamConditions`` IoVs; None: those of
        the checkpoints (the campaigns' or ``globaltag``)
    :param force_conditions: generate even for conditions further outside the training
        range than the model allows (it still says it extrapolates)
    :param max_extrapolation: how far outside the training range a conditioned model may
        go, in units of each driver's largest trained value; None: the checkpoint's setting
    """

    def __init__(self, model: str | None = None, checkpoint: str | os.PathLike | None = None,
                 seed: int | None = None, nintra: int = 1, ninter: int = 1,
                 globaltag: str = DEFAULT_GLOBALTAG, campaign: str | list[str] | tuple[str, ...] | None = None,
                 device: str | torch.device = "cpu", *, resolver: Resolver | None = None,
                 framework_seed: Any = None, images_per_forward: int | None = None,
                 channels_last: bool | None = None, require_production: bool | None = None,
                 beam_conditions: Any = None, beam_resolver: Callable | None = None,
                 beam_globaltag: str | list[str] | tuple[str, ...] | None = None, force_conditions: bool = False,
                 max_extrapolation: float | None = None):
        if checkpoint is not None:
            if not isinstance(checkpoint, (str, os.PathLike)):
                raise TypeError(f"`checkpoint` must be None or a path, got {type(checkpoint).__name__}")
            checkpoint = Path(os.path.expandvars(os.fspath(checkpoint)))
            if not checkpoint.is_file():
                raise ValueError(f"`checkpoint` {str(checkpoint)!r} is not an existing file")
        if model is None:
            model = model_of_checkpoint(checkpoint) if checkpoint is not None else DEFAULT_MODEL
        if not isinstance(model, str):
            raise TypeError(f"`model` must be a str, got {type(model).__name__} {model!r}")
        if model not in MODELS:
            raise ValueError(f"invalid `model` {model!r} (options: {', '.join(MODELS)})")
        self.model = model
        self.checkpoint = checkpoint
        self.seed = _check_int("seed", seed, _SEED_MIN, _SEED_MAX, allow_none=True)
        self.nintra = _check_int("nintra", nintra, 1)
        self.ninter = _check_int("ninter", ninter, 1)
        if not isinstance(globaltag, str):
            raise TypeError(f"`globaltag` must be a str, got {type(globaltag).__name__}")
        if not globaltag:
            raise ValueError("`globaltag` must not be empty")
        self.globaltag = globaltag
        if isinstance(campaign, (list, tuple)):
            # Several campaigns, highest priority first: a run list spanning their IoVs.
            if not campaign or not all(isinstance(c, str) for c in campaign):
                raise TypeError("`campaign` as a list must hold at least one str (campaign names)")
            campaign = tuple(campaign) if len(campaign) > 1 else campaign[0]
        elif campaign is not None and not isinstance(campaign, str):
            raise TypeError(f"`campaign` must be None, a str or a list of str, got {type(campaign).__name__}")
        if campaign == "" or (isinstance(campaign, tuple) and "" in campaign):
            raise ValueError("`campaign` must not be empty")
        self.campaign = campaign
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"`device` must be a str or torch.device, got {type(device).__name__}")
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"invalid `device` {device!r}: {exc}") from None
        if resolver is not None and not callable(resolver):
            raise TypeError("`resolver` must be callable")
        self.resolver = resolver
        self.framework_seed = framework_seed
        self.images_per_forward = _check_int("images_per_forward", images_per_forward, 1, allow_none=True)
        if channels_last is not None and not isinstance(channels_last, bool):
            raise TypeError("`channels_last` must be None or a bool")
        self.channels_last = channels_last
        if require_production is not None and not isinstance(require_production, bool):
            raise TypeError("`require_production` must be None or a bool")
        self.require_production = require_production
        self._fixed_beam = _as_beam(beam_conditions)
        if beam_resolver is not None and not callable(beam_resolver):
            raise TypeError("`beam_resolver` must be callable")
        self.beam_resolver = beam_resolver
        self.beam_globaltag = tuple(beam_globaltag) if isinstance(beam_globaltag, list) else beam_globaltag
        if not isinstance(force_conditions, bool):
            raise TypeError("`force_conditions` must be a bool")
        self.force_conditions = force_conditions
        if max_extrapolation is not None and (isinstance(max_extrapolation, bool)
                                              or not isinstance(max_extrapolation, (int, float))
                                              or not 0 <= max_extrapolation < float("inf")):
            raise ValueError(f"`max_extrapolation` must be None or a number >= 0, got {max_extrapolation!r}")
        self.max_extrapolation = max_extrapolation
        #: Conditioned models: the beam conditions in use (with where they came from) and
        #: how the model meets them (interpolation or extrapolation).
        self.beam = None
        self.conditions_fit = None
        self._beam_key: Any = None

        self._module = get_model(model)
        self._sparse = model_kind(model) == SPARSE
        if self._sparse and self.device.type != "cpu":
            raise ValueError(f"the {model!r} model runs on the CPU (numpy), not on {str(self.device)!r}")
        self._model: Any = None
        #: Events made (or skipped) so far: the sparse model's per-event seed index.
        self._events_made = 0
        self._generator: torch.Generator | None = None
        self._payload_key: Hashable = None
        #: Where the loaded weights came from (payload, tag, IoV, source; or the file path).
        self.checkpoint_description: str | None = None
        #: The checkpoint in use as its resolver gave it (for provenance records).
        self.resolved: ResolvedCheckpoint | None = None
        #: Whether the weights in use are demo weights (not a physics model).
        self.demo: bool = False
        self.manifest: Manifest | None = None
        self.used_seed: int | None = None
        self.exp: int | None = None
        self.run: int | None = None
        self.stats = GeneratorStats()

    # -- lifecycle -----------------------------------------------------------------------

    def initialize(self) -> None:
        """Apply thread settings, seed the generator, and load a fixed checkpoint.

        With a registry-resolved checkpoint the weights are loaded at the first
        :meth:`begin_run`, when (exp, run) is known.
        """
        check_device_usable(self.device)
        self._apply_threads()
        if self.seed is not None:
            seed = self.seed
        elif self.framework_seed is not None:
            seed = seed_from_framework(self.framework_seed)
        else:
            seed = secrets.randbelow(2**64) + _SEED_MIN
            log.warning("no seed and no framework seed given: using random seed %d", seed)
        self.used_seed = seed
        # Latents are drawn on the CPU so a seed gives the same events on every device.
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        log.info("PXD background generator seed initialized to %d", seed)
        if self.checkpoint is not None:
            self._load(ResolvedCheckpoint(self.checkpoint, None, ("file", str(self.checkpoint))))

    def begin_run(self, exp: int, run: int) -> None:
        """Switch to the checkpoint valid for (exp, run) when it is another payload."""
        self.exp = _check_int("exp", exp, 0)
        self.run = _check_int("run", run, 0)
        if self._generator is None:
            raise RuntimeError("begin_run() before initialize()")
        if self.checkpoint is None:
            resolver = self.resolver or default_resolver
            resolved = _as_resolved(resolver(self.model, exp, run, self.campaign, self.globaltag))
            if resolved.payload_key != self._payload_key or self._model is None:
                log.info("exp %d run %d: switching to checkpoint %s", exp, run, resolved.path)
                self._load(resolved)
        if getattr(self._model, "conditioned", False):
            self._apply_conditions(exp, run)

    def _apply_conditions(self, exp: int | None, run: int | None) -> None:
        """Give a conditioned model the run's beam conditions (when they changed)."""
        if self._fixed_beam is not None:
            beam = self._fixed_beam
        else:
            resolver = self.beam_resolver or default_beam_resolver
            if self.beam_globaltag is not None:
                beam = resolver(exp, run, None, self.beam_globaltag)
            else:
                beam = resolver(exp, run, self.campaign, self.globaltag)
        key = (beam.key, id(self._model))
        if key == self._beam_key:
            return
        fit = self._model.set_conditions(beam.conditions, force=self.force_conditions,
                                         max_extrapolation=self.max_extrapolation)
        where = f"exp {exp} run {run}: " if exp is not None else ""
        if fit.extrapolated:
            log.warning("%sbeam conditions %s: %s", where, beam.describe(), fit.describe())
        else:
            log.info("%sbeam conditions %s: %s", where, beam.describe(), fit.describe())
        self.beam, self.conditions_fit, self._beam_key = beam, fit, key

    def conditions_record(self) -> dict | None:
        """The beam conditions the current events are made for and how (None for a model
        that is not conditioned), for provenance records."""
        if self.beam is None or self.conditions_fit is None or not getattr(self._model, "conditioned", False):
            return None
        return {**self.beam.record(), **self.conditions_fit.record()}

    def event(self) -> PXDDigits:
        """One event of background digits (sorted by sensor, ucell, vcell)."""
        return self.events(1)[0]

    def events(self, n: int) -> list[PXDDigits]:
        """``n`` events generated in one batch: identical to ``n`` calls of :meth:`event`."""
        if self._sparse:
            return self._sparse_events(n)
        dense = self.generate_dense(n)
        t0 = time.perf_counter()
        digits = [dense_to_digits(ev) for ev in dense.numpy()]
        self.stats.convert_seconds += time.perf_counter() - t0
        self.stats.digits += sum(len(d) for d in digits)
        return digits

    def generate_dense(self, n: int) -> torch.Tensor:
        """``n`` events as dense uint8 images ``(n, 40, 250, 768)`` (for the sparse model: its
        digits, densified)."""
        _check_int("n", n, 1)
        self._check_loaded()
        if self._sparse:
            from .digits import digits_to_dense

            events = self._sparse_events(n)
            dense = np.zeros((n,) + EVENT_SHAPE, np.uint8)
            for i, ev in enumerate(events):
                digits_to_dense(ev, out=dense[i])
            return torch.from_numpy(dense)
        t0 = time.perf_counter()
        dense = self._module.generate(self._model, self._generator, n,
                                      images_per_forward=self.images_per_forward)
        self.stats.generate_seconds += time.perf_counter() - t0
        self.stats.events += n
        return dense

    def _check_loaded(self) -> None:
        if self._model is None:
            raise RuntimeError("no checkpoint loaded: call initialize() (and begin_run() when the "
                               "checkpoint comes from the registry) first")

    def _sparse_events(self, n: int) -> list[PXDDigits]:
        _check_int("n", n, 1)
        self._check_loaded()
        t0 = time.perf_counter()
        seed = self.used_seed & _SEED_MASK
        first = self._events_made
        events = self._model.generate_events([(seed, k) for k in range(first, first + n)])
        self._events_made += n
        self.stats.generate_seconds += time.perf_counter() - t0
        self.stats.events += n
        self.stats.digits += sum(len(d) for d in events)
        return events

    def skip_events(self, n: int) -> None:
        """Advance the random stream past ``n`` events without generating them, e.g. to
        reproduce event k of a job without generating the k events before it."""
        _check_int("n", n, 0)
        if self._generator is None:
            raise RuntimeError("skip_events() before initialize()")
        if self._sparse:
            self._events_made += n
            return
        from .models.common import sample_latents

        sample_latents(self._generator, n, self._module.LATENT_DIM, torch.device("cpu"))

    def terminate(self) -> None:
        s = self.stats
        if s.events:
            log.info("generated %d events, %.1f digits/event, %.3f s/event (+%.4f s/event digit conversion), "
                     "%d checkpoint load(s)", s.events, s.digits / s.events, s.generate_seconds / s.events,
                     s.convert_seconds / s.events, s.loads)
        self._model = None
        self._payload_key = None

    # -- internals -----------------------------------------------------------------------

    def _apply_threads(self) -> None:
        torch.set_num_threads(self.nintra)
        if torch.get_num_interop_threads() != self.ninter:
            try:
                torch.set_num_interop_threads(self.ninter)
            except RuntimeError:  # only settable once, before any inter-op work
                log.warning("could not set %d inter-op threads (torch already uses %d)",
                            self.ninter, torch.get_num_interop_threads())

    def _load(self, resolved: ResolvedCheckpoint) -> None:
        # The manifest check runs before any weight is used; a wrong-model checkpoint
        # therefore fails here, before the first event.
        if self._sparse:
            model = self._module.load(resolved.path)
            manifest = model.manifest
        else:
            model, manifest = load_generator(self.model, resolved.path, manifest=resolved.manifest)
        # A resolver that records a source (the registry) has applied the production
        # rule and warned already; a fixed file or another resolver is checked here.
        describe = getattr(resolved, "describe", None)
        what = describe() if callable(describe) else str(resolved.path)
        source = getattr(resolved, "source", None)
        self.demo = check_checkpoint(manifest, what, from_embedded=source == EMBEDDED_SOURCE,
                                     require_production=self.require_production, warn=source is None)
        if not self._sparse:
            model = model.to(self.device)
            if self._use_channels_last():
                model = model.to(memory_format=torch.channels_last)
        self._model, self.manifest = model, manifest
        self._payload_key = resolved.payload_key
        self.stats.loads += 1
        self.stats.checkpoints.append(str(resolved.path))
        self.resolved = resolved
        # Which payload, tag, IoV and source answered, for the job log (a fixed file: its path).
        self.checkpoint_description = what
        self._beam_key = None  # a new model is set to the conditions afresh
        if getattr(model, "conditioned", False) and self._fixed_beam is not None:
            self._apply_conditions(self.exp, self.run)

    def _use_channels_last(self) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        # Measured on CPU (BENCHMARKS.md, "Generation"): channels-last convolutions were
        # 1.1-1.6x faster for convnet and 1.4-1.5x for resnet in every run; IEA-GAN
        # showed no clear gain, and GPUs were not measured: they keep basf2's layout.
        return self.device.type == "cpu" and self.model in _CHANNELS_LAST_ON_CPU
