"""ConvNet generator: basf2's unconditional convolutional PXD background model.

One latent of 96 numbers per sensor image; a linear layer to ``(512, 8, 24)``, then five
stages of 5x5 convolution, batch norm, ReLU and nearest-neighbour x2 upsampling
(512 -> 512 -> 256 -> 128 -> 64 -> 32 channels) up to 256 x 768, a 5x5 convolution to one
channel and tanh. The sensors are not told apart: an event is 40 independent images,
assigned to the sensors in basf2 order.

basf2 compatibility (checked numerically against an independent re-derivation of basf2's
forward pass in ``tests/pxdbg/test_basf2_reference.py``):

* weights: parameter and buffer names and shapes equal basf2's ``Model``, so its state
  dicts load with ``strict=True``; the only key mapping, for old or DataParallel files, is
  :func:`pxdbg.models.loading.adapt_legacy_state_dict` (drop a ``module.`` prefix, add
  missing ``num_batches_tracked``);
* latents: basf2 calls ``torch.manual_seed(seed)`` once and draws ``torch.randn(40, 96)``
  per event on the model's device; pxdbg draws the same stream from a private CPU
  ``torch.Generator`` seeded with the same value (identical on CPU; on a GPU basf2's
  stream would differ, pxdbg's does not depend on the device);
* output: ``256 ** (x / 2 + 1 / 2) - 1``, clamped, truncated to uint8, rows 3..252, no
  threshold (:func:`pxdbg.transforms.model_to_adc`).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import check_latents, images_to_events, model_device, sample_latents

#: Bumped whenever a change makes old checkpoints unusable (names, shapes, semantics).
#: Emits images (see pxdbg.models).
KIND = "dense"
ARCHITECTURE_VERSION = 1
LATENT_DIM = 96
#: No zero suppression: basf2 applies none for this model.
THRESHOLD = None

_BASE_CHANNELS = (512, 512, 256, 128, 64, 32)
_BOTTOM = (8, 24)


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class Model(nn.Module):
    """ConvNet generator. ``width`` scales every channel count (1.0 = basf2's model; smaller
    values give cheap models for tests and experiments, not compatible with basf2 weights)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        self.width = width
        #: Constructor arguments, recorded in checkpoint manifests to rebuild this model.
        self.config = {"width": float(width)}
        ch = [_scaled(c, width) for c in _BASE_CHANNELS]
        self.fc = nn.Linear(LATENT_DIM, ch[0] * _BOTTOM[0] * _BOTTOM[1])
        layers: list[nn.Module] = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(c_in, c_out, 5, 1, 2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.Upsample(scale_factor=2, mode="nearest")]
        layers.append(nn.Conv2d(ch[-1], 1, 5, 1, 2))
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, 96)`` latents -> ``(n, 1, 256, 768)`` images in [-1, 1]."""
        h = self.fc(z).view(z.shape[0], -1, *_BOTTOM)
        return torch.tanh(self.features(h))


def generate(model: Model, generator: torch.Generator | None = None, n_events: int = 1, *,
             latents: torch.Tensor | None = None, images_per_forward: int | None = None) -> torch.Tensor:
    """``n_events`` events as a uint8 tensor ``(n_events, 40, 250, 768)`` on CPU.

    ``latents`` (``(n_events * 40, 96)``) replaces sampling from ``generator``;
    ``images_per_forward`` bounds the images per forward pass (memory), None = all.
    """
    device = model_device(model)
    if latents is None:
        latents = sample_latents(generator, n_events, LATENT_DIM, device)
    check_latents(latents, LATENT_DIM)
    return images_to_events(model, latents.to(device), images_per_forward=images_per_forward,
                            threshold=THRESHOLD)
