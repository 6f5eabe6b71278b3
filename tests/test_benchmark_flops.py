"""benchmarks/benchmark_vae.py's FLOP count: fused attention on the CPU is counted, and the peak is the better kernel."""

import importlib.util
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from radiodiff_vae import RadioVAE

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark_vae.py"
_spec = importlib.util.spec_from_file_location("benchmark_vae_under_test", SCRIPT)
benchmark_vae = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark_vae)


def _count(function, counter_factory) -> int:
    with counter_factory() as counter:
        function()
    return counter.get_total_flops()


def test_cpu_attention_is_counted_in_inference_no_grad_and_training():
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("radiodiff-ldm-f4", block_out_channels=(32, 64, 128), norm_num_groups=8).eval()
    maps = torch.zeros(1, 1, 32, 32)
    tokens, channels = (32 // 4) ** 2, 128  # one self-attention over the 8x8 latent grid, 128 channels
    attention = 2 * 2 * tokens * tokens * channels  # Q K^T and A V, 2 FLOPs per multiply-add

    def encode():
        return vae.encode(maps).latent_dist.mode()

    plain = lambda: FlopCounterMode(display=False)  # noqa: E731 - torch's counter, which misses the CPU kernel
    for context in (torch.inference_mode, torch.no_grad):
        with context():
            assert _count(encode, benchmark_vae.flop_counter) - _count(encode, plain) == attention

    def train_step():
        vae.encode(maps).latent_dist.mode().sum().backward()

    # the backward of attention is 2.5x its forward (torch's sdpa_backward_flop_count)
    assert _count(train_step, benchmark_vae.flop_counter) - _count(train_step, plain) == attention + attention * 5 // 2


def test_peak_reference_is_the_better_kernel():
    assert benchmark_vae.reference_peak(215e9, 473e9) == 473e9
    assert benchmark_vae.reference_peak(900e9, 473e9) == 900e9
