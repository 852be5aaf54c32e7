"""ResNet generator: basf2's unconditional residual PXD background model.

One latent of 96 numbers per sensor image; a linear layer to ``(256, 8, 24)``, five
pre-activation residual blocks that each double height and width
(256 -> 256 -> 128 -> 64 -> 32 -> 16 channels, 1x1 convolution on the shortcut), then
batch norm, ReLU, a 3x3 convolution to one channel and tanh. basf2 compatibility (state
dict keys, latent stream, output conversion) as for :mod:`pxdbg.models.convnet`, checked
in ``tests/pxdbg/test_basf2_reference.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_latents, images_to_events, model_device, sample_latents

#: Emits images (see pxdbg.models).
KIND = "dense"
ARCHITECTURE_VERSION = 1
LATENT_DIM = 96
THRESHOLD = None

_BASE_CHANNELS = (256, 256, 128, 64, 32, 16)
_BOTTOM = (8, 24)


class ResidualBlock(nn.Module):
    """BN-ReLU-(upsample)-conv3x3-BN-ReLU-conv3x3, plus a (upsampled) 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(in_channels, out_channels, 1, 1, 0) if (
            upsample or in_channels != out_channels) else None
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(x))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        if self.conv is not None:
            x = self.conv(x)
        return h + x


class Model(nn.Module):
    """ResNet generator. ``width`` scales every channel count (1.0 = basf2's model)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        self.width = width
        #: Constructor arguments, recorded in checkpoint manifests to rebuild this model.
        self.config = {"width": float(width)}
        ch = [max(1, int(round(c * width))) for c in _BASE_CHANNELS]
        self.fc = nn.Linear(LATENT_DIM, ch[0] * _BOTTOM[0] * _BOTTOM[1])
        self.blocks = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(ch[:-1], ch[1:]))
        self.norm = nn.BatchNorm2d(ch[-1])
        self.conv = nn.Conv2d(ch[-1], 1, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, 96)`` latents -> ``(n, 1, 256, 768)`` images in [-1, 1]."""
        h = self.fc(z).view(z.shape[0], -1, *_BOTTOM)
        for block in self.blocks:
            h = block(h)
        return torch.tanh(self.conv(F.relu(self.norm(h))))


def generate(model: Model, generator: torch.Generator | None = None, n_events: int = 1, *,
             latents: torch.Tensor | None = None, images_per_forward: int | None = None) -> torch.Tensor:
    """``n_events`` events as a uint8 tensor ``(n_events, 40, 250, 768)`` on CPU
    (see :func:`pxdbg.models.convnet.generate` for the arguments)."""
    device = model_device(model)
    if latents is None:
        latents = sample_latents(generator, n_events, LATENT_DIM, device)
    check_latents(latents, LATENT_DIM)
    return images_to_events(model, latents.to(device), images_per_forward=images_per_forward,
                            threshold=THRESHOLD)
