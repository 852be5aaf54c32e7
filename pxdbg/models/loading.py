"""Build a generator model from a checkpoint file, and save one.

New checkpoints carry a manifest: it is checked against the model (name and architecture
version) before a single tensor is loaded, and its ``model_config`` rebuilds the model
with the right shapes. Legacy basf2 state dicts carry none: they are loaded into the
default architecture with ``strict=True``, after the small key adaptations listed in
:func:`adapt_legacy_state_dict`. Any mismatch raises
:class:`registry.exceptions.CheckpointMismatchError` with the offending keys.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch

from registry.checkpoint import read_checkpoint, write_checkpoint
from registry.exceptions import CheckpointMismatchError
from registry.manifest import Manifest, check_manifest, software_versions

from . import get_model

log = logging.getLogger(__name__)


def adapt_legacy_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The documented key mapping for legacy torch state dicts:

    * a ``module.`` prefix on every key (weights saved from ``nn.DataParallel``) is dropped;
    * BatchNorm ``num_batches_tracked`` counters, absent from files written by torch < 0.4.1
      and unused in evaluation, are filled with 0 where the matching ``running_mean`` exists.

    All other keys must match the model exactly.
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    for key in [k for k in sd if k.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        sd.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return sd


def build_from_state_dict(model_name: str, state_dict: Mapping[str, torch.Tensor],
                          config: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """A ``Model`` of ``model_name`` (built with ``config``) holding ``state_dict``, loaded
    strictly, in eval mode, without gradients."""
    module = get_model(model_name)
    config = dict(config or {})
    if model_name == "ieagan":
        config.setdefault("init", None)  # the weights are overwritten anyway
    try:
        model = module.Model(**config)
    except TypeError as exc:
        raise CheckpointMismatchError(f"checkpoint model_config {config!r} does not fit model "
                                      f"{model_name!r}: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{label}: {', '.join(keys[:5])}{more}")
        raise CheckpointMismatchError(
            f"checkpoint weights do not fit model {model_name!r}: " + "; ".join(parts)
        )
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


def load_generator(model_name: str, path: str | Path, *, manifest_expected: bool = False,
                   manifest: Manifest | None = None) -> tuple[torch.nn.Module, Manifest | None]:
    """The model and manifest stored in checkpoint ``path`` (CPU, eval mode).

    The manifest, when present, is checked first: a checkpoint of another model or
    architecture version is refused before any weight is used. A file without one (a
    torch state dict, as basf2's module reads it) uses ``manifest`` when given (the one
    the registry read from the payload metadata or inferred for a basf2 payload), else
    loads as basf2 weights; ``manifest_expected`` refuses it then.
    """
    module = get_model(model_name)
    state_dict, own = read_checkpoint(path)
    if own is None and manifest is not None:
        log.info("%s: state dict without manifest; using the one recorded for its payload (%s)",
                 path, manifest.description or f"model {manifest.model}")
        state_dict = adapt_legacy_state_dict(state_dict)
    elif own is None:
        if manifest_expected:
            raise CheckpointMismatchError(f"{path}: checkpoint carries no manifest")
        log.info("%s: legacy checkpoint without manifest, loading as basf2 %s weights", path, model_name)
        state_dict = adapt_legacy_state_dict(state_dict)
    manifest = own if own is not None else manifest
    config = {}
    if manifest is not None:
        check_manifest(manifest, model_name, module.ARCHITECTURE_VERSION)
        config = manifest.model_config
    try:
        return build_from_state_dict(model_name, state_dict, config), manifest
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(f"{path}: {exc}") from None


def basf2_state_dict(model_name: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of checkpoint ``path`` as basf2's module loads them: the state dict of
    the DEFAULT ``Model()`` of ``model_name`` (basf2 builds no other), checked by loading
    it strictly into one. A checkpoint of another shape (say a reduced ``width``) is
    refused with CheckpointMismatchError."""
    state_dict, manifest = read_checkpoint(path)
    if manifest is not None:
        check_manifest(manifest, model_name, get_model(model_name).ARCHITECTURE_VERSION)
    state_dict = adapt_legacy_state_dict(state_dict)
    try:
        model = build_from_state_dict(model_name, state_dict, {})
    except CheckpointMismatchError as exc:
        config = manifest.model_config if manifest is not None else {}
        raise CheckpointMismatchError(
            f"{path}: basf2's module builds the default {model_name} architecture, which these weights "
            f"do not fit (model_config {config!r}): {exc}") from None
    return dict(model.state_dict())


def save_generator(path: str | Path, model_name: str, model: torch.nn.Module, **manifest_fields: Any) -> Path:
    """Write ``model``'s weights with a manifest (model name, architecture version, the
    model's constructor config, software versions, plus ``manifest_fields`` such as
    ``campaign``, ``training_dataset``, ``training_steps`` and ``metrics``)."""
    module = get_model(model_name)
    if not isinstance(model, module.Model):
        raise TypeError(f"model is a {type(model).__name__}, not a {model_name} Model")
    manifest_fields.setdefault("software", software_versions())
    manifest = Manifest(model=model_name, architecture_version=module.ARCHITECTURE_VERSION,
                        model_config=dict(getattr(model, "config", {})), **manifest_fields)
    return write_checkpoint(path, model.state_dict(), manifest)
