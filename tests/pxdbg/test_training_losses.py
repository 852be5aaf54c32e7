"""Loss functions, DiffAugment and EMA of the training package, on inputs with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from pxdbg.training import losses
from pxdbg.training.diffaugment import EMPTY, cutout, diff_augment, translation
from pxdbg.training.ema import EMA


def test_gradient_penalty_of_a_linear_critic_is_known():
    # D(x) = <w, x> has gradient w everywhere: penalty = (||w|| - 1)^2 exactly.
    w = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])  # ||w|| = 5

    def critic(x):
        return (x * w).sum(dim=(1, 2, 3))

    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    gp = losses.gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx(16.0)
    w_unit = w / 5.0
    gp1 = losses.gradient_penalty(lambda x: (x * w_unit).sum(dim=(1, 2, 3)), real, fake)
    assert gp1.item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_is_differentiable_for_the_critic():
    lin = torch.nn.Linear(4, 1)
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    gp = losses.gradient_penalty(lambda x: lin(x.flatten(1)).squeeze(1), real, fake)
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    w = lin.weight.detach()
    expected = 2 * (w.norm() - 1) * w / w.norm()
    torch.testing.assert_close(lin.weight.grad, expected)
    with pytest.raises(ValueError):
        losses.gradient_penalty(lambda x: x.sum(), torch.zeros(2, 1, 2, 2), torch.zeros(3, 1, 2, 2))


def test_wgan_losses():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert losses.wgan_critic_loss(real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert losses.wgan_generator_loss(fake).item() == pytest.approx(0.5)


def test_hinge_values():
    d_real = torch.tensor([2.0, 0.5])
    d_fake = torch.tensor([-2.0, 0.5])
    loss_real, loss_fake = losses.hinge_discriminator_loss(d_real, d_fake)
    assert loss_real.item() == pytest.approx((0.0 + 0.5) / 2)
    assert loss_fake.item() == pytest.approx((0.0 + 1.5) / 2)
    assert losses.hinge_generator_loss(d_fake).item() == pytest.approx(0.75)


def test_kl_of_identical_events_is_zero_and_positive_otherwise():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(40, 16), dim=1)
    assert losses.intra_event_kl_loss(emb.clone().requires_grad_(True), emb).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.nn.functional.normalize(torch.randn(40, 16), dim=1).requires_grad_(True)
    kl = losses.intra_event_kl_loss(other, emb)
    assert kl.item() > 0.0
    kl.backward()
    assert other.grad is not None and other.grad.abs().sum() > 0


def test_kl_matches_its_definition():
    fake = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    real = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    p = torch.softmax(real @ real.t(), dim=1)
    q = torch.softmax(fake @ fake.t(), dim=1)
    expected = (p * (p / q).log()).sum(dim=1).mean()
    assert losses.intra_event_kl_loss(fake, real).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("t", [1.0, 0.5])
def test_2c_loss_of_orthonormal_embeddings_is_known(t):
    # Embeddings = their own proxies, mutually orthogonal: cos(e_i, p_i) = 1, cos(e_i, e_k) = 0.
    n = 8
    e = torch.eye(n)
    labels = torch.arange(n)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (n - 1) * math.exp(0.0)))
    got = losses.conditional_contrastive_loss(e, e, labels, temperature=t)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_2c_loss_collects_positives_of_the_same_class():
    # Two images of class 0 with identical embeddings: the other one counts in the numerator.
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    proxies = e.clone()
    labels = torch.tensor([0, 0, 1])
    got = losses.conditional_contrastive_loss(e, proxies, labels)
    e1 = math.e
    # image 0: num = e + e (image 1), den = e + e + 1 (image 2); image 2: num = e, den = e + 1 + 1
    expected = (2 * -math.log(2 * e1 / (2 * e1 + 1)) - math.log(e1 / (e1 + 2))) / 3
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_uniformity_values():
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert losses.uniformity_loss(same).item() == pytest.approx(0.0)
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert losses.uniformity_loss(antipodal, t=2.0).item() == pytest.approx(-8.0)
    with pytest.raises(ValueError):
        losses.uniformity_loss(torch.ones(1, 2))


def test_orthogonal_penalty_and_its_gradient():
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    assert losses.orthogonal_penalty([q]).item() == pytest.approx(0.0, abs=1e-9)
    w = torch.tensor([[1.0, 1.0], [0.0, 1.0]], requires_grad=True)
    pen = losses.orthogonal_penalty([w])
    assert pen.item() == pytest.approx(1.0)  # off-diagonal of W W^T is 1 twice: 0.5 * 2
    pen.backward()
    off = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(w.grad, 2 * off @ w.detach())  # BigGAN's 2 (W W^T * (1 - I)) W
    conv = torch.randn(4, 2, 3, 3)
    assert losses.orthogonal_penalty([conv]).item() > 0


# ----------------------------------------------------------------------------------------
# DiffAugment


def test_diffaugment_keeps_shape_and_gradients_and_is_seeded():
    x = torch.rand(3, 1, 64, 128, requires_grad=True) * 2 - 1
    out = diff_augment(x, "color,translation,cutout", generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    out.sum().backward()
    again = diff_augment(x, "color,translation,cutout", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, again)
    assert diff_augment(x, "") is x
    with pytest.raises(ValueError):
        diff_augment(x, "flip")


def test_translation_moves_content_and_fills_empty():
    x = torch.full((1, 1, 64, 64), EMPTY)
    x[0, 0, 32, 32] = 1.0
    out = translation(x, generator=torch.Generator().manual_seed(3))
    assert (out == 1.0).sum() <= 1  # the hit moved (or left the image), never duplicated
    assert ((out == EMPTY) | (out == 1.0)).all()  # uncovered pixels are "no hit", not 0


def test_cutout_blanks_a_rectangle_of_half_size():
    x = torch.ones(4, 1, 64, 128)
    out = cutout(x, generator=torch.Generator().manual_seed(0))
    blank = (out == EMPTY).sum(dim=(1, 2, 3))
    assert (blank > 0).all() and (blank <= 32 * 64).all()


# ----------------------------------------------------------------------------------------
# EMA


def test_ema_copies_before_start_and_averages_after():
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = EMA(net, decay=0.5, start=2)
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(step=0)  # before start: copy
    assert ema.model.weight.item() == 3.0
    with torch.no_grad():
        net.weight.fill_(5.0)
    ema.update(step=2)  # from start on: 0.5 * 3 + 0.5 * 5
    assert ema.model.weight.item() == pytest.approx(4.0)
    assert not ema.model.weight.requires_grad
    with pytest.raises(ValueError):
        EMA(net, decay=1.0)
