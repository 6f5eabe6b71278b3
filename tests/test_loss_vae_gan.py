"""RadioVAELoss's objectives without LPIPS (perceptual_weight=0): values, KL, gating, gradients, bad input.

The LPIPS path is covered in test_loss_perceptual.py.
"""

import inspect
import math

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch.nn.parallel import DistributedDataParallel

from radiodiff_vae import RadioVAE, RadioVAELoss
from radiodiff_vae.losses import vae_gan

GENERATOR_KEYS = {"total", "nll", "rec", "l1", "mse", "perceptual", "kl", "logvar", "d_weight", "disc_factor", "g_loss"}
DISCRIMINATOR_KEYS = {"disc_loss", "logits_real", "logits_fake"}


def make_loss(**overrides) -> RadioVAELoss:
    torch.manual_seed(0)
    options = dict(perceptual_weight=0.0, disc_base_channels=8, disc_start=5)
    options.update(overrides)
    return RadioVAELoss(**options)


def maps(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=generator) * 2 - 1


def posterior(batch: int = 2, size: int = 4, seed: int = 1) -> DiagonalGaussianDistribution:
    generator = torch.Generator().manual_seed(seed)
    return DiagonalGaussianDistribution(torch.randn(batch, 6, size, size, generator=generator))


def floats(logs: dict) -> dict:
    assert all(value.ndim == 0 and not value.requires_grad for value in logs.values())  # detached 0-dim tensors
    return {key: float(value) for key, value in logs.items()}


def objective(loss: RadioVAELoss, inputs, reconstructions, posterior, step, last_layer=None):
    """``loss.generator_objective`` with its logs as floats."""
    surrogate, logs = loss.generator_objective(inputs, reconstructions, posterior, step, last_layer)
    return surrogate, floats(logs)


def tiny_vae_step(loss: RadioVAELoss, step: int, batch: int = 2):
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny")
    inputs = maps(batch)
    out = vae(inputs, sample_posterior=True, generator=torch.Generator().manual_seed(0), return_posterior=True)
    surrogate, logs = objective(loss, inputs, out.sample, out.latent_dist, step, vae.get_last_layer())
    return vae, inputs, out, surrogate, logs


def test_defaults_are_those_of_the_design():
    parameters = inspect.signature(RadioVAELoss.__init__).parameters  # without building LPIPS
    defaults = {name: parameter.default for name, parameter in parameters.items() if name != "self"}
    assert defaults == dict(
        kl_weight=1e-6,
        perceptual_weight=1.0,
        logvar_init=0.0,
        learn_logvar=True,
        disc_start=50001,
        disc_factor_max=0.5,
        disc_ramp_steps=0,
        disc_weight=0.5,
        gan_loss="hinge",
        disc_in_channels=1,
        disc_num_layers=3,
        disc_base_channels=64,
        disc_use_actnorm=False,
        allow_download=None,
    )


def test_generator_objective_before_disc_start_by_hand():
    loss = make_loss(kl_weight=0.01)
    with torch.no_grad():
        loss.logvar.fill_(0.3)
    inputs, reconstructions, dist = maps(seed=0), maps(seed=1).requires_grad_(), posterior()
    _, logs = objective(loss, inputs, reconstructions, dist, 4)

    difference = inputs - reconstructions.detach()
    rec = difference.abs() + difference**2
    nll = (rec / math.exp(0.3) + 0.3).sum() / 2
    kl = 0.5 * (dist.mean**2 + dist.logvar.exp() - 1 - dist.logvar).sum() / 2
    assert logs["total"] == pytest.approx((nll + 0.01 * kl).item(), rel=1e-6)
    assert set(logs) == GENERATOR_KEYS
    assert logs["nll"] == pytest.approx(nll.item(), rel=1e-6)
    assert logs["kl"] == pytest.approx(kl.item(), rel=1e-6)
    assert logs["rec"] == pytest.approx(rec.mean().item(), rel=1e-6)
    assert logs["l1"] == pytest.approx(difference.abs().mean().item(), rel=1e-6)
    assert logs["mse"] == pytest.approx((difference**2).mean().item(), rel=1e-6)
    assert logs["logvar"] == pytest.approx(0.3)
    assert logs["perceptual"] == logs["d_weight"] == logs["g_loss"] == logs["disc_factor"] == 0.0


