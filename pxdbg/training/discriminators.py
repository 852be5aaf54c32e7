"""The discriminators the generators are trained against. They are needed only for
training and are never shipped in a checkpoint.

- :class:`WGANCritic` for convnet and resnet (WGAN-GP): a plain strided-conv critic with
  LeakyReLU and no normalisation layer, because the gradient penalty is defined per
  sample and batch norm would couple the samples of a batch.
- :class:`IEAGANDiscriminator` for ieagan: BigGAN-deep-style bottleneck residual blocks
  with spectral norm, global sum pooling, an adversarial output with class projection over
  the 40 sensor classes, and an embedding head (relational reasoning over the images of an
  event, then a projection onto the hypersphere) with class proxies for the 2C loss.

Both take model-space images ``(B, 1, 256, 768)`` in [-1, 1]; any height and width
divisible by 64 work, which keeps the shapes honest in tests.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..sensors import N_SENSORS

_DOWNSAMPLINGS = 6  # 256 x 768 -> 4 x 12


def _check_image(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"discriminators take (B, 1, H, W) images, got shape {tuple(x.shape)}")
    factor = 2 ** _DOWNSAMPLINGS
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"image height and width must be multiples of {factor}, got {tuple(x.shape[2:])}")


class WGANCritic(nn.Module):
    """WGAN-GP critic: six 4x4 stride-2 convolutions (256x768 -> 4x12) with channel
    pattern ``c, 2c, 4c, 8c, 8c, 16c`` and LeakyReLU(0.2), then a linear layer over the
    flattened 4x12 map (it keeps the position along the sensor, where occupancy differs).

    ``channels`` is the base width ``c``; 32 for real training, 2 in tests.
    """

    def __init__(self, channels: int = 32, image_size: tuple[int, int] = (256, 768)):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels!r}")
        widths = [channels * m for m in (1, 2, 4, 8, 8, 16)]
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        h, w = image_size[0] >> _DOWNSAMPLINGS, image_size[1] >> _DOWNSAMPLINGS
        self.head = nn.Linear(c_in * h * w, 1)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> critic values ``(B,)``."""
        _check_image(x)
        return self.head(self.features(x).flatten(1)).squeeze(1)


def _sn(module: nn.Module) -> nn.Module:
    # eps as in the IEA-GAN configuration (SN_eps = 1e-6).
    return spectral_norm(module, eps=1e-6)


class _DBlock(nn.Module):
    """BigGAN-deep discriminator block: 1x1 bottleneck (out/4 channels), two 3x3 convs,
    optional 2x2 average-pool downsampling, 1x1 expansion, and a shortcut that keeps the
    input channels and appends learned ones when the width grows."""

    def __init__(self, c_in: int, c_out: int, *, downsample: bool, preactivation: bool):
        super().__init__()
        hidden = max(c_out // 4, 1)
        self.conv1 = _sn(nn.Conv2d(c_in, hidden, 1))
        self.conv2 = _sn(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.conv3 = _sn(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.conv4 = _sn(nn.Conv2d(hidden, c_out, 1))
        self.conv_sc = _sn(nn.Conv2d(c_in, c_out - c_in, 1)) if c_out > c_in else None
        if c_out < c_in:
            raise ValueError("a discriminator block cannot reduce the width")
        self.downsample = nn.AvgPool2d(2) if downsample else None
        self.preactivation = preactivation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x) if self.preactivation else x
        h = self.conv1(h)
        h = self.conv2(torch.relu(h))
        h = self.conv3(torch.relu(h))
        h = torch.relu(h)
        if self.downsample is not None:
            h = self.downsample(h)
        h = self.conv4(h)
        sc = self.downsample(x) if self.downsample is not None else x
        if self.conv_sc is not None:
            sc = torch.cat([sc, self.conv_sc(sc)], dim=1)
        return h + sc


class IEAGANDiscriminator(nn.Module):
    """IEA-GAN discriminator (see the module docstring).

    ``channels``: base width (IEA-GAN: 32); ``depth``: blocks per resolution (2);
    ``embed_dim``: hypersphere dimension of the 2C embeddings (1024); ``projection``: add
    the class-projection term ``<embed(y), h>`` to the adversarial output (the public
    IEA-GAN "Contra" configuration conditions only through the 2C loss; with projection the
    hinge loss is class-conditional too).

    ``forward(x, y)`` returns ``(adversarial (B,), embeddings (B, embed_dim), proxies
    (B, embed_dim))``, embeddings and proxies L2-normalised. The relational-reasoning layer
    mixes the images of the batch, which must therefore be one event (or a group of
    images that belong together).
    """

    def __init__(self, channels: int = 32, *, depth: int = 2, embed_dim: int = 1024,
                 n_classes: int = N_SENSORS, projection: bool = True, n_heads: int = 4):
        super().__init__()
        if channels < 1 or depth < 1 or embed_dim < 2:
            raise ValueError("channels and depth must be >= 1 and embed_dim >= 2")
        mult_in = (1, 2, 4, 8, 8, 16)
        mult_out = (2, 4, 8, 8, 16, 16)
        self.stem = _sn(nn.Conv2d(1, channels, 3, padding=1))
        blocks = []
        for stage, (mi, mo) in enumerate(zip(mult_in, mult_out)):
            for d in range(depth):
                blocks.append(_DBlock(channels * (mi if d == 0 else mo), channels * mo,
                                      downsample=(d == 0), preactivation=(stage > 0 or d > 0)))
        self.blocks = nn.Sequential(*blocks)
        feat = channels * mult_out[-1]
        self.adversarial = _sn(nn.Linear(feat, 1))
        self.projection = _sn(nn.Embedding(n_classes, feat)) if projection else None
        # Relational reasoning over the images of an event (one transformer encoder layer).
        heads = n_heads if feat % n_heads == 0 else 1
        self.relational = nn.TransformerEncoderLayer(feat, heads, dim_feedforward=512, dropout=0.0,
                                                     batch_first=True)
        self.to_hypersphere = _sn(nn.Linear(feat, embed_dim))
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.proxies = _sn(nn.Embedding(n_classes, embed_dim))
        self.n_classes = n_classes
        self.channels = channels
        self.embed_dim = embed_dim
        self._init_weights()

    def _init_weights(self) -> None:
        # Orthogonal initialisation, as BigGAN and IEA-GAN ("D_init": "ortho").
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                weight = module.parametrizations.weight.original if hasattr(module, "parametrizations") \
                    else module.weight
                with torch.no_grad():
                    nn.init.orthogonal_(weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        h = self.blocks(self.stem(x))
        return torch.relu(h).sum(dim=(2, 3))  # global sum pooling, as SN-GAN/BigGAN

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if y.shape != (x.shape[0],):
            raise ValueError(f"need one class label per image: {x.shape[0]} images, labels {tuple(y.shape)}")
        h = self.features(x)
        out = self.adversarial(h).squeeze(1)
        if self.projection is not None:
            out = out + (self.projection(y) * h).sum(dim=1)
        rel = self.relational(h.unsqueeze(0)).squeeze(0)
        emb = torch.nn.functional.normalize(self.embed_norm(self.to_hypersphere(rel)), dim=1)
        prx = torch.nn.functional.normalize(self.proxies(y), dim=1)
        return out, emb, prx
