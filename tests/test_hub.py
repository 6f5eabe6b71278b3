"""Model card, Hub upload and download, offline reload: against the in-memory Hub of tests/hub_server.py.

Upload and download run in this process with huggingface_hub's endpoint constants pointed at the test Hub; the
offline reload runs in a fresh interpreter with ``HF_HUB_OFFLINE=1`` in its environment, as a user runs it.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file

from radiodiff_vae import RadioVAE
from radiodiff_vae.hub import render_model_card, save_model_card
from radiodiff_vae.hub.model_card import template_path

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "test-user/radio-vae"
WEIGHTS = "diffusion_pytorch_model.safetensors"


def _tiny_vae(seed: int) -> RadioVAE:
    torch.manual_seed(seed)
    return RadioVAE.from_preset("tiny", sample_size=32)


def _sample_png(path: Path) -> Path:
    Image.new("L", (12, 8), color=200).save(path)
    return path


# ---------------------------------------------------------------------------------------------------- model card
def test_model_card_metadata_and_sections():
    vae = _tiny_vae(0)
    args = argparse.Namespace(
        learning_rate=5e-6, max_train_steps=150000, hub_token="hf_secret", dataset_name="radiomapseer"
    )
    metrics = {"psnr": torch.tensor([30.0, 34.0]), "ssim": {"mean": 0.5, "std": 0.1}, "rmse_db": 2.25}
    text = render_model_card(vae, args, metrics, "sample.png", repo_id=REPO_ID)

    card = ModelCard(text)
    # huggingface_hub's own parsing of the metadata: a malformed model-index raises here.
    metadata = card.data.to_dict()
    model_name, eval_results = model_index_to_eval_results(metadata["model-index"])
    assert [(result.metric_type, result.task_type) for result in eval_results][0] == ("psnr", "image-to-image")
    assert ModelCardData(**metadata).eval_results == eval_results
    assert card.data.library_name == "radiodiff-vae"
    assert "radio-map" in card.data.tags and "vae" in card.data.tags
    assert card.data.datasets == ["radiomapseer"]
    assert sorted(card.data.metrics) == ["psnr", "rmse_db", "ssim"]
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert results == {"psnr": 32.0, "ssim": 0.5, "rmse_db": 2.25}  # tensor averaged, summary mean taken
    assert "hf_secret" not in text  # tokens never reach a public card
    assert "| preset | `tiny` |" in text
    assert "3 x 4 x 4 at 32 x 32" in text  # tiny preset, f8, sample_size 32
    assert "| `learning_rate` | 5e-06 |" in text and "| `max_train_steps` | 150000 |" in text
    assert "![inputs, reconstructions and error](sample.png)" in text
    assert f'RadioVAE.from_pretrained("{REPO_ID}")' in text
    parameter_count = sum(p.numel() for p in vae.parameters())
    assert f"{parameter_count / 1e6:.2f} M" in text
    sections = ("## Architecture", "## Training configuration", "## Evaluation", "## How to load", "## Limitations")
    for section in sections:
        assert section in text
    assert "@article{wang2025radiodiff" in text and "yapar2022radiomapseer" in text


def test_model_card_without_extras_and_converted_preset():
    config = RadioVAE.from_preset("radiodiff-ldm-f4", scaling_factor=0.3).config
    text = render_model_card(config)
    assert ModelCard(text).data.eval_results is None
    assert "| preset | `radiodiff-ldm-f4` |" in text and "| `scaling_factor` | 0.3 |" in text
    assert "3 x 80 x 80 at 320 x 320" in text
    assert "Not recorded with this checkpoint." in text and "No sample figure" in text
    assert "0 (model input -1) is -147 dB and 1 (model input +1) is -47 dB" in text
    other_data = render_model_card(config, training_args={"db_range": [-160.0, -60.0]})
    assert "0 (model input -1) is -160 dB and 1 (model input +1) is -60 dB" in other_data


def test_model_card_shows_the_resize_baseline_beside_the_metrics():
    baseline = {"method": "area-resize to 14x14 (196 values ...), bicubic back", "psnr": {"mean": 19.1}, "ssim": 0.52}
    text = render_model_card(_tiny_vae(0).config, metrics={"psnr": 23.0, "ssim": 0.7}, baseline=baseline)
    assert "| metric | value | resize baseline | unit |" in text
    assert "| psnr | 23 | 19.1 | dB |" in text and "| ssim | 0.7 | 0.52 | - |" in text
    assert "area-resize to 14x14" in text and "the PSNR gap, model minus baseline, is +3.90 dB" in text
    # the baseline is context, not a result of this model: the model-index lists the model's metrics only
    assert {result.metric_value for result in ModelCard(text).data.eval_results} == {23.0, 0.7}
    without = render_model_card(_tiny_vae(0).config, metrics={"psnr": 23.0})
    assert "| psnr | 23 | dB |" in without and "resize baseline" not in without


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(metrics={"psnr": "high"}), "metrics\\['psnr'\\] must be a number"),
        (dict(baseline={"psnr": 19.0}), "baseline needs a 'method'"),
        (dict(metrics={"psnr": {"std": 1.0}}), "without 'mean'"),
        (dict(sample_image="/tmp/x.png"), "relative to the card"),
        (dict(training_args=[("lr", 1)]), "training_args must be a mapping"),
        (dict(training_args={"db_range": (-47, -147)}), "db_range"),
    ],
)
def test_model_card_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_model_card(_tiny_vae(0).config, **kwargs)
    with pytest.raises(ValueError, match="missing"):
        render_model_card({"in_channels": 1})


def test_save_model_card_is_atomic_and_checks_first(tmp_path):
    vae = _tiny_vae(0)
    figure = _sample_png(tmp_path / "grid.png")
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_model_card(folder, vae, sample_image=tmp_path / "missing.png")
    with pytest.raises(ValueError, match="must be a number"):
        save_model_card(folder, vae, metrics={"psnr": None}, sample_image=figure)
    assert list(folder.iterdir()) == []  # nothing half-written after either error
    with pytest.raises(NotADirectoryError):
        save_model_card(tmp_path / "nowhere", vae)

    card_path = save_model_card(folder, vae, metrics={"psnr": 31.5}, sample_image=figure)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "grid.png"]
    assert card_path.read_text(encoding="utf-8").count("](grid.png)") == 1
    assert (folder / "grid.png").read_bytes() == figure.read_bytes()


def test_template_ships_inside_the_package():
    path = template_path()
    assert path.parent.name == "templates" and path.parent.parent.name == "radiodiff_vae"
    root_card = REPO_ROOT / "model_card.md"
    assert root_card.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------- Hub round trip
# The offline reload runs the way a user runs it: a fresh interpreter with HF_HUB_OFFLINE=1 in its environment.
_OFFLINE_CLIENT = textwrap.dedent(
    """
    import sys
    from huggingface_hub import constants
    from safetensors.torch import save_file
    from radiodiff_vae import RadioVAE

    assert constants.HF_HUB_OFFLINE, "HF_HUB_OFFLINE=1 did not reach huggingface_hub"
    cache, revision, out = sys.argv[1:4]
    main = RadioVAE.from_pretrained("%(repo)s", cache_dir=cache)
    pinned = RadioVAE.from_pretrained("%(repo)s", revision=revision, cache_dir=cache)
    save_file(main.state_dict(), out + "/offline_main.safetensors")
    save_file(pinned.state_dict(), out + "/offline_pinned.safetensors")
    """
    % {"repo": REPO_ID}
)


def _assert_bitwise_equal(loaded: dict, expected: dict) -> None:
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


@pytest.mark.slow  # a second interpreter
def test_push_download_and_offline_reload(hub, hub_endpoint, tmp_path):
    vae = _tiny_vae(1)
    figure = _sample_png(tmp_path / "sample.png")
    first_weights = {name: tensor.clone() for name, tensor in vae.state_dict().items()}

    first = vae.push_to_hub(
        REPO_ID, training_args={"learning_rate": 5e-6}, metrics={"psnr": 30.5}, sample_image=figure, token=False
    )
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(1.0)  # a second, different commit on main
    second_weights = {name: tensor.clone() for name, tensor in vae.state_dict().items()}
    # The second push uploads a folder as the training script does (huggingface_hub's upload_folder): its own card,
    # checkpoints left out.
    folder = tmp_path / "trained"
    vae.save_pretrained(folder)
    save_model_card(folder, vae, metrics={"psnr": 31.0}, repo_id=REPO_ID)
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.bin").write_bytes(b"\0" * 8)
    second = HfApi(token=False).upload_folder(
        repo_id=REPO_ID, folder_path=folder, commit_message="bias + 1", ignore_patterns=["checkpoint-*/**"]
    )

    # What the Hub holds: one commit per push with config, weights, card and figure; weights and figure in LFS.
    repo = hub.repos[("model", REPO_ID)]
    assert repo.branches["main"] == second.oid != first.oid
    files = repo.resolve(first.oid).files
    assert sorted(files) == [".gitattributes", "README.md", "config.json", WEIGHTS, "sample.png"]
    assert repo.resolve(first.oid).lfs == {WEIGHTS, "sample.png"}  # by .gitattributes, and a binary PNG
    second_commit = repo.resolve(second.oid)
    assert sorted(second_commit.files) == sorted(files) and second_commit.lfs == {WEIGHTS, "sample.png"}
    assert second_commit.files["README.md"] == (folder / "README.md").read_bytes()  # the folder's card, not diffusers'
    assert second_commit.files["sample.png"] == figure.read_bytes()  # kept from the first commit
    uploads = [path for method, path in hub.requests if method == "PUT"]
    assert len(uploads) == 3 and all(path.startswith("/lfs-upload/") for path in uploads)  # 2 weights + 1 figure
    assert ("POST", f"/{REPO_ID}.git/info/lfs/objects/batch") in hub.requests
    assert ("POST", f"/{REPO_ID}.git/info/lfs/objects/verify") in hub.requests
    _assert_bitwise_equal(load_safetensors_bytes(files[WEIGHTS]), first_weights)
    assert files["sample.png"] == figure.read_bytes()
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "radiodiff-vae" and card.data.eval_results[0].metric_value == 30.5
    assert "![inputs, reconstructions and error](sample.png)" in card.text
    assert f'RadioVAE.from_pretrained("{REPO_ID}")' in card.text
    assert json.loads(files["config.json"])["_class_name"] == "RadioVAE"

    # Downloaded into a fresh cache: main is the second push, the pinned revision the first, bit for bit.
    cache = tmp_path / "cache"
    served_before = len(hub.requests)
    _assert_bitwise_equal(RadioVAE.from_pretrained(REPO_ID, cache_dir=cache).state_dict(), second_weights)
    pinned = RadioVAE.from_pretrained(REPO_ID, revision=first.oid, cache_dir=cache)
    _assert_bitwise_equal(pinned.state_dict(), first_weights)
    # The weights came through the resolve redirect from the CDN, and the cache names them by their sha256.
    cdn_downloads = [path for method, path in hub.requests[served_before:] if method == "GET" and path.startswith("/lfs/")]
    assert len(cdn_downloads) == 2
    blobs = {path.name for path in cache.rglob("blobs/*")}
    assert {path.rsplit("/", 1)[1] for path in cdn_downloads} <= blobs

    # Offline with the warm cache, in a fresh interpreter: same weights, and not one request reaches the server.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub.url,  # were anything requested, the server would record it
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        OMP_NUM_THREADS="1",  # as in this process (single_thread): a tiny model on a shared CPU
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    served_before = len(hub.requests)
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_CLIENT, str(cache), first.oid, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"offline reload failed:\n{result.stdout}\n{result.stderr}"
    assert hub.requests[served_before:] == []
    _assert_bitwise_equal(load_file(tmp_path / "offline_main.safetensors"), second_weights)
    _assert_bitwise_equal(load_file(tmp_path / "offline_pinned.safetensors"), first_weights)


def test_hub_rejects_a_card_with_a_malformed_model_index(hub, hub_endpoint, tmp_path):
    """validate-yaml parses the card with huggingface_hub: a model-index without its dataset fails the commit."""
    folder = tmp_path / "model"
    _tiny_vae(0).save_pretrained(folder)
    (folder / "README.md").write_text(
        "---\nmodel-index:\n- name: tiny\n  results:\n  - task: {type: image-to-image}\n"
        "    metrics: [{type: psnr, value: 30.0}]\n---\n# tiny\n"
    )
    api = HfApi(token=False)
    repo_id = api.create_repo("test-user/bad-card", exist_ok=True).repo_id
    head = hub.repos[("model", repo_id)].branches["main"]
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_folder(repo_id=repo_id, folder_path=folder)
    assert hub.repos[("model", repo_id)].branches["main"] == head  # nothing committed


def test_push_checks_input_before_any_request(hub, hub_endpoint, tmp_path):
    served_before = len(hub.requests)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        _tiny_vae(0).push_to_hub("test-user/other", sample_image=tmp_path / "missing.png", token=False)
    with pytest.raises(ValueError, match="metrics\\['psnr'\\] must be a number"):
        _tiny_vae(0).push_to_hub("test-user/other", metrics={"psnr": "high"}, token=False)
    for bad in ("a/b/c", "user/my model", "user/name.git", 7):  # huggingface_hub's validate_repo_id decides
        with pytest.raises(ValueError, match=f"repo_id must be 'user/name' .*, got {bad!r}: Repo"):
            _tiny_vae(0).push_to_hub(bad, token=False)
    assert hub.requests[served_before:] == []
    assert ("model", "test-user/other") not in hub.repos


def test_local_path_or_hub_id(tmp_path):
    from radiodiff_vae.hub_id import local_path_or_hub_id

    assert local_path_or_hub_id(tmp_path, "model folder") == tmp_path
    assert local_path_or_hub_id("user/radiodiff-vae", "model folder") is None  # looked up on the Hub
    for missing in (str(tmp_path / "nowhere"), "./run", "a/b/c", ""):
        with pytest.raises(FileNotFoundError, match=f"model folder {re.escape(repr(missing))} does not exist: no such"):
            local_path_or_hub_id(missing, "model folder")