def test_kl_matches_closed_form_and_monte_carlo():
    loss = make_loss(kl_weight=1.0)
    generator = torch.Generator().manual_seed(3)
    mean = torch.randn(2, 3, 2, 2, generator=generator)
    logvar = torch.randn(2, 3, 2, 2, generator=generator) * 0.5
    dist = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
    inputs = maps()
    _, logs = objective(loss, inputs, inputs.clone().requires_grad_(), dist, 0)  # perfect reconstruction: nll = 0
    closed_form = (0.5 * (mean**2 + logvar.exp() - 1 - logvar)).sum() / 2
    assert logs["kl"] == pytest.approx(closed_form.item(), rel=1e-6)
    assert logs["total"] == pytest.approx(closed_form.item(), rel=1e-6)

    # Monte Carlo: E_q[log q(z) - log p(z)], 40000 samples per map.
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    z = q.sample((40000,))  # (N, B, 3, 2, 2)
    log_ratio = q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)
    monte_carlo = log_ratio.sum(dim=(2, 3, 4)).mean(dim=0).sum() / 2
    assert logs["kl"] == pytest.approx(monte_carlo.item(), abs=0.05)
    assert logs["kl"] > 1.0  # the comparison above is not between two near-zero numbers


def test_deterministic_posterior_has_zero_kl():
    loss = make_loss(kl_weight=1.0)
    dist = DiagonalGaussianDistribution(torch.randn(2, 6, 4, 4), deterministic=True)
    _, logs = objective(loss, maps(), maps(seed=1).requires_grad_(), dist, 0)
    assert logs["kl"] == 0.0


def test_no_discriminator_and_no_adaptive_weight_before_disc_start(monkeypatch):
    loss = make_loss(disc_start=5)
    calls = []
    loss.discriminator.register_forward_hook(lambda module, args, output: calls.append(1))

    def forbidden(*args, **kwargs):
        raise AssertionError("the adaptive weight must not be computed before disc_start")

    monkeypatch.setattr(vae_gan, "adaptive_generator_weight", forbidden)
    vae, inputs, out, _, logs = tiny_vae_step(loss, step=4)
    assert calls == [] and logs["d_weight"] == logs["g_loss"] == logs["disc_factor"] == 0.0
    assert logs["total"] == pytest.approx(logs["nll"] + 1e-6 * logs["kl"], rel=1e-6)
    with pytest.raises(ValueError, match="step 4: the discriminator is off before disc_start"):
        loss.discriminator_objective(inputs, out.sample, 4)
    assert calls == []

    monkeypatch.undo()
    _, _, _, _, logs = tiny_vae_step(loss, step=5)
    assert len(calls) == 1 and logs["disc_factor"] == 0.5 and logs["d_weight"] > 0
    loss.discriminator_objective(inputs, out.sample, 5)
    assert len(calls) == 3  # one forward for real maps, one for reconstructions


