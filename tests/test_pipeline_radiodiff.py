"""The construction pipelines (radiodiff_vae.pipelines): RadioDiffPipeline (latent diffusion on a tiny-f4 VAE at
32 x 32) and RadioUNetPipeline (the direct baseline): output types and shapes, determinism under a generator, one
and several sampling steps for each prediction type, other schedulers, bf16, save/load round trips (also through
the package's lazy exports and the Hub), bad input before any model work, the card and the Hub upload."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler
from huggingface_hub import ModelCard
from PIL import Image

from radiodiff_vae import CityEncoder, RadioDiffPipeline, RadioMapPipelineOutput, RadioUNetPipeline, RadioVAE
from radiodiff_vae.data.conventions import model_to_unit
from radiodiff_vae.errors import CityInputError, InvalidArgumentError
from radiodiff_vae.models.city_encoder import FEATURE_NAMES
from radiodiff_vae.pipelines.radiodiff import default_scheduler, diffusion_target

SIZE = 32
POSITIONS = [(3, 4), (20, 27)]


def _buildings() -> torch.Tensor:
    buildings = torch.zeros(2, 1, SIZE, SIZE)
    buildings[0, 0, 8:16, 10:20] = 1
    buildings[1, 0, 20:, :12] = 1
    return buildings


def _pipeline(prediction_type: str = "v_prediction", **kwargs) -> RadioDiffPipeline:
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny-f4", sample_size=SIZE)
    pipe = RadioDiffPipeline.from_vae(
        vae, unet_block_out_channels=(32, 64), layers_per_block=1, city_channels=8, ray_samples=8,
        prediction_type=prediction_type, **kwargs,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe() -> RadioDiffPipeline:
    return _pipeline()


def _run(pipe, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    options = {"num_inference_steps": 2, "output_type": "pt", **kwargs}
    return pipe(_buildings(), POSITIONS, generator=generator, **options)


def test_built_pipeline_components(pipe):
    assert pipe.size_divisor == 8  # VAE 4 x UNet 2
    assert pipe.unet.config.in_channels == 3 + 8 and pipe.unet.config.out_channels == 3
    assert pipe.city_encoder.config.downsample_factor == 4 and not pipe.unet.training
    assert not pipe.vae.training and not any(parameter.requires_grad for parameter in pipe.vae.parameters())
    assert pipe.config.default_num_inference_steps == 4
    config = pipe.scheduler.config
    assert (config.prediction_type, config.timestep_spacing, config.clip_sample) == ("v_prediction", "trailing", False)
    assert config.rescale_betas_zero_snr and not default_scheduler("epsilon").config.rescale_betas_zero_snr


def test_output_types_and_shapes(pipe):
    pt = _run(pipe).images
    assert isinstance(pt, torch.Tensor) and pt.shape == (2, 1, SIZE, SIZE) and pt.dtype == torch.float32
    assert 0 <= pt.min() and pt.max() <= 1
    array = _run(pipe, output_type="np").images
    assert isinstance(array, np.ndarray) and array.shape == (2, SIZE, SIZE, 1) and array.dtype == np.float32
    np.testing.assert_allclose(array[..., 0], pt[:, 0].numpy(), atol=1e-6)
    images = _run(pipe, output_type="pil").images
    assert [(image.mode, image.size) for image in images] == [("L", (SIZE, SIZE))] * 2
    assert np.array_equal(np.asarray(images[1]), np.round(array[1, ..., 0] * 255).astype(np.uint8))
    as_tuple = _run(pipe, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], pt)
    assert isinstance(_run(pipe), RadioMapPipelineOutput)
    # One building map for several transmitters; antenna images as PIL.
    antennas = [Image.fromarray((np.arange(SIZE * SIZE).reshape(SIZE, SIZE) == 3 * SIZE + 4).astype(np.uint8) * 255)]
    single = pipe(_buildings()[0, 0].numpy(), antennas, num_inference_steps=1, output_type="np").images
    assert single.shape == (1, SIZE, SIZE, 1)


def test_determinism_under_a_generator(pipe):
    first, again, other = _run(pipe, seed=3).images, _run(pipe, seed=3).images, _run(pipe, seed=4).images
    assert torch.equal(first, again) and not torch.equal(first, other)
    # A list of generators, one per map, draws each map's noise from its own generator.
    generators = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(9)]
    listed = pipe(_buildings(), POSITIONS, num_inference_steps=2, generator=generators, output_type="pt").images
    generators = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(9)]
    assert torch.equal(listed, pipe(_buildings(), POSITIONS, 2, generators, output_type="pt").images)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_one_and_several_steps_for_each_prediction_type(prediction_type):
    pipe = _pipeline(prediction_type)
    noise = torch.randn(2, 3, SIZE // 4, SIZE // 4, generator=torch.Generator().manual_seed(1))
    for steps in (1, 3):
        maps = pipe(_buildings(), POSITIONS, num_inference_steps=steps, latents=noise, output_type="pt").images
        assert maps.shape == (2, 1, SIZE, SIZE) and bool(maps.isfinite().all()) and 0 <= maps.min() <= maps.max() <= 1
    # One step starts at the last training timestep; with x0 ("sample") prediction it returns the model's prediction.
    pipe.scheduler.set_timesteps(1)
    assert pipe.scheduler.timesteps.tolist() == [999]
    if prediction_type == "sample":
        with torch.no_grad():
            buildings, transmitter = pipe.prepare_city(_buildings(), POSITIONS)
            prediction = pipe.denoise(noise, 999, pipe.city_encoder(buildings, transmitter))
            expected = pipe.decode_latents(prediction)
        one_step = pipe(_buildings(), POSITIONS, num_inference_steps=1, latents=noise, output_type="pt").images
        assert torch.equal(one_step, expected * (1 - buildings))
        # mask_buildings=False returns what the VAE decodes inside buildings too.
        unmasked = pipe(
            _buildings(), POSITIONS, num_inference_steps=1, latents=noise, output_type="pt", mask_buildings=False
        ).images
        assert torch.equal(unmasked, expected) and bool((unmasked[buildings.bool()] > 0).any())
        assert torch.equal(one_step[buildings.bool()], torch.zeros_like(one_step[buildings.bool()]))


def test_training_targets():
    latents, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    timesteps = torch.tensor([10, 900])
    assert torch.equal(diffusion_target(default_scheduler("epsilon"), latents, noise, timesteps), noise)
    assert torch.equal(diffusion_target(default_scheduler("sample"), latents, noise, timesteps), latents)
    scheduler = default_scheduler("v_prediction")
    alphas = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    expected = alphas.sqrt() * noise - (1 - alphas).sqrt() * latents
    torch.testing.assert_close(diffusion_target(scheduler, latents, noise, timesteps), expected)


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, EulerDiscreteScheduler])
def test_other_schedulers(scheduler_class):
    scheduler = scheduler_class(prediction_type="epsilon", timestep_spacing="trailing")
    pipe = _pipeline(scheduler=scheduler)
    for steps in (1, 3):
        first = _run(pipe, num_inference_steps=steps).images  # DDPM draws noise at each step: from the generator
        assert torch.equal(first, _run(pipe, num_inference_steps=steps).images) and bool(first.isfinite().all())


def test_save_load_round_trip_and_bf16(pipe, tmp_path):
    pipe.register_to_config(default_num_inference_steps=2)
    try:
        pipe.save_pretrained(tmp_path / "pipe")
    finally:
        pipe.register_to_config(default_num_inference_steps=4)
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["vae"] == ["radiodiff_vae", "RadioVAE"] and index["city_encoder"] == ["radiodiff_vae", "CityEncoder"]
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["default_num_inference_steps"] == 2
    loaded = RadioDiffPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.default_num_inference_steps == 2 and isinstance(loaded.city_encoder, CityEncoder)
    assert torch.equal(_run(loaded).images, _run(pipe).images)
    assert torch.equal(loaded(_buildings(), POSITIONS, output_type="pt", generator=torch.Generator().manual_seed(0))
                       .images, _run(pipe, num_inference_steps=2).images)  # fmt: skip

    half = RadioDiffPipeline.from_pretrained(tmp_path / "pipe", torch_dtype=torch.bfloat16)
    half.set_progress_bar_config(disable=True)
    assert half.unet.dtype == half.vae.dtype == half.city_encoder.dtype == torch.bfloat16
    maps = _run(half).images
    assert maps.dtype == torch.float32 and maps.shape == (2, 1, SIZE, SIZE) and 0 <= maps.min() <= maps.max() <= 1
    assert (maps - _run(pipe).images).abs().mean() < 0.1  # bf16 rounding, not another model


def test_model_index_resolves_through_the_lazy_exports(pipe, tmp_path, monkeypatch):
    """diffusers resolves ["radiodiff_vae", "CityEncoder"] with getattr(radiodiff_vae, ...): the package's lazy
    __getattr__ must answer it (and "ModelMixin", whose loading method diffusers then uses) as in a fresh process."""
    import radiodiff_vae

    for name in ("RadioVAE", "CityEncoder", "ModelMixin"):
        monkeypatch.delattr(radiodiff_vae, name, raising=False)  # drop the values cached by earlier look-ups
    assert "ModelMixin" not in dir(radiodiff_vae) and "CityEncoder" in dir(radiodiff_vae)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = RadioDiffPipeline.from_pretrained(tmp_path / "pipe")
    assert type(loaded.city_encoder) is CityEncoder and type(loaded.vae) is RadioVAE
    assert "CityEncoder" in vars(radiodiff_vae)  # looked up through the lazy exports


def test_component_checks():
    pipe = _pipeline()
    other_vae = RadioVAE.from_preset("tiny", sample_size=SIZE)  # 8x, 3 latent channels
    with pytest.raises(InvalidArgumentError, match="city encoder's downsample_factor is 4; expected the VAE's 8"):
        RadioDiffPipeline(other_vae, pipe.unet, pipe.city_encoder, pipe.scheduler)
    wide = CityEncoder(out_channels=12, block_out_channels=(8, 8), downsample_factor=4)
    with pytest.raises(InvalidArgumentError, match=r"takes 11 input channels; expected .* 3 latent channels \+ the"):
        RadioDiffPipeline(pipe.vae, pipe.unet, wide, pipe.scheduler)
    with pytest.raises(InvalidArgumentError, match="unet must be a UNet2DModel, got CityEncoder"):
        RadioDiffPipeline(pipe.vae, wide, wide, pipe.scheduler)
    with pytest.raises(InvalidArgumentError, match="num_inference_steps must be between 1 and"):
        RadioDiffPipeline(pipe.vae, pipe.unet, pipe.city_encoder, pipe.scheduler, default_num_inference_steps=0)


def test_bad_input_fails_before_any_model_work(pipe, monkeypatch):
    def no_model_work(*args, **kwargs):
        raise AssertionError("a model ran before the input was checked")

    for module in (pipe.unet, pipe.city_encoder, pipe.vae):
        monkeypatch.setattr(module, "forward", no_model_work)
    monkeypatch.setattr(pipe.vae, "decode", no_model_work)
    cases = [
        (torch.zeros(2, 1, 36, 36), POSITIONS, "size divisor 8 \\(VAE 4 x UNet 2\\): expected multiples of 8; "
         "nearest valid sizes: height 32 or 40"),
        (_buildings(), [(3, 4), (40, 0)], "transmitter 1 at \\(row 40, col 0\\) is outside the 32x32 map"),
        (_buildings() * 0.5, POSITIONS, "expected a binary building mask"),
        (_buildings(), POSITIONS * 2, "batch mismatch: 2 building maps but 4 transmitter positions"),
    ]
    for buildings, transmitters, message in cases:
        with pytest.raises(CityInputError, match=message):
            pipe(buildings, transmitters)
    with pytest.raises(InvalidArgumentError, match="output_type must be one of"):
        pipe(_buildings(), POSITIONS, output_type="latent")
    with pytest.raises(InvalidArgumentError, match="num_inference_steps must be between 1 and"):
        pipe(_buildings(), POSITIONS, num_inference_steps=0)
    with pytest.raises(InvalidArgumentError, match="latents: expected shape"):
        pipe(_buildings(), POSITIONS, latents=torch.zeros(2, 3, 4, 4))


def test_direct_pipeline(tmp_path):
    torch.manual_seed(0)
    direct = RadioUNetPipeline.from_sizes(sample_size=SIZE, unet_block_out_channels=(32, 64), layers_per_block=1,
                                          ray_samples=8)  # fmt: skip
    assert direct.city_encoder.config.out_channels == direct.unet.config.in_channels == len(FEATURE_NAMES)
    assert direct.city_encoder.learned_channels == 0 and direct.size_divisor == 2
    maps = direct(_buildings(), POSITIONS, output_type="pt").images
    assert maps.shape == (2, 1, SIZE, SIZE) and maps.dtype == torch.float32 and 0 <= maps.min() <= maps.max() <= 1
    with torch.no_grad():
        buildings, transmitter = direct.prepare_city(_buildings(), POSITIONS)
        expected = model_to_unit(direct.predict(buildings, transmitter)).clamp(0, 1)
    assert torch.equal(maps, expected * (1 - buildings))
    assert torch.equal(direct(_buildings(), POSITIONS, output_type="pt", mask_buildings=False).images, expected)
    assert direct(_buildings(), POSITIONS, output_type="np").images.shape == (2, SIZE, SIZE, 1)

    direct.save_pretrained(tmp_path / "direct")
    index = json.loads((tmp_path / "direct" / "model_index.json").read_text())
    assert index["city_encoder"] == ["radiodiff_vae", "CityEncoder"] and "vae" not in index
    loaded = RadioUNetPipeline.from_pretrained(tmp_path / "direct")
    assert torch.equal(loaded(_buildings(), POSITIONS, output_type="pt").images, maps)
    half = RadioUNetPipeline.from_pretrained(tmp_path / "direct", torch_dtype=torch.bfloat16)
    half_maps = half(_buildings(), POSITIONS, output_type="pt").images
    assert half_maps.dtype == torch.float32 and 0 <= half_maps.min() <= half_maps.max() <= 1

    with pytest.raises(InvalidArgumentError, match="downsample_factor must be 1, got 4"):
        RadioUNetPipeline(direct.unet, CityEncoder(out_channels=len(FEATURE_NAMES), downsample_factor=4))
    with pytest.raises(CityInputError, match="size divisor 2 \\(UNet 2\\)"):
        direct(torch.zeros(1, 31, 31), [(0, 0)])


METRICS = {
    "pipeline": {"nmse": 0.0123, "rmse": 0.051, "psnr": 25.9, "ssim": 0.81, "rmse_db": 5.1},
    "pipeline_1_step": {"nmse": 0.02, "rmse": 0.06, "psnr": 24.4, "ssim": 0.77},
    "direct": {"nmse": 0.03, "rmse": 0.07, "psnr": 23.1, "ssim": {"mean": 0.7}},
    "log_distance": {"nmse": 0.09, "rmse": 0.166, "psnr": 15.6, "ssim": 0.4},
    "ceiling": {"nmse": 0.004, "rmse": 0.05, "psnr": 30.2, "ssim": 0.93},
    "settings": {"num_images": 64, "split": "test"},
}


def test_model_card_states_the_construction_metrics(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    arguments = {"learning_rate": 1e-4, "hub_token": "x"}
    card_path = pipe.save_model_card(
        tmp_path / "pipe", METRICS, training_args=arguments, eval_dataset="synthetic unseen cities", eval_split="test",
        eval_steps=4,
    )  # fmt: skip
    card = ModelCard.load(card_path)
    assert card.data.library_name == "radiodiff-vae" and "latent-diffusion" in card.data.tags
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert results == METRICS["pipeline"]  # the model-index holds the pipeline's own metrics
    text = card.text
    assert "| method | nmse | rmse | psnr | ssim | rmse_db |" in text
    assert "| pipeline | 0.0123 | 0.051 | 25.9 | 0.81 | 5.1 |" in text
    assert "| pipeline, 1 step | 0.02 | 0.06 | 24.4 | 0.77 |  |" in text
    assert "| direct | 0.03 | 0.07 | 23.1 | 0.7 |  |" in text and "| log_distance | 0.09 |" in text
    assert "| ceiling (VAE reconstruction) | 0.004 |" in text and "settings" not in text
    assert "synthetic unseen cities (split `test`), 4 sampling step(s)" in text
    assert "`learning_rate` | 0.0001" in text and "hub_token" not in text
    assert 'RadioDiffPipeline.from_pretrained("<user>/<model>")' in text and "| `vae` | `RadioVAE` |" in text

    direct = RadioUNetPipeline.from_sizes(sample_size=SIZE, unet_block_out_channels=(32, 64), layers_per_block=1)
    direct_card = ModelCard(direct.save_model_card(tmp_path / "pipe", {"psnr": 23.1}).read_text())
    assert "direct radio-map predictor" in direct_card.text and "| pipeline | 23.1 |" in direct_card.text
    with pytest.raises(InvalidArgumentError, match="metrics must be a mapping"):
        pipe.save_model_card(tmp_path / "pipe", [1, 2])


def test_push_to_hub_uploads_folder_and_card_in_one_commit(pipe, hub, hub_endpoint, tmp_path, monkeypatch):
    from huggingface_hub import hf_api

    # diffusers' pipeline download asks the module-level HfApi, made at import with the default endpoint
    monkeypatch.setattr(hf_api.api, "endpoint", hub_endpoint)
    commit = pipe.push_to_hub("test-user/radiodiff-tiny", metrics=METRICS, token=False, eval_steps=2)
    files = hub.repos[("model", "test-user/radiodiff-tiny")].resolve(commit.oid).files
    assert {"model_index.json", "README.md", "vae/config.json", "unet/config.json", "city_encoder/config.json",
            "scheduler/scheduler_config.json"} <= set(files)  # fmt: skip
    assert "| pipeline | 0.0123 |" in files["README.md"].decode()
    assert 'from_pretrained("test-user/radiodiff-tiny")' in files["README.md"].decode()
    downloaded = RadioDiffPipeline.from_pretrained("test-user/radiodiff-tiny", cache_dir=tmp_path / "cache")
    downloaded.set_progress_bar_config(disable=True)
    assert torch.equal(_run(downloaded).images, _run(pipe).images)
    with pytest.raises(FileNotFoundError, match="RadioDiffPipeline folder './no/such/run' does not exist"):
        RadioDiffPipeline.from_pretrained("./no/such/run")
