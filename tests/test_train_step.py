"""The training step of radiodiff_vae.training: the cheaper generator objective gives the directly differentiated
loss's values and gradients (radiodiff_vae.losses.reference), fp16 with a real GradScaler steps both optimizers
with true gradients, and the discriminator's learning rate schedule starts at disc_start."""

from pathlib import Path

import pytest
import torch

from radiodiff_vae import RadioVAE, RadioVAELoss
from radiodiff_vae.losses.reference import generator_loss
from radiodiff_vae.losses.vae_gan import GENERATOR_LOG_KEYS


@pytest.fixture(scope="module")
def torch_home(random_vgg16_home) -> Path:
    return random_vgg16_home


def _model_and_loss(torch_home, monkeypatch, perceptual_weight, gan_loss="hinge"):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32)
    loss = RadioVAELoss(
        perceptual_weight=perceptual_weight, disc_base_channels=8, disc_start=3, logvar_init=0.3,
        kl_weight=1e-3, gan_loss=gan_loss, allow_download=False,
    )  # fmt: skip
    return vae, loss


@pytest.mark.parametrize(
    "perceptual_weight, step, gan_loss",
    [(1.0, 0, "hinge"), (1.0, 3, "hinge"), (0.0, 7, "vanilla")],
    ids=["phase1-lpips", "phase2-lpips", "phase2-vanilla"],
)
def test_generator_objective_has_the_values_and_gradients_of_the_direct_loss(
    torch_home, monkeypatch, perceptual_weight, step, gan_loss
):
    vae, loss = _model_and_loss(torch_home, monkeypatch, perceptual_weight, gan_loss)
    inputs = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    parameters = list(vae.parameters()) + [loss.logvar]

    def run(objective_of):
        out = vae(inputs, sample_posterior=True, generator=torch.Generator().manual_seed(2), return_posterior=True)
        objective, logs = objective_of(inputs, out.sample, out.latent_dist, step, vae.get_last_layer())
        grads = torch.autograd.grad(objective, parameters, allow_unused=True)
        floats = {key: float(value) for key, value in logs.items()}
        return floats, [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads)]

    expected_logs, expected_grads = run(lambda *arguments: generator_loss(loss, *arguments))
    logs, grads = run(loss.generator_objective)
    assert set(logs) == set(expected_logs) == set(GENERATOR_LOG_KEYS) | {"disc_factor"}
    for key in expected_logs:
        assert logs[key] == pytest.approx(expected_logs[key], rel=1e-5, abs=1e-7), key
    assert (expected_logs["d_weight"] > 0) == (step >= 3)
    assert (expected_logs["perceptual"] > 0) == (perceptual_weight > 0)
    for parameter_grad, expected in zip(grads, expected_grads):
        torch.testing.assert_close(parameter_grad, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item() + 1e-9)
    assert grads[-1].abs().item() > 0  # logvar is trained through the surrogate too


def test_discriminator_schedule_starts_at_disc_start(tmp_path):
    from radiodiff_vae.training import build_lr_scheduler

    def rates(start_step):
        optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        scheduler = build_lr_scheduler(
            "polynomial", optimizer, num_warmup_steps=2, num_training_steps=10, lr_end=1e-4, start_step=start_step
        )
        values = []
        for _ in range(12):
            values.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return values, scheduler

    plain, _ = rates(0)
    delayed, scheduler = rates(4)
    assert delayed[:5] == [plain[0]] * 5  # held before step 4 (0 here: warm-up starts at 4 as well)
    assert delayed[4:7] == pytest.approx([plain[0], 5e-4, 1e-3])  # warm-up over steps 4..6
    assert delayed[10] == pytest.approx(1e-4) and delayed[9] > delayed[10]  # decayed over 6..10, ends at lr_end
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")  # a checkpoint pickles it


# ------------------------------------------------------------------------------------------------------------------
# fp16: one real GradScaler for both optimizers


