"""Exponential moving average of generator weights (BigGAN/IEA-GAN style).

Before ``start`` the average simply copies the live weights (the early weights are too far
from the final ones to be worth averaging); from ``start`` on,
``ema = decay * ema + (1 - decay) * live``. Buffers (batch-norm running statistics,
spectral-norm singular vectors) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch


class EMA:
    """Keeps ``self.model``, an averaged copy of ``source``."""

    def __init__(self, source: torch.nn.Module, *, decay: float = 0.9999, start: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        if start < 0:
            raise ValueError(f"EMA start step must be >= 0, got {start!r}")
        self.source = source
        self.decay = float(decay)
        self.start = int(start)
        self.model = copy.deepcopy(source)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Call after the generator's optimizer step number ``step`` (0-based)."""
        decay = self.decay if step >= self.start else 0.0
        src = dict(self.source.named_parameters())
        for name, p in self.model.named_parameters():
            p.lerp_(src[name].detach(), 1.0 - decay)
        src_buffers = dict(self.source.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(src_buffers[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
