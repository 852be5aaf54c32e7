"""Small, cheap generator models for tests that are not about the architecture.

An untrained model with fresh batch-norm statistics gives nearly constant images; these
get narrow running variances (so the latents matter) and a negative output bias (so most
pixels stay empty, like real PXD background at a few percent occupancy).
"""

import torch

from pxdbg.models import get_model


def tiny_convnet(seed: int, *, width: float = 1 / 32, var: float = 0.05, bias: float = -2.5):
    torch.manual_seed(seed)
    model = get_model("convnet").Model(width=width)
    g = torch.Generator().manual_seed(seed)
    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) * var + var / 2)
    with torch.no_grad():
        model.features[-1].bias.fill_(bias)
    return model.eval()
