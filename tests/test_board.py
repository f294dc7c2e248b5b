"""Cross-compile for arm64 and run on the emulated ARM64 board (qemu user mode, aarch64 Python)
through edgepack.devices.QemuDevice: the same worker and session modules as on the host.

The first run builds the board under ~/.cache/edgepack/board (apt installs of qemu-user-static
and the aarch64 cross toolchain when missing, ~75 MB of arm64 Debian packages, ~150 MB of aarch64
wheels: about 30-60 s here); later runs reuse it. Emulated times are checked to be labelled as
such, never compared with anything.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.board  # make test-fast leaves these out

pytest.importorskip("tvm")

from edgepack.backends.tvm import TvmBackend  # noqa: E402
from edgepack.board import ensure_board  # noqa: E402
from edgepack.devices import QemuDevice, for_artifact  # noqa: E402
from edgepack.errors import EdgepackError  # noqa: E402
from edgepack.frontends import load_source  # noqa: E402
from edgepack.ir.canonical import canonicalize  # noqa: E402
from edgepack.ir.spec import graph_inputs  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402


@pytest.fixture(scope="module")
def board():
    return ensure_board()


@pytest.fixture(scope="module")
def device(board):
    return QemuDevice(board)


@pytest.fixture(scope="module")
def small_cnn():
    import torch

    from edgepack.models.mnist_cnn import MnistCNN

    torch.manual_seed(0)
    model, _ = canonicalize(load_source(MnistCNN(width=8).eval(), {"": (1, 1, 28, 28)}).model)
    return model


@pytest.fixture(scope="module")
def feeds(small_cnn):
    name = graph_inputs(small_cnn)[0].name
    return {name: np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)}


@pytest.fixture(scope="module")
def reference(small_cnn, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(small_cnn.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_board_is_aarch64_and_reused(board):
    proc = board.run_python("import platform, sys; print(platform.machine(), sys.version_info[:2])", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "aarch64"
    again = ensure_board(board.root)  # built: only stamps are checked
    assert again.setup_s == 0 and again.root == board.root


def test_arm64_tvm_artifact_runs_on_board(device, small_cnn, feeds, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPACK_TVM_CACHE", str(tmp_path / "tvm-cache"))
    arm64 = load_profile("arm64")
    tvm = TvmBackend(arm64.backend_options("tvm"))  # the profile's TVM options name the aarch64 target
    path = tvm.emit(small_cnn, tmp_path, arm64)
    info = tvm.describe(path)
    assert info["cross_compiled"] and info["target_triple"] == "aarch64-linux-gnu"
    assert "+neon" in info["target"]["mattr"] and info["tuned"] is False
    assert open(path, "rb").read(20)[18] == 0xB7  # ELF e_machine EM_AARCH64

    with pytest.raises(EdgepackError, match="aarch64 artifact: run it on the board"):
        tvm.load(path, 1)

    found = for_artifact("tvm", path)  # the backend says cross-compiled: the board, not this host
    assert isinstance(found, QemuDevice) and found.latency_is_real is False

    timed = device.time("tvm", path, [feeds], runs=2, progress=False)
    assert timed["emulated"] is True and "latency_ms" not in timed
    assert "not its speed" in timed["note"]
    assert timed["emulated_ms"]["runs"] == 2 and timed["emulated_ms"]["first"] > 0
    assert [o["shape"] for o in timed["outputs"]] == [list(r.shape) for r in reference]

    (result,) = device.outputs("tvm", path, [feeds])
    assert len(result) == len(reference)
    assert float(np.abs(result[0] - reference[0]).max()) <= 1e-4


def test_onnx_artifact_runs_on_board(device, small_cnn, feeds, reference, tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(small_cnn, str(path))
    (result,) = device.outputs("onnxruntime", path, [feeds])
    assert float(np.abs(result[0] - reference[0]).max()) <= 1e-4


def test_arm64_tflite_artifact_runs_on_board(device, small_cnn, feeds, reference, tmp_path):
    """The NHWC .tflite made for arm64 runs on the aarch64 LiteRT and matches ONNX Runtime: the
    sidecar travels with it and the session module maps the layouts there as it does here."""
    from edgepack.backends import get_backend
    from edgepack.targets import load_profile

    path = get_backend("tflite").emit(small_cnn, tmp_path, load_profile("arm64"), precision="fp32")
    (result,) = device.outputs("tflite", path, [feeds])
    assert result[0].shape == reference[0].shape
    assert float(np.abs(result[0] - reference[0]).max()) <= 1e-4


def test_board_errors_are_one_line(device, tmp_path):
    with pytest.raises(EdgepackError, match="unknown backend 'coreml'"):
        device.outputs("coreml", tmp_path / "x", [{}])
    with pytest.raises(EdgepackError, match="no such file"):
        device.outputs("tvm", tmp_path / "missing.so", [{}])
    broken = tmp_path / "model.so"
    broken.write_bytes(b"not a library")
    with pytest.raises(EdgepackError, match="emulated board: tvm artifact model.so failed") as e:
        device.outputs("tvm", broken, [{"x": np.zeros(1, np.float32)}])
    assert "\n" not in str(e.value)
