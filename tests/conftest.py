"""Fixtures shared by the test modules: one intra-op thread, the in-memory Hub of ``hub_server.py``, and a
TORCH_HOME with a random VGG16 trunk so that LPIPS runs offline."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hub_server import HubServer

VGG16_TRUNK_NAME = "vgg16-397923af.pth"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(file_name: str, module_name: str) -> ModuleType:
    """Imports ``examples/<file_name>`` (a script, not a package module) under ``module_name``."""
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / file_name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def random_vgg16_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose VGG16 trunk is randomly initialised: LPIPS costs and differentiates as with the real
    weights, without a download. Point ``TORCH_HOME`` at it with ``monkeypatch.setenv``."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    state = {f"features.{key}": value for key, value in features.state_dict().items()}
    torch.save(state, home / "hub" / "checkpoints" / VGG16_TRUNK_NAME)
    return home


@pytest.fixture(autouse=True, scope="session")
def one_intra_op_thread():
    """The tests' tensors are small: a second intra-op thread gains nothing, and on a shared 2-core machine (or
    beside the two-process training test) OpenMP threads spin-waiting for each other made modules several times
    slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reset_accelerate_state() -> None:
    """accelerate keeps process-wide singletons; each in-process run builds its own Accelerator."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def fresh_accelerate_state():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


def point_hub_client_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Points this process's huggingface_hub at ``url``.

    huggingface_hub copies ``HF_ENDPOINT`` into its constants when it is imported (earlier, in this process), and
    builds download URLs from them at call time, so the constants are patched; pytest restores them afterwards.
    Xet is disabled, as for any Hub without Xet storage: uploads take the LFS path that the test Hub implements.
    """
    from huggingface_hub import constants, file_download

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    if hasattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE"):  # huggingface_hub < 1.0 reads its own copy
        monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub_endpoint(hub, monkeypatch):
    point_hub_client_at(hub.url, monkeypatch)
    return hub.url
