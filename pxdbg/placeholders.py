"""Untrained placeholder checkpoints: a model's own fresh initialisation, saved with a
manifest that says so, for tests, demos and the embedded store until trained weights
replace them (``pxdbg checkpoint init``, ``scripts/build_embedded.py --untrained``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .models import get_model
from .models.loading import save_generator
from .sensors import N_UCELLS, PADDED_UCELLS, ROW_PADDING
from .transforms import model_to_adc

#: Manifest note of placeholder checkpoints (``pxdbg checkpoint init``).
UNTRAINED_NOTE = ("UNTRAINED placeholder: freshly initialised weights (seed {seed}), output bias set for "
                  "{occupancy:.1%} pixel occupancy; not a physics model")


def untrained_checkpoint(model: str, path: str | Path, *, seed: int = 0, occupancy: float = 0.01,
                         config: dict[str, Any] | None = None, **manifest_fields: Any) -> Path:
    """Write a freshly initialised ``model`` as a checkpoint marked untrained.

    An untrained generator fires nearly every pixel; a placeholder that is to exercise
    the production chain (digits, files, overlay) should look like background in size.
    So the bias of the final (one-channel) layer is shifted until about ``occupancy`` of
    the pixels of one sample event pass the model's zero suppression. Everything else is
    the model's own initialisation. ``config`` goes to the model's constructor (e.g.
    ``{"width": 1/16}`` for a narrow convnet or resnet, ``{"ch": 4}`` for ieagan: cheap
    models for tests and demos); the manifest records it, and a config that does not fit
    the model is a ValueError. The manifest says all this (``training_steps: 0`` and a
    note in ``description``).
    """
    module = get_model(model)
    torch.manual_seed(seed)
    try:
        network = module.Model(**(config or {}))
    except (TypeError, ValueError) as error:
        raise ValueError(f"model config {config!r} does not fit {model}: {error}") from None
    network.eval()
    final = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1][-1]
    captured: list[torch.Tensor] = []
    hook = final.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    with torch.inference_mode():
        z = torch.randn(40, module.LATENT_DIM, generator=torch.Generator().manual_seed(seed))
        # One whole event: untrained images differ wildly in offset from one to the next.
        if hasattr(network, "condition"):  # class-conditional: image i is sensor i
            network.synthesize(network.condition(z, torch.arange(40)))
        else:
            network(z)
    hook.remove()
    pre = captured[0][:, 0]
    cut = {"threshold": module.THRESHOLD, "model_cut": getattr(module, "MODEL_CUT", None)}
    # A pixel fires when its output tanh(pre + shift) passes the model-space value where
    # the ADC conversion (and cuts) first give a nonzero count: find that value once on a
    # tiny tensor, then the shift is a quantile of the pre-activations of the cropped image.
    low, high = -1.0, 1.0
    for _ in range(50):
        middle = (low + high) / 2
        probe = torch.full((PADDED_UCELLS, 1), middle)
        low, high = (low, middle) if model_to_adc(probe, **cut)[0, 0] > 0 else (middle, high)
    visible = pre[:, ROW_PADDING:ROW_PADDING + N_UCELLS].flatten()
    keep = max(1, min(visible.numel(), round(occupancy * visible.numel())))
    quantile = float(torch.kthvalue(visible, visible.numel() - keep + 1).values)
    shift = math.atanh(min(high, 1 - 1e-6)) - quantile
    with torch.no_grad():
        final.bias.add_(shift)
    manifest_fields.setdefault("training_steps", 0)
    manifest_fields.setdefault("demo", True)
    manifest_fields.setdefault("description", UNTRAINED_NOTE.format(seed=seed, occupancy=occupancy))
    return save_generator(path, model, network, **manifest_fields)
