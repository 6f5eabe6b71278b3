"""RadioVAE as a drop-in for diffusers: AutoencoderKL export and import, the config keys pipelines read, a real
pipeline around it (run, save, load), the errors and warnings code written for AutoencoderKL sees, and the layering
rule (no import cycle in the package)."""

import ast
import copy
import inspect
import json
import warnings
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from radiodiff_vae import RadioVAE
from radiodiff_vae.cli import main
from radiodiff_vae.models.autoencoder_radio import radio_vae_config_of_autoencoder_kl

PACKAGE = Path(__file__).resolve().parents[1] / "radiodiff_vae"
SIZE = 32


def small_f4(seed: int = 0) -> RadioVAE:
    """The `radiodiff-ldm-f4` layout (the one AutoencoderKL can build) with small channel counts."""
    torch.manual_seed(seed)
    return RadioVAE.from_preset(
        "radiodiff-ldm-f4", block_out_channels=(32, 64, 128), norm_num_groups=8, sample_size=SIZE, scaling_factor=0.5
    ).eval()


def maps(batch: int = 2, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=generator) * 2 - 1


def encode_decode(model) -> tuple:
    """`(posterior mean, posterior std, decoded mean)` of the same maps, for comparing two classes."""
    with torch.no_grad():
        posterior = model.encode(maps().to(model.dtype)).latent_dist
        return posterior.mean, posterior.std, model.decode(posterior.mean).sample


