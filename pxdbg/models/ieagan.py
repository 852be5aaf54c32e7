"""IEA-GAN generator: intra-event aware, sensor-conditional PXD background model.

Hosseini et al., "IEA-GAN: intra-event aware GAN with relational reasoning for the
generation of PXD background" (Baran-phys/IEA-GAN), as shipped in basf2's
``pxd.background_generator.models.ieagan``. A BigGAN-deep generator:

* 40 classes, one per PXD sensor; image i of an event belongs to sensor i;
* a shared class embedding (128) refined by *relational reasoning*: one pre-norm
  transformer encoder layer (2 heads) over the 40 sensor embeddings of an event, so each
  sensor's condition depends on the whole event;
* a hierarchical latent: each image's 128-d latent is concatenated with its refined
  embedding, and that 256-d vector feeds the first linear layer and every class-
  conditional batch norm;
* spectral norm on every convolution and linear layer of the image path;
* a 4 x 12 bottom grown by six stages of two bottleneck residual blocks (the second one
  upsampling) to 256 x 768, channels ``ch * (16, 16, 8, 8, 4, 2) -> ch * (16, 8, 8, 4, 2, 1)``;
* basf2's 7 ADU cut, made in model space at -0.26 (see :mod:`pxdbg.transforms`).

basf2 compatibility (checked numerically against an independent re-derivation of basf2's
forward pass in ``tests/pxdbg/test_basf2_reference.py``):

* weights: parameter and buffer names equal basf2's (BigGAN's ``u0``/``sv0``, ``gain``,
  ``stored_mean``, ``blocks.<i>.0``, ``RR_G.layers.0...``), so its state dicts load with
  ``strict=True``; basf2's parameterless dropout (p=0) at ``linear_net.1`` is an
  ``nn.Identity`` here; other key mapping: only
  :func:`pxdbg.models.loading.adapt_legacy_state_dict`;
* spectral norm in evaluation as in basf2: one power-iteration step from the stored
  ``u0`` per forward, ``u0`` not updated (so ``sv0`` is not used);
* latents: ``torch.randn(40, 128)`` per event, the stream of ``torch.manual_seed(seed)``
  (see :mod:`pxdbg.models.convnet`), labels 0..39;
* relational reasoning: basf2 runs it over the whole batch, which is always one event
  there; pxdbg runs it per event of 40, so batching events gives the same images;
* output: basf2's cut ``x <= -0.26 -> -1``, then the conversion of
  :func:`pxdbg.transforms.model_to_adc`, rows 3..252.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init

from ..sensors import N_SENSORS
from .common import check_latents, images_to_events, model_device, sample_latents
from .layers import ClassConditionalBatchNorm, RelationalReasoning, SNConv2d, SNLinear, StoredBatchNorm

#: Emits images (see pxdbg.models).
KIND = "dense"
ARCHITECTURE_VERSION = 1
LATENT_DIM = 128
#: Nominal zero-suppression threshold in ADU ...
THRESHOLD = 7
#: ... applied as basf2 applies it: model outputs <= -0.26 (6.78 ADU) become ADU 0.
MODEL_CUT = -0.26

_IN_MULT = (16, 16, 8, 8, 4, 2)
_OUT_MULT = (16, 8, 8, 4, 2, 1)
_BOTTOM = (4, 12)


class GBlock(nn.Module):
    """BigGAN-deep bottleneck residual block: 1x1 down to a quarter of the channels, two
    3x3 convolutions, 1x1 up, each after a class-conditional BN and ReLU. The shortcut
    drops surplus channels; both paths are upsampled x2 when ``upsample``."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, upsample: bool,
                 sn_eps: float, bn_eps: float, channel_ratio: int = 4):
        super().__init__()
        self.in_channels, self.out_channels, self.upsample = in_channels, out_channels, upsample
        hidden = in_channels // channel_ratio

        def bn(c):
            return ClassConditionalBatchNorm(c, cond_dim, eps=bn_eps, sn_eps=sn_eps)

        self.conv1 = SNConv2d(in_channels, hidden, kernel_size=1, padding=0, eps=sn_eps)
        self.conv2 = SNConv2d(hidden, hidden, eps=sn_eps)
        self.conv3 = SNConv2d(hidden, hidden, eps=sn_eps)
        self.conv4 = SNConv2d(hidden, out_channels, kernel_size=1, padding=0, eps=sn_eps)
        self.bn1, self.bn2, self.bn3, self.bn4 = bn(in_channels), bn(hidden), bn(hidden), bn(hidden)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x, cond)))
        h = F.relu(self.bn2(h, cond))
        if self.in_channels != self.out_channels:
            x = x[:, : self.out_channels]
        if self.upsample:
            h = F.interpolate(h, scale_factor=2)
            x = F.interpolate(x, scale_factor=2)
        h = self.conv3(F.relu(self.bn3(self.conv2(h), cond)))
        h = self.conv4(F.relu(self.bn4(h, cond)))
        return h + x


