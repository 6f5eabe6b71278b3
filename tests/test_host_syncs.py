"""The training step waits for the device once per optimizer step (twice with clipping), as VAEGANStep promises.

A host-device sync is every ``aten::_local_scalar_dense`` (``.item()``, ``bool(tensor)``, ``float(tensor)``) on a
tensor that lives on the device. On a CPU every tensor does, so the count here is the count a GPU would see, less
Adam's step counters: those stay on the host on every device (non-capturable Adam), so reading them never waits.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from radiodiff_vae import RadioVAE, RadioVAELoss
from radiodiff_vae.errors import InvalidArgumentError
from radiodiff_vae.training import NonFiniteGuard, VAEGANStep


class HostSyncCounter(TorchDispatchMode):
    """Counts ``_local_scalar_dense`` calls, except on the optimizers' step counters."""

    def __init__(self, optimizers):
        super().__init__()
        self.optimizers = optimizers
        self.count = 0

    def _is_step_counter(self, tensor: torch.Tensor) -> bool:
        return any(tensor is state.get("step") for optimizer in self.optimizers for state in optimizer.state.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and not self._is_step_counter(args[0]):
            self.count += 1
        return func(*args, **(kwargs or {}))


def _training_step(random_vgg16_home, monkeypatch, accumulation: int, max_grad_norm: float):
    from accelerate import Accelerator

    monkeypatch.setenv("TORCH_HOME", str(random_vgg16_home))
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32)
    loss_fn = RadioVAELoss(perceptual_weight=1.0, disc_base_channels=8, disc_start=2, allow_download=False)
    optimizer_ae = torch.optim.Adam([*vae.parameters(), loss_fn.logvar], lr=1e-4)
    optimizer_disc = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=1e-4)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for o in (optimizer_ae, optimizer_disc)]
    prepared = accelerator.prepare(vae, loss_fn.discriminator, optimizer_ae, optimizer_disc, *schedulers)
    step = VAEGANStep(accelerator, *prepared[:2], loss_fn, *prepared[2:], NonFiniteGuard(10), max_grad_norm)
    return step, prepared[2:4]


@pytest.mark.parametrize("max_grad_norm, expected", [(0.0, 1), (1.0, 2)], ids=["no-clipping", "clipping"])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_one_host_sync_per_optimizer_step_in_both_phases(
    random_vgg16_home, monkeypatch, fresh_accelerate_state, accumulation, max_grad_norm, expected
):
    step, optimizers = _training_step(random_vgg16_home, monkeypatch, accumulation, max_grad_norm)
    maps = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    counts, phases = [], []
    for global_step in range(4):  # disc_start=2: steps 0-1 phase 1, steps 2-3 phase 2
        with HostSyncCounter(optimizers) as counter:
            results = [step(maps, global_step) for _ in range(accumulation)]
        assert [result.sync for result in results] == [False] * (accumulation - 1) + [True]
        assert results[-1].applied
        counts.append(counter.count)
        phases.append(2 if results[-1].adversarial else 1)
    assert phases == [1, 1, 2, 2]
    assert counts == [expected] * 4


def test_value_checks_stay_on_for_users_calls():
    """The training step's opt-out is explicit: ``encode``, ``decode`` and ``forward`` still refuse NaN by default."""
    vae = RadioVAE.from_preset("tiny", sample_size=32)
    maps = torch.zeros(1, 1, 32, 32)
    maps[0, 0, 3, 4] = float("nan")
    for call in (
        lambda: vae.encode(maps),
        lambda: vae(maps),
        lambda: vae.decode(torch.full((1, 3, 4, 4), float("inf"))),
    ):
        with pytest.raises(InvalidArgumentError, match="non-finite"):
            call()
    with torch.no_grad():
        assert torch.isnan(vae(maps, check_values=False).sample).any()  # no check, no sync: NaN flows through
