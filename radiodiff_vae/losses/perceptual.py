"""LPIPS perceptual distance with the VGG16 trunk, for single-channel radio maps.

The ``lpips`` package ships the linear heads of LPIPS but gets the VGG16 trunk from torchvision, which downloads
``vgg16-397923af.pth`` into ``torch.hub.get_dir()/checkpoints`` on first use. Here the trunk file is located (and,
where allowed, downloaded) *before* the network is built, and both parts are loaded strictly: a machine without
the file fails at once with a message that says what to put where, instead of training against random features.
"""

import contextlib
import os
import re
import tempfile
import urllib.error
import warnings
from pathlib import Path
from typing import Iterator, Optional

import huggingface_hub.constants
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from ..errors import InputNotFoundError, InvalidArgumentError, ModelFileError

LPIPS_VERSION = "0.1"
LPIPS_CHECKPOINT_MODES = ("trunk", "selective", "all")
# torchvision's VGG16_Weights.IMAGENET1K_V1, the trunk the `lpips` heads were calibrated on.
VGG16_TRUNK_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


def vgg16_trunk_path() -> Path:
    """Where torch looks for the VGG16 trunk: ``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``.

    ``torch.hub.get_dir()`` is ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``) unless ``torch.hub.set_dir``
    was called.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG16_TRUNK_URL)


@contextlib.contextmanager
def vgg16_trunk_for_measuring() -> Iterator[str]:
    """Makes sure LPIPS finds a VGG16 trunk, for measuring its cost (time, memory, FLOPs) only: the real one when torch
    has it, else a randomly initialised one in a temporary ``TORCH_HOME`` (the same shapes, bytes and FLOPs). Yields
    which. Never for training: a random trunk measures nothing perceptual."""
    if vgg16_trunk_path().is_file():
        yield "torchvision VGG16 weights"
        return
    import torchvision

    previous = os.environ.get("TORCH_HOME")
    with tempfile.TemporaryDirectory() as home:
        folder = os.path.join(home, "hub", "checkpoints")
        os.makedirs(folder)
        features = torchvision.models.vgg16(weights=None).features
        state = {f"features.{key}": value for key, value in features.state_dict().items()}
        torch.save(state, os.path.join(folder, os.path.basename(VGG16_TRUNK_URL)))
        os.environ["TORCH_HOME"] = home
        try:
            yield "a random VGG16 trunk (cost only)"
        finally:
            if previous is None:
                os.environ.pop("TORCH_HOME", None)
            else:
                os.environ["TORCH_HOME"] = previous


def _missing_trunk_message(path: Path, reason: str) -> str:
    return (
        f"The LPIPS perceptual loss needs the ImageNet weights of torchvision's VGG16 trunk, which are not on this "
        f"machine: torch looks for them at {path} (torch.hub.get_dir()/checkpoints; set TORCH_HOME or call "
        f"torch.hub.set_dir to move it). {reason} Copy {path.name} (from {VGG16_TRUNK_URL}) to that path, or pass "
        f"perceptual_weight=0 to RadioVAELoss to train without the perceptual term."
    )


def ensure_vgg16_trunk(allow_download: Optional[bool] = None) -> Path:
    """Returns the path of the VGG16 trunk weights, downloading them first if they are missing and allowed.

    Args:
        allow_download (`bool`, *optional*): whether a missing file may be downloaded. ``None`` (default) allows it
            unless the environment variable ``HF_HUB_OFFLINE`` is set.

    Raises:
        FileNotFoundError: the file is missing and may not, or could not, be downloaded. The message names the
            expected path and the ``perceptual_weight=0`` alternative.
    """
    path = vgg16_trunk_path()
    if path.is_file():
        return path
    if allow_download is None:
        # The Hugging Face stack's offline switch (read by huggingface_hub at import); offline clusters set it.
        allow_download, switch = not huggingface_hub.constants.HF_HUB_OFFLINE, "HF_HUB_OFFLINE is set"
    else:
        switch = "allow_download=False"
    if not allow_download:
        raise InputNotFoundError(_missing_trunk_message(path, f"Downloading was not attempted ({switch})."))
    hash_prefix = re.search(r"-([0-9a-f]+)\.pth$", path.name).group(1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Writes to a temporary file next to `path` and moves it into place once the hash matches.
        torch.hub.download_url_to_file(VGG16_TRUNK_URL, str(path), hash_prefix=hash_prefix, progress=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise InputNotFoundError(_missing_trunk_message(path, f"Downloading it failed ({error}).")) from error
    return path


def _lpips_heads_path() -> Path:
    import lpips

    return Path(lpips.__file__).parent / "weights" / f"v{LPIPS_VERSION}" / "vgg.pth"


def load_lpips_vgg16(allow_download: Optional[bool] = None) -> nn.Module:
    """Builds ``lpips.LPIPS(net="vgg")`` with its trunk and heads loaded strictly from local files, frozen, in eval.

    Args:
        allow_download (`bool`, *optional*): see :func:`ensure_vgg16_trunk`.

    Raises:
        FileNotFoundError: the trunk or the heads file is missing.
        ValueError: a file holds tensors with other names or shapes than expected.
    """
    import lpips

    trunk_path = ensure_vgg16_trunk(allow_download)
    heads_path = _lpips_heads_path()
    if not heads_path.is_file():
        raise InputNotFoundError(
            f"The lpips package has no VGG heads at {heads_path}; reinstall it (pip install --force-reinstall lpips) "
            f"or pass perceptual_weight=0 to RadioVAELoss."
        )
    try:
        trunk_state = torch.load(trunk_path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: torch raises several types here
        raise ModelFileError(
            f"{trunk_path} is not a readable VGG16 state dict ({error}). Delete it so that it can be fetched again."
        ) from error
    with warnings.catch_warnings():
        # lpips still calls torchvision's deprecated `vgg16(pretrained=...)`; nothing is downloaded here.
        warnings.filterwarnings("ignore", message=r".*(pretrained|weights).*deprecated", category=UserWarning)
        # pnet_rand/pretrained False: lpips builds the network without downloading anything; weights follow.
        network = lpips.LPIPS(net="vgg", version=LPIPS_VERSION, pretrained=False, pnet_rand=True, verbose=False)

    # lpips splits torchvision's `features.<i>` into slices, keeping the index: `slice<k>.<i>.<param>`.
    wanted = network.net.state_dict()
    trunk_sources = {key: "features." + key.split(".", 1)[1] for key in wanted}
    refetch = "Delete it so that it can be fetched again."
    _check_tensors(trunk_path, trunk_state, {trunk_sources[key]: value for key, value in wanted.items()}, refetch)
    network.net.load_state_dict({key: trunk_state[source] for key, source in trunk_sources.items()}, strict=True)

    heads_state = torch.load(heads_path, map_location="cpu", weights_only=True)
    # `lin<k>.*`; lpips registers the same layers again as `lins.<k>.*`, which its file does not list.
    head_keys = {key: value for key, value in network.state_dict().items() if re.match(r"lin\d+\.", key)}
    _check_tensors(heads_path, heads_state, head_keys, "Reinstall lpips (pip install --force-reinstall lpips).")
    network.load_state_dict({key: heads_state[key] for key in head_keys}, strict=False)

    network.eval()
    network.requires_grad_(False)
    return network


def _check_tensors(path: Path, state: dict, expected: dict, remedy: str) -> None:
    """Raises a ValueError unless ``state`` holds every key of ``expected`` with the same shape."""
    if not isinstance(state, dict):
        raise ModelFileError(f"{path} holds a {type(state).__name__}, expected a state dict of tensors. {remedy}")
    missing = sorted(set(expected) - set(state))
    wrong = sorted(
        f"{key}: {tuple(state[key].shape)} instead of {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    )
    if missing or wrong:
        raise ModelFileError(
            f"{path} does not hold the expected weights: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"wrong shapes {wrong[:5]}. {remedy}"
        )


class PerceptualLoss(nn.Module):
    """LPIPS distance between maps in [-1, 1], one value per map; gradients flow to both inputs.

    Single-channel maps are repeated to three channels for the VGG16 trunk. The network is frozen, always in eval
    mode (its heads contain dropout, which ``.train()`` on a parent module must not switch on), and left out of
    ``state_dict()``: it is rebuilt from its files, so checkpoints do not carry its 59 MB. ``load_state_dict`` of
    a parent accepts checkpoints with or without its keys.

    Args:
        allow_download (`bool`, *optional*): see :func:`ensure_vgg16_trunk`.

    Shapes: ``(B, 1 or 3, H, W)`` twice -> ``(B, 1, 1, 1)``.
    """

    def __init__(self, allow_download: Optional[bool] = None):
        super().__init__()
        # Channels-last: on a CPU the trunk's forward and input-gradient backward take ~30% less time (oneDNN's
        # blocked convolutions); the same values to float rounding (docs/benchmarks.md, "Training step").
        self.lpips = load_lpips_vgg16(allow_download).to(memory_format=torch.channels_last)
        # Set by RadioVAELoss.enable_gradient_checkpointing; on the reconstruction's side, `checkpoint_mode`:
        # "trunk": the VGG16 features are recomputed in the backward slice by slice (convolutions included), only
        # each slice's input and output are kept; "selective": no convolution runs twice, the max-pools (whose
        # int64 indices are as large as their bf16 inputs) and each level's fp32 head (unit normalisation, squared
        # difference) are recomputed from the bf16 features; "all": the trunk's slices and the heads.
        self.gradient_checkpointing = False
        self.checkpoint_mode = "trunk"
        self.register_state_dict_post_hook(_drop_own_entries)
        self.register_load_state_dict_pre_hook(_fill_own_entries)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, inputs: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        if inputs.shape != reconstructions.shape or inputs.ndim != 4 or inputs.shape[1] not in (1, 3):
            raise ValueError(
                f"PerceptualLoss expects two maps of the same shape (B, 1 or 3, H, W), got {tuple(inputs.shape)} "
                f"and {tuple(reconstructions.shape)}."
            )
        # lpips.LPIPS.forward (version 0.1, lpips=True, spatial=False) written out: the VGG16 trunk runs under the
        # caller's autocast (bf16/fp16 on a GPU), the unit normalisation, squared differences and linear heads in
        # fp32; what gradient checkpointing recomputes on the reconstruction's side: `checkpoint_mode` (__init__).
        from lpips import normalize_tensor  # lpips is imported where the network is built, not at import time

        channels_last = torch.channels_last
        inputs = inputs.expand(-1, 3, -1, -1).contiguous(memory_format=channels_last)  # (B, 3, H, W)
        reconstructions = reconstructions.expand(-1, 3, -1, -1).contiguous(memory_format=channels_last)
        network = self.lpips
        slices = [getattr(network.net, f"slice{index}") for index in range(1, network.L + 1)]
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled() and reconstructions.requires_grad
        if checkpointed and self.checkpoint_mode not in LPIPS_CHECKPOINT_MODES:
            raise InvalidArgumentError(
                f"PerceptualLoss.checkpoint_mode must be one of {list(LPIPS_CHECKPOINT_MODES)}, got "
                f"{self.checkpoint_mode!r}."
            )
        recompute_slices = checkpointed and self.checkpoint_mode in ("trunk", "all")
        recompute_pools = checkpointed and self.checkpoint_mode == "selective"
        recompute_heads = checkpointed and self.checkpoint_mode in ("selective", "all")
        with torch.set_grad_enabled(torch.is_grad_enabled() and inputs.requires_grad):
            reference = network.scaling_layer(inputs)
            references = []
            for block in slices:
                reference = block(reference)
                references.append(reference)
        hidden = network.scaling_layer(reconstructions)
        distance = inputs.new_zeros((inputs.shape[0], 1, 1, 1), dtype=torch.float32)
        for level, block in enumerate(slices):
            if recompute_pools:
                hidden = _slice_recomputing_pools(block, hidden)
            else:
                hidden = checkpoint(block, hidden, use_reentrant=False) if recompute_slices else block(hidden)

            def head(reference, features, lin=network.lins[level]):
                with torch.autocast(features.device.type, enabled=False):
                    difference = (normalize_tensor(reference.float()) - normalize_tensor(features.float())) ** 2
                    return lin(difference).mean([2, 3], keepdim=True)  # (B, 1, 1, 1)

            if recompute_heads:  # recomputed up to the 1x1 head convolution's input, never through it
                with set_checkpoint_early_stop(True):
                    level_distance = checkpoint(head, references[level], hidden, use_reentrant=False, early_stop=True)
            else:
                level_distance = head(references[level], hidden)
            distance = distance + level_distance
            references[level] = None  # the target's features are freed level by level
        return distance  # (B, 1, 1, 1), fp32


def _slice_recomputing_pools(block: nn.Sequential, hidden: torch.Tensor) -> torch.Tensor:
    """``block(hidden)`` for a VGG16 slice, each ``MaxPool2d -> Conv2d`` pair checkpointed: the pool's output and
    indices are recomputed in the backward, which stops at the convolution's input (early stop), so no convolution
    runs twice. The in-place ReLUs keep their outputs, which are the next layer's inputs anyway."""
    layers = list(block)
    index = 0
    while index < len(layers):
        layer = layers[index]
        if isinstance(layer, nn.MaxPool2d) and index + 1 < len(layers) and isinstance(layers[index + 1], nn.Conv2d):

            def pool_then_conv(features, pool=layer, conv=layers[index + 1]):
                return conv(pool(features))

            with set_checkpoint_early_stop(True):
                hidden = checkpoint(pool_then_conv, hidden, use_reentrant=False, early_stop=True)
            index += 2
        else:
            hidden = layer(hidden)
            index += 1
    return hidden


def _drop_own_entries(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [key for key in state_dict if key.startswith(prefix)]:
        del state_dict[key]


def _fill_own_entries(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    # Checkpoints leave the frozen network out (see `_drop_own_entries`); give a strict load its current tensors.
    # The children's own state_dict lists exactly the keys a load expects (shared layers under both names).
    for child_name, child in module.named_children():
        for key, tensor in child.state_dict(keep_vars=True).items():
            state_dict.setdefault(f"{prefix}{child_name}.{key}", tensor)