class Model(nn.Module):
    """IEA-GAN generator; the defaults are basf2's configuration (``ch=32``, depth 2).

    ``ch`` is the channel multiplier (smaller values give cheap models for tests);
    ``init=None`` skips the orthogonal initialization when weights will be loaded anyway.
    """

    def __init__(self, ch: int = 32, depth: int = 2, dim_z: int = LATENT_DIM, shared_dim: int = 128,
                 n_classes: int = N_SENSORS, n_heads: int = 2, sn_eps: float = 1e-6, bn_eps: float = 1e-5,
                 init: str | None = "ortho"):
        super().__init__()
        # The last stage's bottleneck has 2 * ch // 4 channels: ch >= 2 keeps it non-empty.
        if isinstance(ch, bool) or not isinstance(ch, int) or ch < 2:
            raise ValueError(f"ch must be an int >= 2, got {ch!r}")
        self.ch, self.depth, self.dim_z, self.n_classes = ch, depth, dim_z, n_classes
        #: Constructor arguments, recorded in checkpoint manifests to rebuild this model.
        self.config = {"ch": ch, "depth": depth, "dim_z": dim_z, "shared_dim": shared_dim,
                       "n_classes": n_classes, "n_heads": n_heads, "sn_eps": sn_eps, "bn_eps": bn_eps}
        cond_dim = dim_z + shared_dim
        in_ch = [ch * m for m in _IN_MULT]
        out_ch = [ch * m for m in _OUT_MULT]
        self.shared = nn.Embedding(n_classes, shared_dim)
        self.RR_G = RelationalReasoning(shared_dim, n_heads, dim_feedforward=shared_dim, num_layers=1)
        self.linear = SNLinear(cond_dim, in_ch[0] * _BOTTOM[0] * _BOTTOM[1], eps=sn_eps)
        # blocks[stage][i]: `depth` blocks per stage, the last one upsampling and changing
        # the channel count (the nesting reproduces the original parameter names).
        self.blocks = nn.ModuleList(
            nn.ModuleList([GBlock(c_in, c_in if i < depth - 1 else c_out, cond_dim,
                                  upsample=(i == depth - 1), sn_eps=sn_eps, bn_eps=bn_eps)])
            for c_in, c_out in zip(in_ch, out_ch)
            for i in range(depth)
        )
        self.output_layer = nn.Sequential(
            StoredBatchNorm(out_ch[-1]), nn.ReLU(), SNConv2d(out_ch[-1], 1, eps=sn_eps)
        )
        if init == "ortho":
            self.init_weights()
        elif init is not None:
            raise ValueError(f"init must be 'ortho' or None, got {init!r}")

    def init_weights(self) -> None:
        """Orthogonal initialization of every convolution, linear layer and embedding."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                init.orthogonal_(module.weight)

    def condition(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image conditioning vector ``[refined class embedding, latent]``.

        ``y`` holds class labels (sensor indices). When the batch is a whole number of
        events (a multiple of ``n_classes``), relational reasoning runs over each event's
        ``n_classes`` consecutive images; otherwise over the whole batch as one sequence
        (the original's behaviour for any batch).
        """
        emb = self.shared(y)
        n = emb.shape[0]
        group = self.n_classes if n % self.n_classes == 0 else n
        emb = self.RR_G(emb.view(n // group, group, -1)).reshape(n, -1)
        return torch.cat([emb, z], 1)

    def synthesize(self, cond: torch.Tensor) -> torch.Tensor:
        """``(n, 256)`` conditioning vectors -> ``(n, 1, 256, 768)`` images in [-1, 1]."""
        h = self.linear(cond).view(cond.shape[0], -1, *_BOTTOM)
        for stage in self.blocks:
            for block in stage:
                h = block(h, cond)
        return torch.tanh(self.output_layer(h))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.synthesize(self.condition(z, y))


def sensor_labels(n_events: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Class labels 0..39 repeated for ``n_events`` events."""
    return torch.arange(N_SENSORS, device=device).repeat(n_events)


def generate(model: Model, generator: torch.Generator | None = None, n_events: int = 1, *,
             latents: torch.Tensor | None = None, images_per_forward: int | None = None) -> torch.Tensor:
    """``n_events`` events as a uint8 tensor ``(n_events, 40, 250, 768)`` on CPU.

    One 128-d latent per image; image i of each event is sensor i. The conditioning runs
    per event over all 40 sensors; the image synthesis can then be split into chunks of
    ``images_per_forward`` images.
    """
    device = model_device(model)
    if latents is None:
        latents = sample_latents(generator, n_events, LATENT_DIM, device)
    n_events = check_latents(latents, LATENT_DIM)
    with torch.inference_mode():
        cond = model.condition(latents.to(device), sensor_labels(n_events, device))
    return images_to_events(model.synthesize, cond, images_per_forward=images_per_forward,
                            model_cut=MODEL_CUT)
