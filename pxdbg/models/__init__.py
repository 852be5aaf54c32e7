"""The generator models, one Python module per model, selected by name.

Two kinds share this contract (see ``KIND`` in each module):

* **dense** models (``convnet``, ``resnet``, ``ieagan``: the GANs) emit images. Their module
  provides ``Model``, a ``torch.nn.Module`` whose default construction is the published
  architecture (basf2 state dicts load into it with ``strict=True``);
  ``generate(model, generator=None, n_events=1, *, latents=None, images_per_forward=None)``,
  uint8 events ``(n_events, 40, 250, 768)`` (image i of an event is sensor i, in
  :mod:`pxdbg.sensors` order); ``LATENT_DIM`` and ``THRESHOLD`` (zero suppression in ADU).
* **sparse** models (``sparse``; ``sparse-beam``, conditioned on each run's beam
  conditions) emit digits directly and are never densified unless a
  caller asks for images. Their module provides ``load(path)`` (a model object whose
  ``generate_events(keys)`` makes one :class:`~pxdbg.digits.PXDDigits` per event key) and
  ``save(model, path, manifest)``; they are fitted to data
  (:mod:`pxdbg.training.sparse`), not built from a configuration.

Both provide ``ARCHITECTURE_VERSION`` (checked against checkpoint manifests). Adding a model
means adding its module here and its name to :data:`MODELS`.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

#: Names of the available models, each the name of a module in this package (``-`` written
#: ``_``); the first is the default of ``pxdbg generate`` and of the generator module.
MODELS = ("sparse", "convnet", "resnet", "ieagan", "sparse-beam")
DEFAULT_MODEL = MODELS[0]
#: The models whose default (demo) checkpoint ships in the embedded store. A conditioned
#: model is useful only with beam conditions from a real conditions database, so it ships
#: none: it is trained (``pxdbg train --model sparse-beam``) and uploaded per campaign.
EMBEDDED_MODELS = ("sparse", "convnet", "resnet", "ieagan")
DENSE, SPARSE = "dense", "sparse"

_REQUIRED = {
    DENSE: ("Model", "generate", "ARCHITECTURE_VERSION", "LATENT_DIM", "THRESHOLD"),
    SPARSE: ("load", "save", "ARCHITECTURE_VERSION"),
}


def available_models() -> tuple[str, ...]:
    return MODELS


def embedded_models() -> tuple[str, ...]:
    """The models with a default checkpoint in the embedded store."""
    return EMBEDDED_MODELS


def get_model(name: str) -> ModuleType:
    """The module implementing model ``name``; TypeError/ValueError for a bad name."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (available: {', '.join(MODELS)})")
    module = import_module(f".{name.replace('-', '_')}", __name__)
    kind = getattr(module, "KIND", DENSE)
    missing = [attr for attr in _REQUIRED.get(kind, ("KIND",)) if not hasattr(module, attr)]
    if missing:  # a developer error: the registry lists a module that is not a model
        raise AttributeError(f"model module {module.__name__} lacks {', '.join(missing)}")
    return module


def model_kind(name: str) -> str:
    """``"dense"`` (emits images) or ``"sparse"`` (emits digits) for model ``name``."""
    return getattr(get_model(name), "KIND", DENSE)


def dense_models() -> tuple[str, ...]:
    """The models that emit images (the GANs)."""
    return tuple(m for m in MODELS if model_kind(m) == DENSE)


def build_model(name: str, **config) -> "torch.nn.Module":
    """A fresh ``Model`` of dense model ``name``; ``config`` goes to its constructor (e.g.
    ``width``). Sparse models are fitted to data instead (``pxdbg train --model sparse``)."""
    if model_kind(name) != DENSE:
        raise ValueError(f"model {name!r} is fitted to a training sample, not built: use pxdbg train")
    return get_model(name).Model(**config)