def test_adaptive_weight_and_total_after_disc_start_match_autograd():
    loss = make_loss(disc_start=5, disc_weight=0.5)
    vae, inputs, out, _, logs = tiny_vae_step(loss, step=7)
    last_layer = vae.get_last_layer()

    # Direct: the same nll and generator loss, differentiated separately.
    difference = inputs - out.sample
    nll = ((difference.abs() + difference**2) / loss.logvar.exp() + loss.logvar).sum() / 2
    g_loss = -loss.discriminator(out.sample).mean()
    (nll_grad,) = torch.autograd.grad(nll, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    expected_weight = (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4) * 0.5
    assert logs["d_weight"] == pytest.approx(expected_weight.item(), rel=1e-5)
    assert logs["g_loss"] == pytest.approx(g_loss.item(), rel=1e-5)
    expected_total = logs["nll"] + 1e-6 * logs["kl"] + logs["d_weight"] * 0.5 * logs["g_loss"]
    assert logs["total"] == pytest.approx(expected_total, rel=1e-5)


def test_ramp_scales_the_adversarial_term():
    loss = make_loss(disc_start=5, disc_ramp_steps=4)
    assert [loss.disc_factor(step) for step in (4, 5, 6, 8, 9)] == [0.0, 0.125, 0.25, 0.5, 0.5]
    _, _, _, _, logs = tiny_vae_step(loss, step=5)
    assert logs["disc_factor"] == 0.125
    expected_total = logs["nll"] + 1e-6 * logs["kl"] + logs["d_weight"] * 0.125 * logs["g_loss"]
    assert logs["total"] == pytest.approx(expected_total, rel=1e-5)


def test_generator_objective_gives_no_gradient_to_the_discriminator():
    loss = make_loss(disc_start=0)
    vae, inputs, out, surrogate, logs = tiny_vae_step(loss, step=0)
    assert logs["d_weight"] > 0
    surrogate.backward()
    assert all(parameter.grad is None for parameter in loss.discriminator.parameters())
    assert all(parameter.requires_grad for parameter in loss.discriminator.parameters())  # not toggled
    assert vae.get_last_layer().grad is not None and vae.encoder.conv_in.weight.grad.abs().sum() > 0


def test_discriminator_objective_gives_no_gradient_to_the_autoencoder():
    loss = make_loss(disc_start=0)
    vae, inputs, out, _, _ = tiny_vae_step(loss, step=0)
    d_loss, logs = loss.discriminator_objective(inputs, out.sample, 0)
    d_loss.backward()
    assert all(parameter.grad is None for parameter in vae.parameters())
    assert loss.logvar.grad is None
    assert all(parameter.grad is not None for parameter in loss.discriminator.parameters())
    assert set(logs) == DISCRIMINATOR_KEYS
    assert floats(logs)["disc_loss"] == pytest.approx(d_loss.item())


@pytest.mark.parametrize("gan_loss, expected", [("hinge", 0.5 * 2.0), ("vanilla", 0.5 * 2 * math.log(2))])
def test_discriminator_objective_runs_the_module_it_is_given(gan_loss: str, expected: float):
    loss = make_loss(disc_start=0, gan_loss=gan_loss)

    class Wrapper(nn.Module):  # stands in for the accelerate/DDP wrapper of loss.discriminator
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, sample: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            assert not sample.requires_grad  # detached
            return torch.zeros(sample.shape[0], 1, 2, 2, requires_grad=True)

    wrapper = Wrapper()
    reconstructions = maps(seed=1).requires_grad_()
    d_loss, logs = loss.discriminator_objective(maps(), reconstructions, 3, discriminator=wrapper)
    assert wrapper.calls == 2
    assert d_loss.item() == pytest.approx(expected)  # zero logits: hinge 1 + 1, vanilla ln 2 + ln 2
    assert floats(logs)["logits_real"] == floats(logs)["logits_fake"] == 0.0


def test_vanilla_generator_term():
    loss = make_loss(disc_start=0, gan_loss="vanilla")
    _, _, out, _, logs = tiny_vae_step(loss, step=0)
    logits = loss.discriminator(out.sample)
    assert logs["g_loss"] == pytest.approx(torch.nn.functional.softplus(-logits).mean().item(), rel=1e-5)


@pytest.mark.parametrize("learn_logvar", [True, False])
def test_logvar_gets_a_gradient_only_when_learned(learn_logvar: bool):
    loss = make_loss(learn_logvar=learn_logvar, logvar_init=0.2, kl_weight=0.0)
    inputs, reconstructions = maps(seed=0), maps(seed=1).requires_grad_()
    surrogate, _ = objective(loss, inputs, reconstructions, posterior(), 0)
    surrogate.backward()
    assert reconstructions.grad is not None
    if learn_logvar:
        assert loss.trainable_autoencoder_parameters() == [loss.logvar]
        # d/dlogvar sum(rec * exp(-logvar) + logvar) / B
        difference = inputs - reconstructions.detach()
        rec = difference.abs() + difference**2
        expected = (-rec * math.exp(-0.2) + 1).sum() / 2
        assert loss.logvar.grad.item() == pytest.approx(expected.item(), rel=1e-5)
    else:
        assert loss.trainable_autoencoder_parameters() == []
        assert loss.logvar.grad is None and not loss.logvar.requires_grad
        assert isinstance(loss.logvar, nn.Parameter) and loss.logvar.item() == pytest.approx(0.2)


def test_generator_objective_needs_a_graph():
    loss = make_loss(disc_start=0)
    with torch.no_grad(), pytest.raises(ValueError, match="needs reconstructions with a graph"):
        loss.generator_objective(maps(), maps(seed=1).requires_grad_(), posterior(), 10)


def test_state_dict_and_config_round_trip(tmp_path):
    loss = make_loss(disc_use_actnorm=True, logvar_init=0.7)
    discriminator = {"discriminator." + key for key in loss.discriminator.state_dict()}
    assert set(loss.state_dict()) == {"log_variance.logvar"} | discriminator
    other = make_loss(disc_use_actnorm=True)
    other.load_state_dict(loss.state_dict(), strict=True)
    assert other.logvar.item() == pytest.approx(0.7)

    loss.save_config(tmp_path)
    rebuilt = RadioVAELoss.from_config(RadioVAELoss.load_config(tmp_path))
    public = lambda config: {key: value for key, value in config.items() if not key.startswith("_")}  # noqa: E731
    assert public(rebuilt.config) == public(loss.config)
    assert rebuilt.config.disc_use_actnorm and rebuilt.config.disc_base_channels == 8
    assert "allow_download" not in (tmp_path / "loss_config.json").read_text()


def test_bad_input_is_refused_before_any_work():
    loss = make_loss(disc_start=0)
    calls = []
    loss.discriminator.register_forward_hook(lambda module, args, output: calls.append(1))
    inputs = maps()
    cases = [
        (dict(reconstructions=maps(size=64)), r"same shape \(B, C, H, W\), got \(2, 1, 32, 32\) and \(2, 1, 64, 64\)"),
        (dict(inputs=inputs[0], reconstructions=inputs[0]), r"got \(1, 32, 32\) and \(1, 32, 32\)"),
        (dict(global_step=2.5), r"global_step must be a non-negative integer, got 2.5 \(float\)"),
        (dict(global_step=-3), r"global_step must be a non-negative integer, got -3"),
        (dict(posterior=torch.zeros(2)), r"posterior with a kl\(\) method.*got Tensor"),
        (dict(posterior=posterior(batch=3)), r"kl\(\) has shape \(3,\), expected \(2,\)"),
        (dict(last_layer=None), r"needs last_layer \(vae.get_last_layer\(\), a weight that requires grad\)"),
        (dict(reconstructions=maps(seed=1)), r"needs reconstructions with a graph"),
    ]
    for override, message in cases:
        arguments = dict(
            inputs=inputs,
            reconstructions=maps(seed=1).requires_grad_(),
            posterior=posterior(),
            global_step=0,
            last_layer=nn.Parameter(torch.zeros(1)),
        )
        arguments.update(override)
        with pytest.raises(ValueError, match=message):
            loss.generator_objective(**arguments)
    assert calls == []  # every check ran before the discriminator
    with pytest.raises(ValueError, match=r"got \(2, 1, 32, 32\) and \(2, 1, 64, 64\)"):
        loss.discriminator_objective(inputs, maps(size=64), 0)
    with pytest.raises(ValueError, match=r"got 1.0 \(float\)"):
        loss.discriminator_objective(inputs, inputs, 1.0)
    assert calls == []
    with pytest.raises(ValueError, match="do not depend on last_layer"):
        unrelated_layer = nn.Parameter(torch.zeros(1))
        loss.generator_objective(inputs, maps(seed=1).requires_grad_(), posterior(), 0, last_layer=unrelated_layer)


@pytest.mark.parametrize(
    "argument, message",
    [
        (dict(gan_loss="wgan"), r"Unknown GAN loss 'wgan'"),
        (dict(kl_weight=-1.0), r"kl_weight must be a finite number >= 0, got -1.0"),
        (dict(disc_weight=float("nan")), r"disc_weight must be a finite number >= 0, got nan"),
        (dict(disc_start=1.5), r"disc_start must be an integer >= 0, got 1.5"),
        (dict(disc_ramp_steps=-2), r"disc_ramp_steps must be an integer >= 0, got -2"),
    ],
)
def test_bad_configuration_is_refused(argument: dict, message: str):
    with pytest.raises(ValueError, match=message):
        make_loss(**argument)


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_training_steps_with_ddp_wrapped_modules(tmp_path):
    # One process, world size 1: the same code path as a multi-GPU run (DDP hooks, ActNorm's all_reduce).
    if dist.is_initialized():
        pytest.skip("a process group already exists in this test session")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        loss = make_loss(disc_start=0, disc_use_actnorm=True)
        torch.manual_seed(0)
        vae = RadioVAE.from_preset("tiny")
        ddp_vae, ddp_discriminator = DistributedDataParallel(vae), DistributedDataParallel(loss.discriminator)
        vae_optimizer = torch.optim.Adam(list(ddp_vae.parameters()) + loss.trainable_autoencoder_parameters(), 1e-3)
        disc_optimizer = torch.optim.Adam(ddp_discriminator.parameters(), 1e-3)
        state = loss.discriminator.state_dict()
        weights_before = {name: tensor.clone() for name, tensor in state.items() if name.endswith("weight")}
        inputs = maps()
        out = ddp_vae(inputs, sample_posterior=True, return_posterior=True)
        surrogate, logs = objective(loss, inputs, out.sample, out.latent_dist, 0, vae.get_last_layer())
        surrogate.backward()
        assert all(parameter.grad is None for parameter in loss.discriminator.parameters())
        vae_optimizer.step()
        vae_optimizer.zero_grad(set_to_none=True)
        d_loss, d_logs = loss.discriminator_objective(inputs, out.sample, 0, discriminator=ddp_discriminator)
        d_logs = floats(d_logs)
        d_loss.backward()
        assert all(parameter.grad is None for parameter in vae.parameters())
        disc_optimizer.step()
        assert math.isfinite(logs["total"]) and logs["d_weight"] > 0 and math.isfinite(d_logs["disc_loss"])
        assert loss.logvar.item() != 0.0  # trained with the autoencoder
        # Conv weights moved (the last conv's bias may not: hinge gives it -1 + 1 = 0 while all logits are in (-1, 1)).
        weights_after = loss.discriminator.state_dict()
        assert all(not torch.equal(before, weights_after[name]) for name, before in weights_before.items())
        assert loss.discriminator.main[3].initialized.item() == 1
    finally:
        dist.destroy_process_group()
