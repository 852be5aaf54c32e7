"""Latent sampling and output conversion shared by the models' ``generate`` functions."""

from __future__ import annotations

import torch

from ..sensors import N_SENSORS, N_UCELLS, N_VCELLS
from ..transforms import model_to_adc


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_device_usable(device: torch.device) -> None:
    """ValueError when ``device`` cannot run here, before any model or file is made: torch
    only fails on first use, deep inside, with an AssertionError."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested, but this torch has no usable CUDA device "
                         f"(torch {torch.__version__}); use cpu or install a CUDA build")


def sample_latents(generator: torch.Generator | None, n_events: int, latent_dim: int,
                   device: torch.device) -> torch.Tensor:
    """``(n_events * 40, latent_dim)`` standard-normal latents, event after event.

    Drawn from ``generator`` on the generator's own device and moved to ``device``: a CPU
    generator thus gives the same events on CPU and GPU. Drawing all events at once
    consumes the random stream exactly as drawing them one by one does (checked in the
    tests), so events do not depend on the batch size.
    """
    if isinstance(n_events, bool) or not isinstance(n_events, int) or n_events < 0:
        raise ValueError(f"n_events must be a non-negative int, got {n_events!r}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(n_events * N_SENSORS, latent_dim, generator=generator, device=gen_device)
    return z.to(device)


def check_latents(latents: torch.Tensor, latent_dim: int) -> int:
    """Number of events in a latent batch, or ValueError for a malformed one."""
    if latents.dim() != 2 or latents.shape[1] != latent_dim or latents.shape[0] % N_SENSORS:
        raise ValueError(
            f"latents must have shape (n_events * {N_SENSORS}, {latent_dim}), got {tuple(latents.shape)}"
        )
    return latents.shape[0] // N_SENSORS


def images_to_events(forward, inputs: torch.Tensor, *, images_per_forward: int | None = None,
                     threshold: int | None = None, model_cut: float | None = None) -> torch.Tensor:
    """Run ``forward`` over ``inputs`` (one row per sensor image, events back to back) in
    chunks of at most ``images_per_forward`` rows, and convert the ``(k, 1, 256, 768)``
    outputs to uint8 events ``(n_events, 40, 250, 768)`` on CPU.

    Converting each chunk right away keeps only uint8 images, not float ones, around.
    """
    n_images = inputs.shape[0]
    step = n_images if not images_per_forward else max(1, int(images_per_forward))
    out = torch.empty((n_images, N_UCELLS, N_VCELLS), dtype=torch.uint8)
    with torch.inference_mode():
        for start in range(0, n_images, step):
            stop = min(start + step, n_images)
            images = forward(inputs[start:stop])
            out[start:stop] = model_to_adc(images[:, 0].to("cpu"), threshold=threshold, model_cut=model_cut)
    return out.view(-1, N_SENSORS, N_UCELLS, N_VCELLS)