def _one_phase2_step(scaler, max_grad_norm):
    """One optimizer step of VAEGANStep at disc_start with SGD (lr 1), so that the update is the gradient itself;
    returns each model's update and the gradient norms."""
    from accelerate import Accelerator
    from conftest import reset_accelerate_state

    from radiodiff_vae.training import NonFiniteGuard, VAEGANStep

    reset_accelerate_state()
    accelerator = Accelerator(cpu=True)
    accelerator.scaler = scaler  # what accelerate builds for fp16 on a GPU; on the CPU it builds none
    if scaler is not None:  # and what its unscale_gradients then does (on the CPU, without fp16, nothing)
        accelerator.unscale_gradients = lambda optimizers: [scaler.unscale_(o.optimizer) for o in optimizers]
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32)
    loss_fn = RadioVAELoss(perceptual_weight=0.0, disc_base_channels=8, disc_start=2, kl_weight=1e-3)
    before = [p.detach().clone() for p in [*vae.parameters(), loss_fn.logvar, *loss_fn.discriminator.parameters()]]
    optimizer_ae = torch.optim.SGD([*vae.parameters(), loss_fn.logvar], lr=1.0)
    optimizer_disc = torch.optim.SGD(loss_fn.discriminator.parameters(), lr=1.0)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for o in (optimizer_ae, optimizer_disc)]
    prepared = accelerator.prepare(vae, loss_fn.discriminator, optimizer_ae, optimizer_disc, *schedulers)
    step = VAEGANStep(accelerator, *prepared[:2], loss_fn, *prepared[2:], NonFiniteGuard(1), max_grad_norm, seed=1)
    maps = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    result = step(maps, global_step=2)
    assert result.sync and result.applied and result.adversarial
    after = [p.detach() for p in [*vae.parameters(), loss_fn.logvar, *loss_fn.discriminator.parameters()]]
    updates = [b - a for b, a in zip(before, after)]
    num_ae = len(list(vae.parameters())) + 1
    return updates[:num_ae], updates[num_ae:], result.grad_norms


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.05])
def test_fp16_grad_scaler_unscales_each_optimizer_once_and_updates_once(fresh_accelerate_state, max_grad_norm):
    ae_true, disc_true, norms_true = _one_phase2_step(None, max_grad_norm)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    ae, disc, norms = _one_phase2_step(scaler, max_grad_norm)
    for update, expected in zip(ae + disc, ae_true + disc_true):
        torch.testing.assert_close(update, expected, rtol=1e-4, atol=1e-7)
    assert sum(update.abs().sum() for update in disc) > 0  # the discriminator did learn
    assert norms.keys() == norms_true.keys() == ({"autoencoder", "logvar", "discriminator"} if max_grad_norm else set())
    for name in norms:
        assert norms[name].item() == pytest.approx(norms_true[name].item(), rel=1e-4)
    # One update of the scale per optimizer step: growth_interval 1 doubles it once (twice would give 4096).
    assert scaler.get_scale() == 2048.0


# ------------------------------------------------------------------------------------------------------------------
# logging window, spread validation maps
def test_log_window_averages_finite_micro_batches_per_key():
    from accelerate import Accelerator

    from radiodiff_vae.training import LogWindow

    window = LogWindow()
    window.add_micro_batch({"nll": torch.tensor(1.0)}, torch.tensor(True))
    window.add_micro_batch({"nll": torch.tensor(float("nan"))}, torch.tensor(False))  # left out
    window.add_micro_batch({"nll": torch.tensor(3.0), "disc_loss": torch.tensor(5.0)}, torch.tensor(True))
    window.add_step({"grad_norm_autoencoder": torch.tensor(2.0)})
    window.add_step({"grad_norm_autoencoder": torch.tensor(4.0)})
    summary = window.summary(Accelerator(cpu=True))
    assert summary == {"nll": 2.0, "disc_loss": 5.0, "grad_norm_autoencoder": 3.0}
    window.reset()
    assert window.summary(Accelerator(cpu=True)) == {}


def test_validation_maps_are_spread_over_the_split():
    from radiodiff_vae.training import spread_indices

    assert spread_indices(100, 5) == [0, 25, 50, 74, 99]  # every city of a map-by-map ordering, not the first five
    assert spread_indices(3, 5) == [0, 1, 2] and spread_indices(0, 4) == []
    assert len(set(spread_indices(1000, 64))) == 64


def test_checkpointed_lpips_trunk_gives_the_same_distance_and_gradient(torch_home, monkeypatch):
    _, loss = _model_and_loss(torch_home, monkeypatch, 1.0)
    inputs = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    reconstructions = (inputs + 0.2 * torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(5)))
    results = []
    for checkpointed in (False, True):
        loss.perceptual.gradient_checkpointing = checkpointed
        leaf = reconstructions.clone().requires_grad_(True)
        distance = loss.perceptual(inputs, leaf)
        (grad,) = torch.autograd.grad(distance.sum(), leaf)
        results.append((distance.detach(), grad))
    loss.perceptual.gradient_checkpointing = False
    assert results[0][0].shape == (2, 1, 1, 1) and results[0][0].min() > 0
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-9)


def test_benchmark_counts_fewer_flops_than_the_previous_and_the_original_step(capsys, monkeypatch, tmp_path):
    """benchmarks/benchmark_train_step.py on a small network: in phase 2 the package's step saves the second LPIPS and
    discriminator backwards of the previous step, and both beat the original trainer's computation."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark_train_step.py"
    spec = importlib.util.spec_from_file_location("benchmark_train_step_under_test", script)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no VGG16 weights: the random trunk
    arguments = ["--preset", "tiny", "--resolution", "32", "--batch_size", "2", "--repeats", "1", "--threads", "1"]
    assert benchmark.main(arguments + ["--disc_base_channels", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith(("| 1 ", "| 2 "))]
    gflop = {(int(phase), name.strip()): float(value) for phase, name, value, *_ in rows}
    assert gflop[(1, "package")] == pytest.approx(gflop[(1, "previous")])  # phase 1: already one pass each
    assert gflop[(2, "package")] < gflop[(2, "previous")] < gflop[(2, "original")]
    assert gflop[(1, "package")] < gflop[(2, "package")] < 0.7 * gflop[(2, "original")]
