from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# onnxruntime 1.32 leaves a telemetry file in the temp folder on import unless this is set; onnxviz sets it
# itself, but some tests import onnxruntime before onnxviz does.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import models  # noqa: E402


@pytest.fixture
def save(tmp_path: Path):
    """Save a ModelProto under tmp_path and return the path."""

    def _save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save_model(model, path)
        return path

    return _save


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """The bundled real photograph."""
    from onnxviz.demo import demo_image

    return demo_image()


@pytest.fixture
def rgb_image(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """A small real dataset (dataset mode): 40 crops of scikit-image's photographs, no download."""
    require_in_ci("skimage")
    from onnxviz.datasets.sample import write_sample

    folder = tmp_path_factory.mktemp("photos") / "set"
    write_sample(folder, count=40, max_side=96)
    return folder


def require_in_ci(module: str):
    """Skip locally when an optional test dependency is missing, but fail in CI."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{module} not installed")


__all__ = ["models", "require_in_ci"]


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (extended cases; ONNXVIZ_SLOW=1 does the same)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("ONNXVIZ_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow extended case: run with --runslow or ONNXVIZ_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_resnet_onnx(tmp_path_factory):
    """The ResNet-shaped torch miniature of tests/cam_models.py (ending in a Softmax, 10 classes)
    and its ONNX export at 64×64, shared by the explanation tests (one export per session)."""
    torch = pytest.importorskip("torch")
    from cam_models import tiny_resnet

    from onnxviz.converters import convert

    net = tiny_resnet(softmax=True)
    path = tmp_path_factory.mktemp("tiny-resnet") / "tiny.onnx"
    convert(net, path, example_inputs=torch.randn(1, 3, 64, 64))
    return net, path
