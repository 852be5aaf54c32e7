"""The generator models, one Python module per model, selected by name.

Each model module provides:

* ``Model``: a ``torch.nn.Module`` whose default construction is the published
  architecture (basf2 state dicts load into it with ``strict=True``);
* ``generate(model, generator=None, n_events=1, *, latents=None, images_per_forward=None)``:
  uint8 events ``(n_events, 40, 250, 768)``, image i of an event being sensor i
  (:mod:`pxdbg.sensors` order);
* ``ARCHITECTURE_VERSION`` (checked against checkpoint manifests), ``LATENT_DIM`` and
  ``THRESHOLD`` (zero suppression in ADU, None for none).

Adding a model means adding its module here and its name to :data:`MODELS`.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

#: Names of the available models, each the name of a module in this package.
MODELS = ("convnet", "resnet", "ieagan")

_REQUIRED = ("Model", "generate", "ARCHITECTURE_VERSION", "LATENT_DIM", "THRESHOLD")


def available_models() -> tuple[str, ...]:
    return MODELS


def get_model(name: str) -> ModuleType:
    """The module implementing model ``name``; TypeError/ValueError for a bad name."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (available: {', '.join(MODELS)})")
    module = import_module(f".{name}", __name__)
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:  # a developer error: the registry lists a module that is not a model
        raise AttributeError(f"model module {module.__name__} lacks {', '.join(missing)}")
    return module


def build_model(name: str, **config) -> "torch.nn.Module":
    """A fresh ``Model`` of ``name``; ``config`` goes to its constructor (e.g. ``width``)."""
    return get_model(name).Model(**config)
