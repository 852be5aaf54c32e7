"""Differentiable augmentation (DiffAugment; Zhao et al., "Differentiable Augmentation for
Data-Efficient GAN Training", NeurIPS 2020), as IEA-GAN trains with it.

The same random transformations are applied to real and generated images before the
discriminator sees them, and they are differentiable, so the generator still receives
gradients through them. Policies, as in the paper:

- ``color``: random brightness (add U(-0.5, 0.5)), saturation (a no-op on our
  single-channel images, kept for completeness) and contrast (scale the deviation from the
  image mean by U(0.5, 1.5)), one draw per image;
- ``translation``: shift by up to 1/8 of the image size in each direction;
- ``cutout``: blank a random rectangle of half the image size.

One deliberate difference from the paper's code: the pixels that translation and cutout
uncover are filled with -1, the model-space value of "no hit" (ADU 0), instead of 0, which
here would mean a ~15 ADU hit on every uncovered pixel.
"""

from __future__ import annotations

import torch

#: Model-space value of an empty pixel (ADU 0).
EMPTY = -1.0
DEFAULT_POLICY = ("color", "translation", "cutout")


def _rand(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the generator's device, then moved: torch.randint needs both to agree.
    dev = generator.device if generator is not None else x.device
    return torch.randint(low, high, (n,), generator=generator, device=dev).to(x.device)


def brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return x + (_rand(x.shape[0], x, generator) - 0.5).view(-1, 1, 1, 1)


def saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    factor = (_rand(x.shape[0], x, generator) * 2.0).view(-1, 1, 1, 1)
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * factor + mean


def contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    factor = (_rand(x.shape[0], x, generator) + 0.5).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


def translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None,
                fill: float = EMPTY) -> torch.Tensor:
    """Shift each image by integer offsets up to ``ratio`` of its height/width."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-sy, sy + 1, b, x, generator)
    tx = _randint(-sx, sx + 1, b, x, generator)
    padded = torch.nn.functional.pad(x, (sx, sx, sy, sy), value=fill)
    rows = torch.arange(h, device=x.device)[None, :] + sy - ty[:, None]  # (b, h)
    cols = torch.arange(w, device=x.device)[None, :] + sx - tx[:, None]  # (b, w)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # (b, h, w, c) after advanced indexing over (batch, row, col); back to (b, c, h, w).
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None,
           fill: float = EMPTY) -> torch.Tensor:
    """Blank one rectangle of ``ratio`` times the image size per image (it may be clipped
    at the border)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = _randint(0, h + (1 - ch % 2), b, x, generator)
    ox = _randint(0, w + (1 - cw % 2), b, x, generator)
    rows = torch.arange(h, device=x.device)[None, :] - (oy[:, None] - ch // 2)
    cols = torch.arange(w, device=x.device)[None, :] - (ox[:, None] - cw // 2)
    inside = ((rows >= 0) & (rows < ch))[:, :, None] & ((cols >= 0) & (cols < cw))[:, None, :]
    return torch.where(inside[:, None], torch.full_like(x, fill), x)


def diff_augment(x: torch.Tensor, policy: tuple[str, ...] | str = DEFAULT_POLICY,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the DiffAugment ``policy`` (names from ``color``, ``translation``, ``cutout``,
    in that order) to a ``(B, C, H, W)`` batch. An empty policy returns ``x`` unchanged."""
    if isinstance(policy, str):
        policy = tuple(p for p in policy.split(",") if p)
    unknown = set(policy) - set(DEFAULT_POLICY)
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {sorted(unknown)}; known: {list(DEFAULT_POLICY)}")
    if x.dim() != 4:
        raise ValueError(f"DiffAugment works on (B, C, H, W) batches, got shape {tuple(x.shape)}")
    for name in policy:
        if name == "color":
            x = contrast(saturation(brightness(x, generator), generator), generator)
        elif name == "translation":
            x = translation(x, generator=generator)
        elif name == "cutout":
            x = cutout(x, generator=generator)
    return x
