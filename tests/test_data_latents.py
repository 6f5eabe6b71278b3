"""The construction stage's data: every source yields (buildings, transmitter, map) triplets that the pipelines accept,
with the VAE's splits; LatentRadioMaps (radiodiff_vae.data.latents) encodes each map once, equal to encoding it
directly, and caches the latents in a safetensors file whose fingerprint refuses or replaces a stale one."""

import random
import shutil

import pytest
import torch

from radiodiff_vae import RadioVAE
from radiodiff_vae.data import DataSource, RadioMapSeer, SyntheticRadioMaps, load_radio_dataset, write_synthetic_folder
from radiodiff_vae.data.latents import LatentRadioMaps, dataset_fingerprint, encode_latents, scale_latents, vae_fingerprint
from radiodiff_vae.data.simulation.raytraced import DEFAULT_SIMULATION
from radiodiff_vae.errors import DataError, InvalidArgumentError, StaleLatentCacheError
from radiodiff_vae.pipelines.inputs import prepare_city

pytestmark = pytest.mark.filterwarnings("ignore:split_scheme='radiodiff' reproduces")

SIZE = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Twelve synthetic cities in RadioMapSeer's layout; in the disjoint scheme map 2 is the test split, 5 val."""
    root = tmp_path_factory.mktemp("maps") / "synthetic"
    write_synthetic_folder(root, num_maps=12, num_tx=1, seed=3, resolution=SIZE, show_progress=False)
    # make-raytraced writes the same layout under its own simulation name
    shutil.copytree(root / "gain" / "synthetic", root / "gain" / DEFAULT_SIMULATION)
    return root


@pytest.fixture(scope="module")
def maps():
    return SyntheticRadioMaps(2, 2, seed=0, resolution=SIZE, show_progress=False)


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return RadioVAE.from_preset("tiny-f4", sample_size=SIZE, scaling_factor=0.5, shift_factor=0.1).eval()


def _check_triplets(dataset, count):
    assert len(dataset) == count
    for index in range(len(dataset)):
        item = dataset[index]
        pixel_values, buildings, transmitter = item["pixel_values"], item["buildings"], item["transmitter"]
        assert pixel_values.shape == buildings.shape == transmitter.shape == (1, SIZE, SIZE)
        assert -1 <= pixel_values.min() and pixel_values.max() <= 1
        assert set(buildings.unique().tolist()) <= {0.0, 1.0} and transmitter.sum() == 1 and transmitter.max() == 1
        # The pipelines take a dataset's city as it comes.
        parsed_buildings, parsed_transmitter = prepare_city(buildings, transmitter, divisor=8)
        assert torch.equal(parsed_buildings[0], buildings) and torch.equal(parsed_transmitter[0], transmitter)


def test_every_source_yields_city_triplets_with_the_vae_splits(folder, maps, tmp_path):
    _check_triplets(maps, 4)
    _check_triplets(DataSource(synthetic_maps=1, synthetic_tx=2, resolution=SIZE, show_progress=False).open(), 2)
    every_map = RadioMapSeer(folder, "synthetic", "all")
    _check_triplets(every_map, 12)
    _check_triplets(RadioMapSeer(folder, DEFAULT_SIMULATION, "all"), 12)  # a make-raytraced folder

    # Cities never seen in training are the test split: RadioUNet's disjoint scheme keeps them apart.
    train = RadioMapSeer(folder, "synthetic", "train", split_scheme="disjoint")
    test = load_radio_dataset(folder, split="test", simulation="synthetic", split_scheme="disjoint")
    assert test.map_ids == [2] and not set(train.map_ids) & {2, 5}
    _check_triplets(test, 1)
    source = DataSource(data_dir=str(folder), simulations="synthetic", split_scheme="disjoint")
    assert source.open("val").map_ids == [5]

    # A 🤗 dataset converted from the folder gives the same triplets.
    from radiodiff_vae.data import radiomapseer_to_hf

    radiomapseer_to_hf(folder, "synthetic", split="test", split_scheme="disjoint").save_to_disk(tmp_path / "hf")
    converted = load_radio_dataset(tmp_path / "hf", split=None)
    _check_triplets(converted, 1)
    for key in ("pixel_values", "buildings", "transmitter"):
        assert torch.equal(converted[0][key], test[0][key])


