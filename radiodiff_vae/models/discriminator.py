"""The PatchGAN discriminator of the VAE-GAN loss (report section 2.4) and its optional ActNorm layer.

The module layout (``main.0`` ... ``main.N`` of one ``nn.Sequential``, ActNorm's ``loc``/``scale``/``initialized``)
matches the discriminator of the original RadioDiff / CompVis code, so its ``loss.discriminator.main.*`` weights
load after stripping the ``loss.discriminator.`` prefix.
"""

import torch
import torch.distributed as dist
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from ..errors import InvalidArgumentError

KERNEL_SIZE = 4
PADDING = 1
LEAKY_RELU_SLOPE = 0.2
INIT_STD = 0.02
MAX_CHANNEL_MULTIPLIER = 8


class ActNorm(nn.Module):
    """Per-channel affine normalisation ``scale * (x + loc)`` whose parameters are set from the first training batch.

    On the first forward in training mode, ``loc`` and ``scale`` are chosen so that every channel of that batch
    has mean 0 and standard deviation 1 (data-dependent initialisation, Kingma & Dhariwal 2018); from then on
    they are ordinary trainable parameters. Under ``torch.distributed`` the statistics are pooled over all ranks,
    so every replica starts from the same values.

    Args:
        num_features (`int`): channels of the input.
        eps (`float`, defaults to 1e-6): added to the standard deviation before inverting it.

    Shapes: ``(B, num_features, H, W)`` in and out.
    """

    def __init__(self, num_features: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        # Host-side mirror of `initialized`, so that a training forward does not read the buffer from the device
        # (one sync per layer per step) once the layer is known to be initialised.
        self._known_initialized = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._known_initialized = False  # the loaded flag decides again on the next training forward

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        channels = x.shape[1]
        per_channel = x.detach().transpose(0, 1).reshape(channels, -1).float()  # (C, B*H*W)
        stats = torch.stack(
            [
                per_channel.sum(dim=1),
                per_channel.square().sum(dim=1),
                torch.full((channels,), per_channel.shape[1], dtype=per_channel.dtype, device=per_channel.device),
            ]
        )  # (3, C): sum, sum of squares, count
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        total, total_sq, count = stats
        mean = total / count
        variance = ((total_sq - count * mean.square()) / (count - 1).clamp(min=1)).clamp(min=0)
        # `copy_` writes into the parameters' storage, so it also works when they were swapped for detached
        # views (torch.func.functional_call in the generator objective).
        self.loc.copy_((-mean).view_as(self.loc).to(self.loc.dtype))
        self.scale.copy_((1.0 / (variance.sqrt() + self.eps)).view_as(self.scale).to(self.scale.dtype))
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._known_initialized:
            if self.initialized.item() == 0:
                self._initialize(x)
            self._known_initialized = True
        return self.scale * (x + self.loc)


class NLayerDiscriminator(ModelMixin, ConfigMixin):
    r"""PatchGAN discriminator: one logit per overlapping patch of a radio map (pix2pix, Isola et al. 2017).

    ``num_layers`` 4x4 convs of stride 2, then one 4x4 conv of stride 1, each followed by normalisation (except
    the first) and LeakyReLU(0.2), then a 4x4 stride-1 conv to one channel. Channels start at ``base_channels`` and
    double per layer up to ``8 * base_channels``. Conv weights are drawn from N(0, 0.02) and conv biases start at
    zero; BatchNorm scales from N(1, 0.02). With ``num_layers=3`` each logit sees a 70x70 patch.

    Parameters:
        in_channels (`int`, defaults to 1): channels of the maps (1 for radio maps).
        base_channels (`int`, defaults to 64): filters of the first conv.
        num_layers (`int`, defaults to 3): stride-2 convs; the input must be at least ``3 * 2**num_layers`` pixels
            on each side.
        use_actnorm (`bool`, defaults to `False`): ActNorm instead of BatchNorm. BatchNorm layers are followed by
            bias-free convs (the norm has its own shift); ActNorm ones keep the bias, as in the original code.

    Shapes: ``(B, in_channels, H, W)`` -> logits ``(B, 1, H', W')`` with ``H' = H // 2**num_layers - 2``
    (for H divisible by ``2**num_layers``), e.g. 320 -> 38 and 32 -> 2 with the defaults.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        num_layers: int = 3,
        use_actnorm: bool = False,
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("base_channels", base_channels), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"NLayerDiscriminator: {name} must be a positive integer, got {value!r}.")
        norm_layer = ActNorm if use_actnorm else nn.BatchNorm2d
        use_bias = use_actnorm

        layers = [
            nn.Conv2d(in_channels, base_channels, KERNEL_SIZE, stride=2, padding=PADDING),
            nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True),
        ]
        multiplier = 1
        # num_layers - 1 further stride-2 convs, then one stride-1 conv, all normalised.
        for index in range(1, num_layers + 1):
            previous, multiplier = multiplier, min(2**index, MAX_CHANNEL_MULTIPLIER)
            stride = 2 if index < num_layers else 1
            layers += [
                nn.Conv2d(
                    base_channels * previous,
                    base_channels * multiplier,
                    KERNEL_SIZE,
                    stride=stride,
                    padding=PADDING,
                    bias=use_bias,
                ),
                norm_layer(base_channels * multiplier),
                nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True),
            ]
        layers.append(nn.Conv2d(base_channels * multiplier, 1, KERNEL_SIZE, stride=1, padding=PADDING))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    @property
    def min_input_size(self) -> int:
        """Smallest height/width that leaves at least one logit: ``3 * 2**num_layers``."""
        return 3 * 2**self.config.num_layers

    def reset_parameters(self) -> None:
        """Draws conv weights from N(0, 0.02) (zero biases) and BatchNorm scales from N(1, 0.02) (zero shifts)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, INIT_STD)
                nn.init.zeros_(module.bias)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` maps -> ``(B, 1, H', W')`` patch logits (real > 0 > fake under hinge loss)."""
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise InvalidArgumentError(
                f"NLayerDiscriminator expects maps of shape (B, {self.config.in_channels}, H, W), "
                f"got {tuple(sample.shape)}."
            )
        if min(sample.shape[-2:]) < self.min_input_size:
            raise InvalidArgumentError(
                f"NLayerDiscriminator with num_layers={self.config.num_layers} needs maps of at least "
                f"{self.min_input_size}x{self.min_input_size} pixels, got {sample.shape[-2]}x{sample.shape[-1]}."
            )
        return self.main(sample)
