"""Loss functions of the two training objectives.

WGAN-GP (convnet, resnet): Gulrajani et al., "Improved Training of Wasserstein GANs" (2017).
IEA-GAN (ieagan): Hashemi et al., "Ultra-high-granularity detector simulation with
intra-event aware generative adversarial network and self-supervised relational reasoning"
(Nature Communications 2024): hinge loss, the conditional contrastive "2C" loss of
ContraGAN (Kang & Park 2020), the intra-event aware (IEA) KL loss, a uniformity loss on
the discriminator's embedding hypersphere (Wang & Isola 2020), and BigGAN's orthogonal
regularisation of the generator weights.

Every function returns a scalar tensor that autograd can differentiate.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------
# WGAN-GP


def wgan_critic_loss(critic_real: torch.Tensor, critic_fake: torch.Tensor) -> torch.Tensor:
    """The critic minimises E[D(fake)] - E[D(real)] (the negative Wasserstein estimate)."""
    return critic_fake.mean() - critic_real.mean()


def wgan_generator_loss(critic_fake: torch.Tensor) -> torch.Tensor:
    """The generator minimises -E[D(fake)]."""
    return -critic_fake.mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``E[(||grad_x D(x_hat)||_2 - 1)^2]`` on random points ``x_hat`` between real and fake.

    One interpolation weight per sample. ``fake`` is detached: the penalty trains only the
    critic. The graph is kept (``create_graph``) so the penalty itself can be differentiated.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake batches differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    alpha_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = torch.rand(alpha_shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(outputs=out.sum(), inputs=x_hat, create_graph=True)
    norms = grad.reshape(grad.shape[0], -1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


# ----------------------------------------------------------------------------------------
# Hinge loss (BigGAN, IEA-GAN)


def hinge_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[relu(1 - D(real))], E[relu(1 + D(fake))])``; the discriminator minimises their sum."""
    return F.relu(1.0 - d_real).mean(), F.relu(1.0 + d_fake).mean()


def hinge_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """The generator minimises -E[D(fake)]."""
    return -d_fake.mean()


# ----------------------------------------------------------------------------------------
# Conditional contrastive (2C) loss


def conditional_contrastive_loss(
    embeddings: torch.Tensor,
    proxies: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    margin: float = 0.0,
) -> torch.Tensor:
    """ContraGAN's 2C loss, as IEA-GAN uses it.

    ``embeddings`` ``(n, d)``: the discriminator's image embeddings; ``proxies`` ``(n, d)``:
    the class embedding of each image's own label; ``labels`` ``(n,)``. For image i,

        numerator   = exp(s(e_i, p_i)) + sum_{k != i, y_k = y_i} exp(s(e_i, e_k))
        denominator = exp(s(e_i, p_i)) + sum_{k != i}            exp(s(e_i, e_k))
        loss_i      = -log(numerator / denominator)

    with ``s(a, b) = (cos(a, b) - margin) / temperature``; the loss is the mean over i. With
    one IEA-GAN event (each of the 40 sensors once) no other image shares a label, so the
    numerator is the proxy term alone.
    """
    n = embeddings.shape[0]
    if proxies.shape != embeddings.shape or labels.shape != (n,):
        raise ValueError("embeddings, proxies and labels must describe the same n images")
    e = F.normalize(embeddings, dim=1)
    p = F.normalize(proxies, dim=1)
    inst = (e @ e.t() - margin) / temperature  # (n, n)
    to_proxy = ((e * p).sum(dim=1) - margin) / temperature  # (n,)
    off_diag = ~torch.eye(n, dtype=torch.bool, device=e.device)
    same_class = (labels[:, None] == labels[None, :]) & off_diag
    # log-sum-exp for numerical safety at small temperatures.
    neg_inf = torch.finfo(inst.dtype).min
    num_terms = torch.cat([to_proxy[:, None], inst.masked_fill(~same_class, neg_inf)], dim=1)
    den_terms = torch.cat([to_proxy[:, None], inst.masked_fill(~off_diag, neg_inf)], dim=1)
    return (torch.logsumexp(den_terms, dim=1) - torch.logsumexp(num_terms, dim=1)).mean()


# ----------------------------------------------------------------------------------------
# Intra-event aware (IEA) loss


def relational_attention(embeddings: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax of the embeddings' Gram matrix: how each sensor image of an event
    "attends" to the others. ``(..., n, d) -> (..., n, n)``."""
    return torch.softmax(embeddings @ embeddings.transpose(-2, -1), dim=-1)


def intra_event_kl_loss(fake_embeddings: torch.Tensor, real_embeddings: torch.Tensor) -> torch.Tensor:
    """IEA loss: ``KL(A_real || A_fake)`` between the relational attention maps of a real
    and a generated event, averaged over the rows (the sensors).

    The real side is a fixed target (no gradient flows into it): the generator learns to
    reproduce the inter-sensor relations of real events. Identical inputs give 0.
    """
    with torch.no_grad():
        target = relational_attention(real_embeddings)
    log_pred = torch.log_softmax(fake_embeddings @ fake_embeddings.transpose(-2, -1), dim=-1)
    kl_per_row = (torch.xlogy(target, target) - target * log_pred).sum(dim=-1)
    return kl_per_row.mean()


# ----------------------------------------------------------------------------------------
# Uniformity and orthogonal regularisation


def uniformity_loss(embeddings: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity, ``log E_{i<j}[exp(-t ||x_i - x_j||^2)]``: lower when the
    (normalised) embeddings spread over the hypersphere."""
    if embeddings.shape[0] < 2:
        raise ValueError("uniformity needs at least two embeddings")
    return torch.pdist(embeddings, p=2).pow(2).mul(-t).exp().mean().log()


def orthogonal_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """BigGAN's orthogonal regularisation, ``sum_W 0.5 * ||W W^T * (1 - I)||_F^2`` over the
    given weight matrices (conv kernels flattened to ``(out, in*k*k)``).

    It pushes the filters of each layer towards mutual orthogonality without constraining
    their norms. Its gradient is BigGAN's ``2 (W W^T * (1 - I)) W``.
    """
    total = None
    for w in weights:
        m = w.reshape(w.shape[0], -1)
        gram = m @ m.t()
        off = gram * (1.0 - torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype))
        term = 0.5 * off.pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("orthogonal_penalty needs at least one weight matrix")
    return total
