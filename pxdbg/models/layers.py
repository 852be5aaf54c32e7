"""Building blocks shared by the generator models.

The spectrally normalized layers, the batch norms and the transformer encoder keep the
parameter and buffer names of the BigGAN-deep code that basf2's IEA-GAN model was trained
with (``weight``, ``u0``, ``sv0``, ``gain``, ``stored_mean``, ...), so its state dicts load
with ``strict=True`` and no key mapping.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SpectralNorm:
    """Mixin: divide ``self.weight`` by an estimate of its largest singular value.

    One power-iteration step per forward pass from the stored left singular vector ``u0``
    (updated only in training), as in BigGAN. ``sv0`` records the last estimate for
    logging. The weight is viewed as ``(out_features, -1)``.
    """

    def _init_spectral_norm(self, num_outputs: int, eps: float) -> None:
        self.sn_eps = eps
        self.register_buffer("u0", torch.randn(1, num_outputs))
        self.register_buffer("sv0", torch.ones(1))

    def normalized_weight(self) -> torch.Tensor:
        w = self.weight.reshape(self.weight.size(0), -1)  # reshape: works for channels_last too
        with torch.no_grad():
            v = F.normalize(torch.matmul(self.u0, w), eps=self.sn_eps)
            u = F.normalize(torch.matmul(v, w.t()), eps=self.sn_eps)
            if self.training:
                self.u0[:] = u
        # The gradient flows through sigma (as in BigGAN), but not through u and v.
        sigma = torch.squeeze(torch.matmul(torch.matmul(v, w.t()), u.t()))
        if self.training:
            with torch.no_grad():
                self.sv0[:] = sigma
        return self.weight / sigma


class SNConv2d(nn.Conv2d, SpectralNorm):
    """2-d convolution with a spectrally normalized kernel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 bias: bool = True, eps: float = 1e-6):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self._init_spectral_norm(out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, self.stride, self.padding)


class SNLinear(nn.Linear, SpectralNorm):
    """Linear layer with a spectrally normalized weight."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, eps: float = 1e-6):
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._init_spectral_norm(out_features, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class StoredBatchNorm(nn.Module):
    """Batch norm with an affine ``gain``/``bias`` and running statistics named
    ``stored_mean``/``stored_var`` (BigGAN's non-conditional ``bn``)."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias,
                            self.training, self.momentum, self.eps)


class ClassConditionalBatchNorm(nn.Module):
    """Batch norm whose per-channel gain and bias are linear functions of a conditioning
    vector (class embedding and latent): ``bn(x) * (1 + gain(c)) + bias(c)``."""

    def __init__(self, channels: int, cond_dim: int, eps: float = 1e-5, momentum: float = 0.1,
                 sn_eps: float = 1e-6):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gain = SNLinear(cond_dim, channels, bias=False, eps=sn_eps)
        self.bias = SNLinear(cond_dim, channels, bias=False, eps=sn_eps)
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = (1 + self.gain(cond)).view(cond.size(0), -1, 1, 1)
        bias = self.bias(cond).view(cond.size(0), -1, 1, 1)
        out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None,
                           self.training, self.momentum, self.eps)
        return out * gain + bias


class SelfAttention(nn.Module):
    """Multi-head self-attention over a sequence, with one fused q/k/v projection whose
    output is laid out per head as (q, k, v)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dimension {dim} is not a multiple of {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        qkv = self.qkv_proj(x).reshape(batch, seq, self.num_heads, 3 * self.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.chunk(3, dim=-1)
        weights = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim), dim=-1)
        out = torch.matmul(weights, v).permute(0, 2, 1, 3).reshape(batch, seq, dim)
        return self.o_proj(out)


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer (attention, then a two-layer MLP)."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads)
        # Index 1 held a dropout (p=0) in the original; an Identity keeps indices 0 and 3.
        self.linear_net = nn.Sequential(
            nn.Linear(dim, dim_feedforward), nn.Identity(), nn.ReLU(), nn.Linear(dim_feedforward, dim)
        )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        return x + self.linear_net(self.norm2(x))


class RelationalReasoning(nn.Module):
    """Transformer encoder over the sensor embeddings of one event: each sensor's
    embedding is refined by attending to the other 39 (IEA-GAN's relational reasoning)."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, num_layers: int = 1):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads, dim_feedforward) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)
