"""Resolve (model, exp, run, campaign) to a verified local checkpoint file.

Where the answer comes from, highest priority first:

1. the ``sources`` argument (specs such as ``sqlite:///...``, a store path, a basf2
   snapshot, ``http://server:port``, or ready :class:`MetadataSource` objects), else
2. the environment variable ``PXDBG_CONDITIONS``: comma-separated specs, tried in order,
3. the embedded demo store shipped inside the package (:mod:`registry.embedded`): the
   only source when nothing is configured; after configured sources only with an
   explicit opt-in (``allow_demo``, ``PXDBG_ALLOW_DEMO=1``); never with
   ``use_embedded=False`` or ``PXDBG_NO_EMBEDDED=1``.

Which source answers (DESIGN.md, "Which source answers"; :mod:`registry.policy`):

* a source that knows none of the requested global tags, or holds no payload of the
  model's name in them, is skipped for the next one (logged at INFO);
* a source that knows the tag is authoritative for it: "no checkpoint for this run" or
  "tag INVALID" from it is raised, never papered over with another source's (possibly
  very different) checkpoint;
* a source that *fails* (cannot be reached or opened, damaged payload bytes, I/O error,
  cache lock timeout) stops the lookup with SourceFailedError, unless failover between
  configured sources was asked for (``failover``, ``PXDBG_FAILOVER=1``): then it is
  skipped with a WARNING;
* a demo or untrained checkpoint is logged with a loud WARNING, and refused under
  ``require_production`` (``PXDBG_REQUIRE_PRODUCTION=1``).

The answering source is logged (INFO) and recorded in the result (``source``: a URL
without credentials) for the provenance of the events made with it.

Global tags: ``campaign`` (a name or a list of names, highest priority first) maps to the
campaigns' tags; otherwise ``globaltag`` (a name or list, default
``PXDBackgroundGenerator``). ``PXDBG_GLOBALTAGS`` (comma-separated) is prepended to either,
as basf2's ``conditions.prepend_globaltag`` would, for testing a candidate tag without
touching the job.

Per-run lookups are answered from an in-process cache keyed by (model, tags). Each entry
records the range of runs over which the answer is known to be the same: the matched IoV
minus every IoV that could override it (IoVs of the same payload in higher-priority tags,
and of higher revisions in the deciding tag). A run inside that range is a dictionary hit;
a run outside it resolves afresh. So the cache is exact across IoV boundaries; it does not
see tags edited after the lookup (call :func:`clear_cache`; processing tags are frozen).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from conditions.cache import PayloadCache
from conditions.exceptions import NoPayloadFoundError, UnknownTagError, UnusableTagError
from conditions.iov import IntervalOfValidity
from conditions.payload import PayloadInfo, ResolvedPayload
from conditions.source import MetadataSource

from . import policy
from .beam import BEAM_PAYLOAD, ResolvedBeamConditions
from .beam import read_payload as read_beam_payload
from .campaigns import DEFAULT_GLOBALTAG, campaign_tag
from .checkpoint import PAYLOAD_PREFIX, ResolvedCheckpoint, payload_manifest
from .embedded import EMBEDDED_SOURCE
from .exceptions import (BeamConditionsError, CheckpointFormatError, ManifestError, ManifestMismatchError,
                         NoCheckpointSourceError, SourceFailedError, UnsafeCheckpointError)
from .manifest import Manifest, check_manifest

log = logging.getLogger(__name__)

#: Comma-separated source specs, tried in order before the embedded store.
SOURCES_ENV = "PXDBG_CONDITIONS"
#: Comma-separated global tags prepended (highest priority) to the requested ones.
GLOBALTAGS_ENV = "PXDBG_GLOBALTAGS"
#: Set to 1 to never use the embedded store.
NO_EMBEDDED_ENV = "PXDBG_NO_EMBEDDED"
SourceSpec = Union[str, os.PathLike, MetadataSource]


def payload_name(model: str) -> str:
    """The payload name under which checkpoints of ``model`` are stored."""
    return PAYLOAD_PREFIX + model


@dataclass(frozen=True)
class RegistryCheckpoint(ResolvedCheckpoint):
    """A checkpoint resolved from a conditions source, with where it came from.

    ``iov`` is the IoV as stored in the tag; ``valid`` is the range of runs over which this
    same answer holds (``iov`` minus anything that overrides it), used by the cache.
    """

    payload: PayloadInfo | None = None
    iov: IntervalOfValidity | None = None
    valid: IntervalOfValidity | None = None
    tag: str | None = None
    #: the answering source: a URL without credentials, a store or snapshot location, or
    #: EMBEDDED_SOURCE
    source: str | None = None
    #: not production weights (the embedded store, or a demo/untrained manifest)
    demo: bool = False

    def describe(self) -> str:
        p = self.payload
        what = f"{p.name} r{p.revision}" if p is not None else str(self.path)
        return f"{what} (tag {self.tag}, IoV {self.iov}) from {self.source}" + (" [DEMO]" if self.demo else "")


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@?#]*@")


def public_location(text: str) -> str:
    """A source location fit for logs and output files: every URL in ``text`` (comma
    separated) without user name, password or query parameters (which may carry them)."""
    parts = []
    for item in str(text).split(","):
        item = item.strip()
        if "://" in item:
            item = _USERINFO.sub(r"\1", item).split("?", 1)[0].split("#", 1)[0]
        parts.append(item)
    return ", ".join(parts)


def _split_env(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def configured_specs() -> list[str]:
    """The source specs from ``PXDBG_CONDITIONS`` (empty when unset)."""
    return _split_env(SOURCES_ENV)


def requested_tags(campaign: str | Sequence[str] | None = None,
                   globaltag: str | Sequence[str] | None = DEFAULT_GLOBALTAG) -> tuple[str, ...]:
    """The global tags to search, highest priority first (``PXDBG_GLOBALTAGS`` in front)."""
    if campaign:
        names = [campaign] if isinstance(campaign, str) else list(campaign)
        tags = [campaign_tag(name) for name in names]
    else:
        tags = [globaltag] if isinstance(globaltag, str) else list(globaltag or [DEFAULT_GLOBALTAG])
    ordered: list[str] = []
    for tag in _split_env(GLOBALTAGS_ENV) + tags:
        if tag not in ordered:
            ordered.append(tag)
    if not ordered:
        raise ValueError("no global tag to resolve checkpoints from")
    return tuple(ordered)


def _is_http(spec: Any) -> bool:
    return isinstance(spec, str) and spec.strip().lower().startswith(("http://", "https://"))


class _SourceSlot:
    """One configured source, opened on first use (and again after a failure)."""

    def __init__(self, spec: SourceSpec, *, fallback: bool = False, options: dict[str, Any] | None = None):
        self.spec = spec
        self.fallback = fallback
        self.options = dict(options or {})
        self._source: MetadataSource | None = spec if isinstance(spec, MetadataSource) else None
        self._owned = self._source is None
        #: (tag, payload name) -> [(iov, revision), ...] as listed by this source: the
        #: validity range of every new answer needs them, and listing a whole tag per
        #: IoV boundary would make a job's lookups grow with the square of its IoVs.
        self.iov_lists: dict[tuple[str, str], list[tuple[IntervalOfValidity, int]]] = {}

    @property
    def description(self) -> str:
        if self.fallback:
            return EMBEDDED_SOURCE
        if self._source is not None:
            return public_location(self._source.description)
        return public_location(os.fspath(self.spec))

    def answering(self) -> str:
        """Where the last answer came from: for a list of servers, the one that answered."""
        server = getattr(getattr(self._source, "transport", None), "last_server", None)
        return public_location(server) if server else self.description

    def open(self) -> MetadataSource:
        if self._source is None:
            if self.fallback:
                from .embedded import open_embedded

                self._source = open_embedded()
            else:
                from conditions.api import open_source

                self._source = open_source(os.fspath(self.spec), **self.options)
        return self._source

    def reset(self) -> None:
        """Forget a failed connection so the next lookup opens it again."""
        self.iov_lists.clear()
        if self._owned and self._source is not None:
            try:
                self._source.close()
            except Exception:  # closing a broken source must not hide the original error
                pass
            self._source = None

    def close(self) -> None:
        self.reset()


#: Stands for the embedded store in a registry's source list.
_EMBEDDED = object()


class _NotKnownHere(Exception):
    """This source knows none of the requested tags, or no payload of that name in them
    (not a failure of the source: the next one is asked)."""


class CheckpointRegistry:
    """Resolves checkpoints from an ordered list of sources, with an in-process cache.

    ``sources``: specs or MetadataSource objects; None means ``PXDBG_CONDITIONS``.
    ``use_embedded``: True/False forces the embedded demo store in (last) or out; None
    applies the rule: in when nothing is configured, or with ``allow_demo`` (default:
    ``PXDBG_ALLOW_DEMO``), never with ``PXDBG_NO_EMBEDDED=1``. ``failover``: skip sources
    that fail (default: ``PXDBG_FAILOVER``); otherwise a failure is SourceFailedError.
    ``require_production``: refuse demo checkpoints (default: ``PXDBG_REQUIRE_PRODUCTION``).
    ``cache``: the PayloadCache for downloaded payloads. ``allow_open``: accept OPEN
    tags (for validating a campaign before it is frozen). ``client_options``: for the
    REST client of ``http(s)://`` specs (e.g. ``retries``, ``timeout``, ``token``),
    passed through :func:`conditions.api.open_source`.
    """

    def __init__(self, sources: Iterable[SourceSpec] | SourceSpec | None = None, *,
                 use_embedded: bool | None = None, cache: PayloadCache | None = None,
                 allow_open: bool = False, client_options: dict[str, Any] | None = None,
                 allow_demo: bool | None = None, failover: bool | None = None,
                 require_production: bool | None = None):
        if sources is None:
            specs: list[SourceSpec] = list(configured_specs())
        elif isinstance(sources, (str, os.PathLike, MetadataSource)):
            specs = [sources]
        else:
            specs = list(sources)
        self.configured = bool(specs)
        if use_embedded is None:
            if policy.env_flag(NO_EMBEDDED_ENV):
                use_embedded = False
            else:
                use_embedded = not specs or policy.flag(allow_demo, policy.ALLOW_DEMO_ENV)
        if use_embedded:
            specs.append(_EMBEDDED)  # type: ignore[arg-type]
        if not specs:
            raise ValueError("no conditions source configured and the embedded store is disabled")
        self.failover = policy.flag(failover, policy.FAILOVER_ENV)
        self.require_production = policy.flag(require_production, policy.REQUIRE_PRODUCTION_ENV)
        self.cache = cache if cache is not None else PayloadCache()
        http_options = {"cache": self.cache, **(client_options or {})}
        self._slots = [
            _SourceSlot(spec, fallback=spec is _EMBEDDED,
                        options=http_options if _is_http(spec) else {"cache": self.cache})
            for spec in specs
        ]
        self.allow_open = allow_open
        self._entries: dict[tuple, list[RegistryCheckpoint]] = {}
        self._lock = threading.Lock()

    @property
    def source_descriptions(self) -> list[str]:
        return [slot.description for slot in self._slots]

    # -- the lookup -----------------------------------------------------------------------
    def resolve(self, model: str, exp: int, run: int, *,
                campaign: str | Sequence[str] | None = None,
                globaltag: str | Sequence[str] | None = DEFAULT_GLOBALTAG,
                architecture_version: int | None = None) -> RegistryCheckpoint:
        """The verified checkpoint of ``model`` for (exp, run); see the module docstring.

        With ``architecture_version`` the manifest must match it as well as the model name
        (ManifestMismatchError otherwise), so a wrong checkpoint is refused before use.
        """
        model_name = getattr(model, "name", model)
        if not isinstance(model_name, str) or not model_name:
            raise TypeError(f"model must be a model name (str), got {model!r}")
        if architecture_version is None:
            architecture_version = getattr(model, "ARCHITECTURE_VERSION", None)
        for label, value in (("exp", exp), ("run", run)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{label} must be an integer >= 0, got {value!r}")
        tags = requested_tags(campaign, globaltag)
        key = (model_name, tags)

        entries = self._entries.get(key)
        if entries:
            for entry in entries:
                if entry.valid.contains(exp, run):
                    self._check(entry, model_name, architecture_version)
                    return entry

        with self._lock:
            found = self._resolve_uncached(model_name, exp, run, tags)
            self._check(found, model_name, architecture_version)
            policy.check_checkpoint(found.manifest, found.describe(), from_embedded=found.source == EMBEDDED_SOURCE,
                                    require_production=self.require_production)
            # Newest first: production walks runs forward, so the latest range hits first.
            self._entries.setdefault(key, []).insert(0, found)
        return found

    @staticmethod
    def _check(found: RegistryCheckpoint, model: str, architecture_version: int | None) -> None:
        if found.manifest is None:
            raise ManifestError(
                f"checkpoint {found.describe()} carries no manifest: a safetensors file without one, and "
                "its payload metadata records none; upload it with `pxdbg checkpoint upload`, which adds one"
            )
        if architecture_version is None:
            if found.manifest.model != model:
                raise ManifestMismatchError(
                    f"checkpoint {found.describe()} is for model {found.manifest.model!r}, "
                    f"but model {model!r} was requested"
                )
        else:
            try:
                check_manifest(found.manifest, model, architecture_version)
            except ManifestMismatchError as error:
                raise ManifestMismatchError(f"{found.describe()}: {error}") from None

    def _resolve_uncached(self, model: str, exp: int, run: int, tags: tuple[str, ...]) -> RegistryCheckpoint:
        slot, resolved, valid, path, manifest = self._locate(
            payload_name(model), exp, run, tags, lambda path, payload: payload_manifest(path, payload))
        found = RegistryCheckpoint(
            path=Path(path), manifest=manifest, payload_key=resolved.payload.key,
            payload=resolved.payload, iov=resolved.iov, valid=valid,
            tag=resolved.tag, source=slot.answering(),
            demo=policy.demo_reason(manifest, from_embedded=slot.fallback) is not None,
        )
        log.info("checkpoint for %s at exp %d run %d: %s", model, exp, run, found.describe())
        return found

    def resolve_beam_conditions(self, exp: int, run: int, *, campaign: str | Sequence[str] | None = None,
                                globaltag: str | Sequence[str] | None = DEFAULT_GLOBALTAG) -> ResolvedBeamConditions:
        """The validated beam conditions (payload ``BeamConditions``) of run (exp, run), by
        the same source rules and per-run cache as checkpoints; BeamConditionsError for a
        payload that is not a valid record (the source's authoritative answer)."""
        for label, value in (("exp", exp), ("run", run)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{label} must be an integer >= 0, got {value!r}")
        tags = requested_tags(campaign, globaltag)
        key = (BEAM_PAYLOAD, tags)
        for entry in self._entries.get(key) or ():
            if entry.valid.contains(exp, run):
                return entry
        with self._lock:
            slot, resolved, valid, _path, conditions = self._locate(
                BEAM_PAYLOAD, exp, run, tags,
                lambda path, payload: read_beam_payload(path, f"{payload.name} r{payload.revision}"))
            found = ResolvedBeamConditions(conditions=conditions, payload=resolved.payload, iov=resolved.iov,
                                           valid=valid, tag=resolved.tag, source=slot.answering())
            log.info("beam conditions at exp %d run %d: %s", exp, run, found.describe())
            self._entries.setdefault(key, []).insert(0, found)
        return found

    def _locate(self, name: str, exp: int, run: int, tags: tuple[str, ...], read: Any):
        """The first source's answer for payload ``name`` at (exp, run), under the source
        rules of the module docstring: (slot, resolved payload, validity range, verified
        local path, ``read(path, payload)``). ``read`` runs on the verified file; what it
        raises about the bytes is the source's authoritative answer."""
        attempts: list[tuple[str, str]] = []
        for slot in self._slots:
            try:
                source = slot.open()
                resolved, tag_index = self._resolve_in(source, tags, name, exp, run)
                path = self.cache.get(resolved.payload, source)
                content = read(path, resolved.payload)
            except _NotKnownHere as reason:
                attempts.append((slot.description, str(reason)))
                log.info("conditions source %s skipped: %s", slot.description, reason)
                continue
            except (NoPayloadFoundError, UnusableTagError, ManifestError, CheckpointFormatError,
                    UnsafeCheckpointError, BeamConditionsError):
                # authoritative answers of a source that has the tag; a payload whose
                # verified bytes are unreadable or unsafe is that source's answer too
                raise
            except Exception as error:  # unreachable, corrupt, not a store, failed download, I/O
                reason = f"{type(error).__name__}: {error}"
                attempts.append((slot.description, reason))
                slot.reset()
                if not self.failover:
                    raise SourceFailedError(
                        f"conditions source {slot.description} failed while resolving {name} for exp {exp} "
                        f"run {run}: {reason}. No other source is used in its place: fix the source, or "
                        f"allow failover between the configured sources (--failover, {policy.FAILOVER_ENV}=1)",
                        attempts,
                    ) from error
                log.warning("conditions source %s failed (failing over to the next source): %s",
                            slot.description, reason)
                continue
            valid = self._valid_range(slot, source, tags, tag_index, resolved, exp, run)
            return slot, resolved, valid, path, content
        summary = "; ".join(f"{where}: {why}" for where, why in attempts)
        hint = ""
        if self.configured and not any(slot.fallback for slot in self._slots):
            hint = (" (the embedded demo store is not asked when sources are configured; "
                    f"--allow-demo / {policy.ALLOW_DEMO_ENV}=1 opts in)")
        raise NoCheckpointSourceError(
            f"no conditions source could provide {name} for exp {exp} run {run} in global tag(s) "
            f"{', '.join(tags)}. Tried: {summary}{hint}",
            attempts,
        )

    def _resolve_in(self, source: MetadataSource, tags: tuple[str, ...], name: str,
                    exp: int, run: int) -> tuple[ResolvedPayload, int]:
        """Resolve tag by tag in one source, so tags (and payloads) unknown to it can be
        told apart from runs it has no payload for."""
        unknown, no_match = [], []
        for index, tag in enumerate(tags):
            try:
                return source.resolve(tag, name, exp, run, allow_open=self.allow_open), index
            except UnknownTagError:
                unknown.append(tag)
            except NoPayloadFoundError:
                no_match.append(tag)
        if not no_match:
            raise _NotKnownHere(f"it has none of the global tags {', '.join(unknown)}")
        if not any(source.iovs(tag, name=name) for tag in no_match):
            raise _NotKnownHere(f"it has no {name} in global tag(s) {', '.join(no_match)}")
        raise NoPayloadFoundError(
            f"no {name} for exp {exp} run {run} in global tag(s) {', '.join(no_match)} "
            f"of {public_location(source.description)}"
            + (f" (tags unknown there: {', '.join(unknown)})" if unknown else "")
        )

    @staticmethod
    def _valid_range(slot: _SourceSlot, source: MetadataSource, tags: tuple[str, ...], tag_index: int,
                     resolved: ResolvedPayload, exp: int, run: int) -> IntervalOfValidity:
        """The run range around (exp, run) over which ``resolved`` stays the answer."""
        point = IntervalOfValidity(exp, run, exp, run)
        name = resolved.payload.name

        def listed(tag: str) -> list[tuple[IntervalOfValidity, int]]:
            # Kept like the resolved entries themselves: valid until clear_cache().
            key = (tag, name)
            if key not in slot.iov_lists:
                slot.iov_lists[key] = [(r.iov, r.payload.revision) for r in source.iovs(tag, name=name)]
            return slot.iov_lists[key]

        blockers: list[IntervalOfValidity] = []
        try:
            for tag in tags[:tag_index]:
                try:
                    blockers.extend(iov for iov, _revision in listed(tag))
                except UnknownTagError:
                    continue
            blockers.extend(iov for iov, revision in listed(resolved.tag)
                            if revision > resolved.payload.revision)
        except Exception as error:  # a source that cannot list IoVs: cache this run only
            log.debug("cannot list IoVs in %s (%s); caching the single run", source.description, error)
            return point
        valid = resolved.iov
        for blocker in blockers:
            pieces = [piece for piece in valid.subtract(blocker) if piece.contains(exp, run)]
            if not pieces:
                return point  # the source's answer disagrees with its own IoV list
            valid = pieces[0]
        return valid

    def as_resolver(self, *, campaign: str | Sequence[str] | None = None,
                    globaltag: str | Sequence[str] | None = None):
        """A ``resolver(model, exp, run, campaign, globaltag)`` for
        :class:`pxdbg.module.PXDBackgroundGenerator` that resolves through this registry.

        ``campaign``/``globaltag`` given here replace what the module passes, e.g. a list
        of campaigns in priority order for a production job whose runs span several.
        """

        def resolver(model: str, exp: int, run: int, module_campaign: Any = None,
                     module_globaltag: Any = DEFAULT_GLOBALTAG) -> RegistryCheckpoint:
            from_campaign = campaign if campaign is not None else module_campaign
            tags = globaltag if globaltag is not None else module_globaltag
            return self.resolve(model, exp, run, campaign=from_campaign, globaltag=tags)

        return resolver

    def as_beam_resolver(self, *, globaltag: str | Sequence[str] | None = None):
        """A ``beam_resolver(exp, run, campaign, globaltag)`` for the generator module that
        resolves beam conditions through this registry (``globaltag`` given here replaces
        the tags the module passes, e.g. a run-conditions tag separate from the campaigns')."""

        def resolver(exp: int, run: int, module_campaign: Any = None,
                     module_globaltag: Any = DEFAULT_GLOBALTAG) -> ResolvedBeamConditions:
            if globaltag is not None:
                return self.resolve_beam_conditions(exp, run, globaltag=globaltag)
            return self.resolve_beam_conditions(exp, run, campaign=module_campaign, globaltag=module_globaltag)

        return resolver

    # -- housekeeping ---------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget every resolved checkpoint (e.g. after editing an OPEN tag)."""
        with self._lock:
            self._entries.clear()
            for slot in self._slots:
                slot.iov_lists.clear()

    def close(self) -> None:
        self.clear_cache()
        for slot in self._slots:
            slot.close()

    def __enter__(self) -> "CheckpointRegistry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- module-level convenience: one registry per configuration -----------------------------

_registries: dict[tuple, CheckpointRegistry] = {}
_registries_lock = threading.Lock()


def _registry_key(sources: Any, use_embedded: bool | None, allow_open: bool) -> tuple:
    env = tuple(os.environ.get(name, "") for name in (SOURCES_ENV, NO_EMBEDDED_ENV, policy.ALLOW_DEMO_ENV,
                                                      policy.FAILOVER_ENV, policy.REQUIRE_PRODUCTION_ENV))
    if sources is None:
        ident: Any = None
    elif isinstance(sources, (str, os.PathLike, MetadataSource)):
        ident = (sources if not isinstance(sources, MetadataSource) else id(sources),)
    else:
        ident = tuple(s if not isinstance(s, MetadataSource) else id(s) for s in sources)
    return (ident, use_embedded, allow_open, env)


def get_registry(sources: Iterable[SourceSpec] | SourceSpec | None = None, *,
                 use_embedded: bool | None = None, allow_open: bool = False) -> CheckpointRegistry:
    """The shared registry for this configuration (created on first use)."""
    key = _registry_key(sources, use_embedded, allow_open)
    registry = _registries.get(key)
    if registry is None:
        with _registries_lock:
            registry = _registries.get(key)
            if registry is None:
                registry = CheckpointRegistry(sources, use_embedded=use_embedded, allow_open=allow_open)
                _registries[key] = registry
    return registry


def resolve_checkpoint(model: str, exp: int, run: int, campaign: str | Sequence[str] | None = None,
                       globaltag: str | Sequence[str] | None = DEFAULT_GLOBALTAG,
                       sources: Iterable[SourceSpec] | SourceSpec | None = None, *,
                       architecture_version: int | None = None, allow_open: bool = False,
                       use_embedded: bool | None = None) -> RegistryCheckpoint:
    """The verified checkpoint file and manifest of ``model`` for run (exp, run).

    ``campaign`` selects the campaign's global tag (a list: several, highest priority
    first); otherwise ``globaltag``. Sources: ``sources``, else ``PXDBG_CONDITIONS``; the
    embedded demo store when nothing is configured or with ``PXDBG_ALLOW_DEMO=1`` (see the
    module docstring for failover and production rules, read from the environment here).
    Repeated calls are served from an in-process cache that is exact across IoV boundaries.
    """
    registry = get_registry(sources, use_embedded=use_embedded, allow_open=allow_open)
    return registry.resolve(model, exp, run, campaign=campaign, globaltag=globaltag,
                            architecture_version=architecture_version)


def clear_cache() -> None:
    """Forget all resolved checkpoints and close the shared registries' sources."""
    with _registries_lock:
        for registry in _registries.values():
            registry.close()
        _registries.clear()


def resolve_beam_conditions(exp: int, run: int, campaign: str | Sequence[str] | None = None,
                            globaltag: str | Sequence[str] | None = DEFAULT_GLOBALTAG,
                            sources: Iterable[SourceSpec] | SourceSpec | None = None, *,
                            allow_open: bool = False, use_embedded: bool | None = None) -> ResolvedBeamConditions:
    """The validated beam conditions of run (exp, run): payload ``BeamConditions`` in the
    campaigns' (or ``globaltag``'s) tags, from the same sources and by the same rules as
    :func:`resolve_checkpoint`."""
    registry = get_registry(sources, use_embedded=use_embedded, allow_open=allow_open)
    return registry.resolve_beam_conditions(exp, run, campaign=campaign, globaltag=globaltag)
