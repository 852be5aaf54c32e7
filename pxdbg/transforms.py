"""Between ADC values and the [-1, 1] images the GAN models learn and produce.

Training: pad 3 rows above and below (250 -> 256 rows) and log-scale,
``x = 2 * log(ADU + 1) / log(256) - 1``. Generation inverts it,
``ADU = 256 ** ((x + 1) / 2) - 1``, clamps to [0, 255], crops rows 3..252 and, where the
model asks for it, zero-suppresses below a threshold (7 ADU for the published models).

basf2's generators apply exactly this inversion (``256 ** (0.5 * x + 0.5) - 1``, clamp,
truncation to uint8). Its IEA-GAN model makes its 7 ADU cut in model space, before the
inversion: outputs ``x <= -0.26`` become -1 (ADU 0). -0.26 is 6.78 ADU, so pixels of
6.78..7 ADU survive there and truncate to 6; ``model_cut=-0.26`` reproduces that exactly.
"""

from __future__ import annotations

import math

import torch

from .sensors import N_UCELLS, PADDED_UCELLS, ROW_PADDING

_LOG256 = math.log(256.0)


def adc_to_model(adc: torch.Tensor) -> torch.Tensor:
    """uint8/float ADC images ``(..., 250, 768)`` -> float32 ``(..., 256, 768)`` in [-1, 1]."""
    if adc.shape[-2] != N_UCELLS:
        raise ValueError(f"expected {N_UCELLS} rows, got shape {tuple(adc.shape)}")
    x = torch.log1p(adc.to(torch.float32)) * (2.0 / _LOG256) - 1.0
    # Padding rows are "no signal", i.e. ADU 0 -> -1.
    return torch.nn.functional.pad(x, (0, 0, ROW_PADDING, ROW_PADDING), value=-1.0)


def model_to_adc(x: torch.Tensor, *, threshold: int | None = None,
                 model_cut: float | None = None) -> torch.Tensor:
    """float ``(..., 256, 768)`` model output -> uint8 ADC images ``(..., 250, 768)``.

    ``threshold``: ADC values below it become 0 (zero suppression); None keeps them all.
    ``model_cut``: model-space values ``x <= model_cut`` become ADU 0 before the inversion
    (basf2's IEA-GAN cut, ``model_cut=-0.26``); None applies no such cut.
    """
    if x.shape[-2] != PADDED_UCELLS:
        raise ValueError(f"expected {PADDED_UCELLS} rows, got shape {tuple(x.shape)}")
    x = x[..., ROW_PADDING:ROW_PADDING + N_UCELLS, :]
    if model_cut is not None:
        x = torch.nn.functional.threshold(x, model_cut, -1.0)
    adc = torch.pow(256.0, (x.to(torch.float32) + 1.0) * 0.5) - 1.0
    adc = adc.clamp_(0.0, 255.0)
    if threshold is not None:
        adc = torch.where(adc < threshold, torch.zeros_like(adc), adc)
    # Truncation, like basf2's conversion to uint8.
    return adc.to(torch.uint8)