def test_latents_equal_encoding_each_map_directly(maps, vae):
    latents = LatentRadioMaps(maps, vae, batch_size=3, show_progress=False)
    assert len(latents) == 4 and latents.latents.shape == (4, 3, SIZE // 4, SIZE // 4)
    for index in range(4):
        item, source = latents[index], maps[index]
        expected = (vae.encode(source["pixel_values"][None]).latent_dist.mode()[0] - 0.1) * 0.5
        torch.testing.assert_close(item["latents"], expected, atol=1e-5, rtol=1e-5)
        assert item["latents"].dtype == torch.float32 and item["name"] == source["name"]
        for key in ("buildings", "transmitter", "pixel_values"):
            assert torch.equal(item[key], source[key])
    torch.testing.assert_close(scale_latents(encode_latents(vae, maps[0]["pixel_values"][None]), vae.config)[0],
                               latents[0]["latents"], atol=1e-5, rtol=1e-5)  # fmt: skip

    # Scaling is applied when items are read: a measured factor needs no second encoding.
    factor = latents.measure_scaling_factor()
    assert factor == pytest.approx(float(1 / (latents.latents.double() - 0.1).std()))
    latents.set_scaling(factor, shift_factor=0.1)
    scaled = torch.stack([latents[index]["latents"] for index in range(4)]).double()
    assert float(scaled.std()) == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(InvalidArgumentError, match="scaling_factor must be > 0"):
        latents.set_scaling(0.0)


def test_cache_is_read_back_and_a_stale_one_is_refused_or_replaced(maps, vae, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "latents" / "train.safetensors"
    first = LatentRadioMaps(maps, vae, cache_file=cache, show_progress=False)
    assert cache.is_file() and [path.name for path in cache.parent.iterdir()] == ["train.safetensors"]

    encoded = []
    real_encode = LatentRadioMaps._encode
    monkeypatch.setattr(LatentRadioMaps, "_encode", lambda self, *args: encoded.append(1) or real_encode(self, *args))
    again = LatentRadioMaps(maps, vae, cache_file=cache, show_progress=False)
    assert encoded == [] and torch.equal(again.latents, first.latents) and again.names == first.names

    # A new scaling factor is not a new latent: the cache stays valid and items carry the new scale.
    vae.register_to_config(scaling_factor=2.0)
    rescaled = LatentRadioMaps(maps, vae, cache_file=cache, show_progress=False)
    assert encoded == [] and torch.equal(rescaled[1]["latents"], (first.latents[1] - 0.1) * 2.0)

    # Other weights: refused with one line, or encoded again and the file replaced.
    with torch.no_grad():
        vae.encoder.conv_in.bias.add_(0.01)
    with pytest.raises(StaleLatentCacheError, match="was written for another VAE or other maps") as error:
        LatentRadioMaps(maps, vae, cache_file=cache, on_stale="error", show_progress=False)
    assert "\n" not in str(error.value) and "on_stale='recompute'" in str(error.value)
    with caplog.at_level("WARNING"):
        fresh = LatentRadioMaps(maps, vae, cache_file=cache, show_progress=False)
    assert encoded == [1] and "encoding the maps again" in caplog.text
    assert not torch.equal(fresh.latents, first.latents)
    LatentRadioMaps(maps, vae, cache_file=cache, on_stale="error", show_progress=False)  # the new file matches
    assert encoded == [1]

    # Other maps are stale too; so is a file that is no cache.
    other_maps = SyntheticRadioMaps(2, 2, seed=1, resolution=SIZE, show_progress=False)
    assert dataset_fingerprint(other_maps) != dataset_fingerprint(maps)
    with pytest.raises(StaleLatentCacheError, match="another VAE or other maps"):
        LatentRadioMaps(other_maps, vae, cache_file=cache, on_stale="error", show_progress=False)
    cache.write_bytes(b"not a safetensors file")
    with pytest.raises(StaleLatentCacheError, match="is not a latent cache"):
        LatentRadioMaps(maps, vae, cache_file=cache, on_stale="error", show_progress=False)
    LatentRadioMaps(maps, vae, cache_file=cache, show_progress=False)
    assert encoded == [1, 1]


def test_fingerprints_follow_weights_and_files(folder, vae):
    before = vae_fingerprint(vae)
    vae.register_to_config(scaling_factor=3.0)
    assert vae_fingerprint(vae) == before  # the scaling is not part of what the encoder computes
    assert vae_fingerprint(vae.to(torch.bfloat16)) != before
    dataset = RadioMapSeer(folder, "synthetic", "all")
    first = dataset_fingerprint(dataset)
    assert dataset_fingerprint(RadioMapSeer(folder, "synthetic", "all")) == first
    assert dataset_fingerprint(RadioMapSeer(folder, "synthetic", "all", resolution=16)) != first
    gain = folder / "gain" / "synthetic" / "1_0.png"
    gain.write_bytes(gain.read_bytes())  # rewritten: a new modification time
    assert dataset_fingerprint(dataset) != first


def test_flips_encode_the_flipped_maps(maps, vae):
    latents = LatentRadioMaps(maps, vae, flip=True, show_progress=False)
    flipped_map = torch.flip(maps[2]["pixel_values"], dims=(-1,))[None]
    torch.testing.assert_close(latents.flipped_latents[2], encode_latents(vae, flipped_map)[0], atol=1e-5, rtol=1e-5)
    random.seed(0)
    items = [latents[2] for _ in range(8)]
    flipped = [item for item in items if not torch.equal(item["buildings"], maps[2]["buildings"])]
    assert 0 < len(flipped) < 8  # both orientations come up
    for item in flipped:
        assert torch.equal(item["buildings"], torch.flip(maps[2]["buildings"], dims=(-1,)))
        assert torch.equal(item["transmitter"], torch.flip(maps[2]["transmitter"], dims=(-1,)))
        torch.testing.assert_close(item["latents"], scale_latents(latents.flipped_latents[2], vae.config))


def test_bad_arguments(maps, vae, tmp_path):
    flipping = SyntheticRadioMaps(1, 1, resolution=SIZE, flip=True, show_progress=False)
    with pytest.raises(InvalidArgumentError, match="open them with flip=False and pass flip=True to LatentRadioMaps"):
        LatentRadioMaps(flipping, vae, show_progress=False)
    with pytest.raises(InvalidArgumentError, match="on_stale must be one of"):
        LatentRadioMaps(maps, vae, on_stale="ignore")
    with pytest.raises(InvalidArgumentError, match="batch_size must be >= 1"):
        LatentRadioMaps(maps, vae, batch_size=0)
    with pytest.raises(InvalidArgumentError, match="is a folder; expected a .safetensors file path"):
        LatentRadioMaps(maps, vae, cache_file=tmp_path)
    with pytest.raises(DataError, match="no maps"):
        LatentRadioMaps(torch.utils.data.Subset(maps, []), vae)
    latents = LatentRadioMaps(maps, vae, show_progress=False)
    latents.names[0] = "9_9"
    with pytest.raises(DataError, match="item 0 is map 1_0 but its latent was encoded from map 9_9"):
        latents[0]