def assert_same_outputs(first, second) -> None:
    # In float64 on copies: RadioVAE's decoder upsamples at the input resolution (NearestConvUpsample2D), which sums
    # the 3x3 taps in another order than AutoencoderKL's Upsample2D; in double that differs by ~1e-13.
    first, second = copy.deepcopy(first).double(), copy.deepcopy(second).double()
    for a, b in zip(encode_decode(first), encode_decode(second)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def public_config(model) -> dict:
    return {key: value for key, value in model.config.items() if not key.startswith("_")}


# ----------------------------------------------------------------------------------------------------------------
# AutoencoderKL <-> RadioVAE
def test_export_folder_loads_as_autoencoder_kl_with_the_same_outputs(tmp_path):
    vae = small_f4()
    vae.to_autoencoder_kl().save_pretrained(tmp_path / "kl")
    config = json.loads((tmp_path / "kl" / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderKL"
    assert config["down_block_types"] == ["DownEncoderBlock2D"] * 3 and config["up_block_types"] == ["UpDecoderBlock2D"] * 3
    assert config["scaling_factor"] == 0.5 and config["latent_channels"] == 3

    autoencoder = AutoencoderKL.from_pretrained(tmp_path / "kl").eval()
    assert_same_outputs(vae, autoencoder)
    mean = encode_decode(autoencoder)[0]
    assert mean.shape == (2, 3, SIZE // 4, SIZE // 4)

    back = RadioVAE.from_autoencoder_kl(tmp_path / "kl").eval()
    assert public_config(back) == public_config(vae)
    assert_same_outputs(back, vae)


def test_import_of_an_autoencoder_kl_and_back():
    torch.manual_seed(1)
    autoencoder = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=3,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=2,
        norm_num_groups=8,
        sample_size=SIZE,
    ).eval()
    vae = RadioVAE.from_autoencoder_kl(autoencoder)
    assert not vae.training and vae.downsample_factor == 4 and vae.config.scaling_factor == autoencoder.config.scaling_factor
    assert_same_outputs(vae, autoencoder)
    again = vae.to_autoencoder_kl()
    assert public_config(again) == public_config(autoencoder)
    for name, tensor in autoencoder.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_export_refuses_what_autoencoder_kl_cannot_build():
    with pytest.raises(ValueError, match=r"upsample_type='conv_transpose' \(needs 'nearest'\).*num_downsamples=3"):
        RadioVAE.from_preset("tiny").to_autoencoder_kl()
    with pytest.raises(ValueError, match="decoder_layers_per_block=2 \\(needs 3\\)"):
        small_f4().__class__.from_preset(
            "radiodiff-ldm-f4", block_out_channels=(32, 64, 128), norm_num_groups=8, decoder_layers_per_block=2
        ).to_autoencoder_kl()
    config = dict(small_f4().to_autoencoder_kl().config)
    config["down_block_types"] = ["DownEncoderBlock2D", "DownBlock2D", "DownEncoderBlock2D"]
    with pytest.raises(ValueError, match="down_block_types must be 3 x 'DownEncoderBlock2D'.*got"):
        radio_vae_config_of_autoencoder_kl(config)
    with pytest.raises(ValueError, match="expects a diffusers.AutoencoderKL, a folder or a Hub id, got int"):
        RadioVAE.from_autoencoder_kl(3)
    with pytest.raises(FileNotFoundError, match="AutoencoderKL folder './no-kl' does not exist: no such folder"):
        RadioVAE.from_autoencoder_kl("./no-kl")  # refused before any Hub lookup


def test_import_refuses_a_radio_vae_folder(tmp_path):
    small_f4().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a RadioVAE, not an AutoencoderKL: load it with RadioVAE.from_pretrained"):
        RadioVAE.from_autoencoder_kl(tmp_path)


def test_cli_export_diffusers(tmp_path, capsys):
    small_f4().save_pretrained(tmp_path / "radio")
    output = tmp_path / "exported"
    assert main(["export-diffusers", str(tmp_path / "radio"), "--output_dir", str(output)]) == 0
    assert sorted(path.name for path in output.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert_same_outputs(AutoencoderKL.from_pretrained(output).eval(), small_f4())
    # a second export needs --overwrite; the report's layout is refused before anything is written
    assert main(["export-diffusers", str(tmp_path / "radio"), "--output_dir", str(output)]) == 2
    assert "is not empty; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    RadioVAE.from_preset("tiny").save_pretrained(tmp_path / "report")
    assert main(["export-diffusers", str(tmp_path / "report"), "--output_dir", str(tmp_path / "no")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("radiodiff-vae export-diffusers: error: This RadioVAE cannot be expressed")
    assert not (tmp_path / "no").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------------------------------------------
# the config that diffusers pipelines read
def test_pipeline_config_keys_and_compression_ratio(tmp_path):
    vae = RadioVAE.from_preset("tiny")
    assert vae.spatial_compression_ratio == 8 == vae.downsample_factor
    # What pipelines compute from an AutoencoderKL config is wrong here; hence spatial_compression_ratio.
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 4
    assert small_f4().spatial_compression_ratio == 4
    assert (vae.config.force_upcast, vae.config.shift_factor, vae.config.latents_mean, vae.config.latents_std) == (
        True,
        None,
        None,
        None,
    )
    # A folder saved before these keys existed still loads, with the defaults.
    vae.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("force_upcast", "shift_factor", "latents_mean", "latents_std"):
        config.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = RadioVAE.from_pretrained(tmp_path)
    assert loaded.config.force_upcast is True and loaded.config.latents_mean is None
    # A VaeImageProcessor built with the right factor turns a 70x70 map into one encode accepts.
    processor = VaeImageProcessor(vae_scale_factor=vae.spatial_compression_ratio)
    batch = processor.preprocess(torch.rand(1, 1, 70, 70))
    assert batch.shape == (1, 1, 64, 64)
    assert vae.encode(batch).latent_dist.mean.shape == (1, 3, 8, 8)


class LatentMapPipeline(DiffusionPipeline):
    """Unconditional latent diffusion of radio maps: DDPM sampling in a RadioVAE's latent space, then decoding."""

    model_cpu_offload_seq = "unet->vae"

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler, vae: RadioVAE):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae)
        self.vae_scale_factor = vae.spatial_compression_ratio
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @torch.no_grad()
    def __call__(self, batch_size=1, height=None, width=None, num_inference_steps=2, generator=None, output_type="pt"):
        height = height or self.vae.config.sample_size
        width = width or self.vae.config.sample_size
        shape = (batch_size, self.vae.config.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps)
        for timestep in self.progress_bar(self.scheduler.timesteps):
            noise = self.unet(latents, timestep).sample
            latents = self.scheduler.step(noise, timestep, latents, generator=generator).prev_sample
        # The SDXL pipelines' latent handling, key by key.
        config = self.vae.config
        if config.latents_mean is not None and config.latents_std is not None:
            mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1)
            std = torch.tensor(config.latents_std).view(1, -1, 1, 1)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor + (config.shift_factor or 0.0)
        if self.vae.dtype == torch.float16 and config.force_upcast:
            self.vae.to(torch.float32)
        maps = self.vae.decode(latents.to(self.vae.dtype)).sample
        return ImagePipelineOutput(images=self.image_processor.postprocess(maps, output_type=output_type))


def test_radio_vae_inside_a_diffusers_pipeline_runs_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=SIZE, scaling_factor=0.7).eval()
    latent_size = SIZE // vae.spatial_compression_ratio
    unet = UNet2DModel(
        sample_size=latent_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    )
    pipeline = LatentMapPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10), vae=vae)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=2, generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 1, SIZE, SIZE) and 0 <= images.min() and images.max() <= 1

    pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["vae"] == ["radiodiff_vae.models.autoencoder_radio", "RadioVAE"]
    loaded = LatentMapPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.vae, RadioVAE) and loaded.vae.config.scaling_factor == 0.7
    again = loaded(batch_size=2, generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(again, images, rtol=0, atol=1e-6)
    # The VAE alone loads from the pipeline folder too.
    assert isinstance(RadioVAE.from_pretrained(tmp_path, subfolder="vae"), RadioVAE)


# ----------------------------------------------------------------------------------------------------------------
# drop-in details: what code written against AutoencoderKL sees
def test_a_folder_with_only_an_fp16_variant_fails_as_for_autoencoder_kl(tmp_path):
    """Loaded without variant=, both classes raise diffusers' EnvironmentError with diffusers' wording."""
    small_f4().save_pretrained(tmp_path / "radio", variant="fp16")
    small_f4().to_autoencoder_kl().save_pretrained(tmp_path / "kl", variant="fp16")
    messages = {}
    for name, model_class in (("radio", RadioVAE), ("kl", AutoencoderKL)):
        with pytest.raises(EnvironmentError) as caught:
            model_class.from_pretrained(tmp_path / name)
        assert type(caught.value) is OSError  # diffusers' own type, not a subclass of this package
        messages[name] = str(caught.value).replace(str(tmp_path / name), "FOLDER")
    expected = "Error no file named diffusion_pytorch_model.bin found in directory FOLDER."
    assert messages["radio"] == messages["kl"] == expected
    loaded = RadioVAE.from_pretrained(tmp_path / "radio", variant="fp16").state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in small_f4().state_dict().items())


