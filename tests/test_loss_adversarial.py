"""GAN losses against hand-computed values, the adaptive weight against autograd, the discriminator schedule."""

import math

import numpy as np
import pytest
import torch

from radiodiff_vae.losses.adversarial import (
    ADAPTIVE_WEIGHT_MAX,
    adaptive_generator_weight,
    check_global_step,
    discriminator_factor,
    discriminator_gan_loss,
    generator_gan_loss,
    hinge_discriminator_loss,
    vanilla_discriminator_loss,
)

LOG3 = math.log(3.0)


def test_hinge_discriminator_loss_by_hand():
    logits_real = torch.tensor([[2.0, 0.5], [-1.0, 0.0]], requires_grad=True)
    logits_fake = torch.tensor([[-2.0, 0.5], [1.0, -0.25]])
    # relu(1 - real) = [0, 0.5, 2, 1] -> 0.875; relu(1 + fake) = [0, 1.5, 2, 0.75] -> 1.0625
    loss = hinge_discriminator_loss(logits_real, logits_fake)
    assert loss.item() == pytest.approx(0.875 + 1.0625)
    assert discriminator_gan_loss(logits_real, logits_fake, "hinge").item() == pytest.approx(1.9375)
    loss.backward()
    # Only real logits inside the margin (< 1) get a gradient, -1/N each.
    torch.testing.assert_close(logits_real.grad, torch.tensor([[0.0, -0.25], [-0.25, -0.25]]))


def test_vanilla_discriminator_loss_by_hand():
    logits_real = torch.tensor([0.0, LOG3])
    logits_fake = torch.tensor([0.0, LOG3])
    # softplus(-0) = ln 2, softplus(-ln 3) = ln(4/3); softplus(0) = ln 2, softplus(ln 3) = ln 4
    expected = (math.log(2) + math.log(4 / 3)) / 2 + (math.log(2) + math.log(4)) / 2
    assert vanilla_discriminator_loss(logits_real, logits_fake).item() == pytest.approx(expected)
    assert discriminator_gan_loss(logits_real, logits_fake, "vanilla").item() == pytest.approx(expected)


def test_generator_losses_by_hand():
    logits_fake = torch.tensor([[-2.0, 0.5], [1.0, -0.25]])
    assert generator_gan_loss(logits_fake, "hinge").item() == pytest.approx(0.1875)  # -mean
    logits_fake = torch.tensor([0.0, LOG3])
    assert generator_gan_loss(logits_fake, "vanilla").item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)


def test_unknown_gan_loss_is_refused():
    with pytest.raises(ValueError, match=r"Unknown GAN loss 'wgan'.*\('hinge', 'vanilla'\)"):
        generator_gan_loss(torch.zeros(2), "wgan")


def _toy_graph(g_scale: float = 1.0):
    torch.manual_seed(0)
    last_layer = torch.nn.Parameter(torch.randn(4, 3))
    hidden = torch.nn.Parameter(torch.randn(3))
    output = last_layer @ hidden  # (4,), the "reconstructions"
    nll = (output**2).sum() + output.abs().sum()
    g_loss = -g_scale * torch.tanh(output).mean()
    nll_grad, g_grad = (torch.autograd.grad(value, output, retain_graph=True)[0] for value in (nll, g_loss))
    return last_layer, hidden, output, nll, g_loss, nll_grad, g_grad


def test_adaptive_weight_equals_a_direct_autograd_computation():
    last_layer, hidden, output, nll, g_loss, nll_grad, g_grad = _toy_graph()
    weight = adaptive_generator_weight(output, nll_grad, g_grad, last_layer, disc_weight=0.5)
    assert not weight.requires_grad
    assert last_layer.grad is None and hidden.grad is None  # no .grad written

    # Direct: backward each loss separately into .grad and compare the norms.
    nll.backward(retain_graph=True)
    nll_grad = last_layer.grad.clone()
    last_layer.grad = None
    g_loss.backward(retain_graph=True)  # the graph survived adaptive_generator_weight
    g_grad = last_layer.grad.clone()
    expected = nll_grad.norm() / (g_grad.norm() + 1e-4) * 0.5
    assert weight.item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0 < weight.item() < ADAPTIVE_WEIGHT_MAX


def test_adaptive_weight_is_clamped_to_1e4():
    last_layer, _, output, _, _, nll_grad, g_grad = _toy_graph(g_scale=1e-12)
    weight = adaptive_generator_weight(output, nll_grad, g_grad, last_layer, disc_weight=0.5)
    assert weight.item() == pytest.approx(0.5e4)
    last_layer, _, output, _, _, nll_grad, g_grad = _toy_graph()
    assert adaptive_generator_weight(output, 0.0 * nll_grad, g_grad, last_layer).item() == 0.0


def test_adaptive_weight_refuses_a_layer_outside_the_graph():
    _, _, output, _, _, nll_grad, g_grad = _toy_graph()
    with pytest.raises(ValueError, match="do not depend on last_layer"):
        adaptive_generator_weight(output, nll_grad, g_grad, torch.nn.Parameter(torch.zeros(2)))
    with pytest.raises(ValueError, match="does not require grad"):
        adaptive_generator_weight(output, nll_grad, g_grad, torch.zeros(2))


def test_disc_factor_switches_on_at_disc_start():
    assert discriminator_factor(0, disc_start=50001) == 0.0
    assert discriminator_factor(50000, disc_start=50001) == 0.0
    assert discriminator_factor(50001, disc_start=50001) == 0.5
    assert discriminator_factor(150000, disc_start=50001, factor=0.25) == 0.25
    assert discriminator_factor(0, disc_start=0) == 0.5


def test_disc_factor_ramp_boundaries():
    kwargs = dict(disc_start=10, factor=0.5, ramp_steps=4)
    assert discriminator_factor(9, **kwargs) == 0.0
    assert discriminator_factor(10, **kwargs) == pytest.approx(0.125)
    assert discriminator_factor(11, **kwargs) == pytest.approx(0.25)
    assert discriminator_factor(12, **kwargs) == pytest.approx(0.375)
    assert discriminator_factor(13, **kwargs) == pytest.approx(0.5)
    assert discriminator_factor(14, **kwargs) == pytest.approx(0.5)
    assert discriminator_factor(10**6, **kwargs) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "step, expected", [(7, 7), (np.int64(7), 7), (torch.tensor(7), 7), (torch.tensor(0, dtype=torch.int32), 0)]
)
def test_global_step_accepts_integers(step, expected):
    assert check_global_step(step) == expected
    assert type(check_global_step(step)) is int


@pytest.mark.parametrize(
    "step, message",
    [
        (2.5, r"got 2.5 \(float\)"),
        (3.0, r"got 3.0 \(float\)"),
        (True, r"got True \(bool\)"),
        ("100", r"got '100' \(str\)"),
        (-1, r"got -1"),
        (torch.tensor(3.0), r"got a tensor of shape \(\) and dtype torch.float32"),
        (torch.tensor([1, 2]), r"got a tensor of shape \(2,\)"),
    ],
)
def test_global_step_refuses_everything_else(step, message):
    with pytest.raises(ValueError, match="global_step must be a non-negative integer, " + message):
        discriminator_factor(step, disc_start=0)