def test_out_of_range_warning_points_at_the_callers_line():
    vae = small_f4()
    pixels = torch.randint(0, 256, (1, 1, SIZE, SIZE)).float()  # 0..255, not [-1, 1]
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        vae.encode(pixels)
        encode_line = inspect.currentframe().f_lineno - 1
        vae(pixels)
        forward_line = inspect.currentframe().f_lineno - 1
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, encode_line), (__file__, forward_line)]
    assert "it expects [-1, 1]" in str(caught[0].message)


# ----------------------------------------------------------------------------------------------------------------
def _package_imports() -> dict:
    """``{module: modules of the package it imports}``, counting imports deferred into functions and the modules
    that lazy exports name (``"radiodiff_vae.models.autoencoder_radio"``)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in modules.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".")
                if not node.level:
                    base = node.module or ""
                imported |= {base} | {f"{base}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
                imported.add(node.value)  # a lazy export; the bare "radiodiff_vae" is a resource package, not one
        graph[module] = sorted(name for name in imported if name in modules and name != module)
    return graph


def test_the_package_has_no_import_cycle():
    """Every layer imports only below it. models/ may render its card (hub.model_card, for push_to_hub) because
    the card reads the presets from models/presets.py, which imports nothing of the package."""
    graph = _package_imports()
    assert "radiodiff_vae.hub.model_card" in graph["radiodiff_vae.models.autoencoder_radio"]
    assert graph["radiodiff_vae.models.presets"] == []
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for imported in graph[module]:
            if state.get(imported) == "open":
                cycles.append(path[path.index(imported) :] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert cycles == []
