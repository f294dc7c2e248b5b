"""The TVM (Relax) emitter on real models and runtimes: parity, untuned reporting, op errors, tuning cache.

Host artifacts only; the cross-compiled arm64 artifact is run on the emulated board in test_board.py.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("tvm")

from edgepack.backends import backend_for_artifact, get_backend  # noqa: E402
from helpers import conv_relu  # noqa: E402
from edgepack.backends.options import TvmOptions  # noqa: E402
from edgepack.backends.tvm import UNTUNED_NOTE, TuningBudget, TvmBackend  # noqa: E402
from edgepack.devices import LocalDevice  # noqa: E402
from edgepack.data import load_dataset  # noqa: E402
from edgepack.errors import EdgepackError  # noqa: E402
from edgepack.frontends import load_source  # noqa: E402
from edgepack.ir.canonical import canonicalize  # noqa: E402
from edgepack.ir.spec import graph_inputs  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402

THREADS = 2


@pytest.fixture(scope="module")
def host():
    return load_profile("host")


@pytest.fixture(scope="module")
def small_cnn():
    """The MNIST CNN (conv-BN-ReLU x3, pools, linear) as a user's torch model becomes canonical ONNX."""
    import torch

    from edgepack.models.mnist_cnn import MnistCNN

    torch.manual_seed(0)
    source = load_source(MnistCNN(width=8).eval(), {"": (1, 1, 28, 28)})
    model, _ = canonicalize(source.model)
    return model


def _ort(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def test_small_cnn_parity_and_fresh_process_benchmark(small_cnn, host, tmp_path, tvm_cache):
    tvm = get_backend("tvm")
    path = tvm.emit(small_cnn, tmp_path, host)
    assert path.name == "model.so" and (tmp_path / "model.json").is_file()
    assert backend_for_artifact(path).name == "tvm"

    name = graph_inputs(small_cnn)[0].name
    x = np.random.default_rng(0).standard_normal((8, 1, 1, 28, 28)).astype(np.float32)
    session, ref = tvm.load(path, THREADS), _ort(small_cnn)
    diff = max(float(np.abs(tvm.run(session, {name: xi})[0] - ref.run(None, {name: xi})[0]).max()) for xi in x)
    assert diff <= 1e-4, diff
    assert [s.name for s in tvm.inputs(session)] == [name]

    info = tvm.describe(path)
    assert info["target_triple"].startswith("x86_64") and not info["cross_compiled"]
    assert info["target"]["kind"] == "llvm" and info["target"]["mcpu"]  # the host CPU, detected

    # the shared fresh-process benchmark loads and times the artifact like any other runtime's
    result = LocalDevice().time("tvm", path, [{name: x[0]}], threads=1, warmup=1, runs=3, progress=False)
    assert result["runs"] == 3 and result["latency_ms"]["p50"] > 0


def test_mobilenet_untuned_parity_on_photos(mobilenet_onnx, sample_sets, host, tmp_path, tvm_cache):
    model, _ = canonicalize(onnx.load(str(mobilenet_onnx)))
    photos = load_dataset(sample_sets["photos"], graph_inputs(model)).inputs["input"][:4]
    tvm = TvmBackend({"tune_seconds": 0})
    path = tvm.emit(model, tmp_path, host)
    session, ref = tvm.load(path, THREADS), _ort(model)
    for x in photos:
        feed = {"input": x[None]}
        out, want = tvm.run(session, feed)[0], ref.run(None, feed)[0]
        assert out.shape == (1, 1000)
        assert float(np.abs(out - want).max()) <= 1e-4
        assert out.argmax() == want.argmax()

    info = tvm.describe(path)
    assert info["tuned"] is False
    assert UNTUNED_NOTE in info["notes"] and "not a deployable result" in UNTUNED_NOTE
    sidecar = (tmp_path / "model.json").read_text()
    assert '"tuned": false' in sidecar


def test_unsupported_op_names_op_and_node(host, tmp_path, tvm_cache):
    # Celu is standard ONNX (opset 12) but TVM 0.27's Relax importer has no converter for it.
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
         helper.make_node("Celu", ["r"], ["y"], name="my_celu", alpha=1.0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    with pytest.raises(EdgepackError, match=r"Celu.*my_celu"):
        TvmBackend().emit(model, tmp_path, host)


def test_int8_is_refused(small_cnn, host, tmp_path, tvm_cache):
    with pytest.raises(EdgepackError, match="TVM INT8 not supported yet"):
        TvmBackend().emit(small_cnn, tmp_path, host, precision="int8")


def test_tuning_budget_from_options_and_environment(monkeypatch):
    """The profile's tvm options give the budget; $EDGEPACK_TVM_TUNE_SECONDS overrides its seconds."""
    monkeypatch.delenv("EDGEPACK_TVM_TUNE_SECONDS", raising=False)
    assert TvmBackend().budget == TuningBudget(0.0, 0, None) and not TvmBackend().budget.active
    options = TvmOptions(tune_seconds=60, tune_trials=200, trials_per_round=16)
    assert get_backend("tvm", options).budget == TuningBudget(60.0, 200, 16)
    monkeypatch.setenv("EDGEPACK_TVM_TUNE_SECONDS", "7.5")
    assert TvmBackend().budget.seconds == 7.5
    assert get_backend("tvm", options).budget == TuningBudget(7.5, 200, 16)  # the user's override wins
    monkeypatch.setenv("EDGEPACK_TVM_TUNE_SECONDS", "soon")
    with pytest.raises(EdgepackError, match="EDGEPACK_TVM_TUNE_SECONDS"):
        TvmBackend()
    with pytest.raises(EdgepackError, match=r"invalid tvm options: tune_trials: .*greater than or equal to 0"):
        get_backend("tvm", {"tune_trials": -1})


def test_budget_left_after_what_the_database_spent():
    spent = {"seconds_spent": 50.0, "searched": 40}
    assert TuningBudget().left(spent) is None  # nothing asked for
    assert TuningBudget(trials=64).left(spent) == (math.inf, 24)
    assert TuningBudget(trials=40).left(spent) is None  # spent already: not again
    assert TuningBudget(seconds=60).left(spent) == (10.0, math.inf)
    assert TuningBudget(seconds=60, trials=40).left(spent) is None  # whichever bound ends first
    assert TuningBudget(seconds=50.5, trials=100).left(spent) is None  # under a second left


def test_profile_target_option_reaches_tvm(small_cnn, tmp_path, tvm_cache):
    """x86-avx2's tvm runtime names the Haswell CPU: the artifact is built for it, not detected."""
    avx2 = load_profile("x86-avx2")
    tvm = get_backend("tvm", avx2.backend_options("tvm"))
    tvm.emit(small_cnn, tmp_path, avx2)
    info = tvm.describe(tmp_path / "model.so")
    assert info["target"]["mcpu"] == "haswell" and not info["tuned"]
    assert not tvm_cache.exists()  # untuned with nothing cached: the cache is not written


def test_loading_sets_threads_without_touching_the_environment(small_cnn, host, tmp_path, tvm_cache, monkeypatch):
    import tvm as tvm_lib

    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    backend = TvmBackend()
    path = backend.emit(small_cnn, tmp_path, host)
    backend.load(path, 2)
    assert "TVM_NUM_THREADS" not in os.environ
    assert tvm_lib.get_global_func("runtime.NumThreads")() == 2
    backend.load(path, 1)
    assert tvm_lib.get_global_func("runtime.NumThreads")() == 1


def test_tuning_records_are_cached_and_reused(host, tmp_path, tvm_cache):
    """Tune a one-kernel model for a fixed number of trials (the same amount however busy the
    machine is); the second compile reuses the records and tunes nothing."""
    rng = np.random.default_rng(0)
    model = conv_relu(4, 8, 16)
    x = {"x": rng.standard_normal((1, 4, 16, 16)).astype(np.float32)}
    want = _ort(model).run(None, x)[0]

    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        out.mkdir()
        backend = get_backend("tvm", {"tune_trials": 16, "trials_per_round": 8})
        path = backend.emit(model, out, host)
        runs.append(backend.describe(path))
        got = backend.run(backend.load(path, THREADS), x)[0]
        assert float(np.abs(got - want).max()) <= 1e-4

    first, second = runs
    assert first["tuned"] and first["tuning"]["records"] > 0 and first["tuning"]["seconds_this_compile"] > 0
    assert first["tuning"]["trials_requested"] == 16 and first["tuning"]["trials_total"] >= 16
    assert not first["tuning"]["reused_cache"]
    assert second["tuned"] and second["tuning"]["reused_cache"]
    assert second["tuning"]["seconds_this_compile"] == 0  # the budget was spent already: not again
    assert second["tuning"]["trials_total"] == first["tuning"]["trials_total"]
    assert second["tuning"]["records"] == first["tuning"]["records"]
    assert second["tuning"]["database"] == first["tuning"]["database"]
    assert str(tvm_cache) in second["tuning"]["database"]
    assert any("reused" in n for n in second["notes"])


def test_parallel_compiles_share_the_database_under_its_lock(host, tmp_path, tvm_cache):
    """Two compiles of one model at once (threads here; processes take the same flock): one tunes,
    the other waits for the lock and reuses its records instead of tuning again or reading half
    a database."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], rng.standard_normal(64).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Relu", ["m"], ["y"], name="relu")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def compile_once(i: int) -> dict:
        out = tmp_path / f"run{i}"
        out.mkdir()
        backend = get_backend("tvm", {"tune_trials": 8, "trials_per_round": 8})
        return backend.describe(backend.emit(model, out, host))["tuning"]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(compile_once, range(2)))
    assert sorted(r["reused_cache"] for r in results) == [False, True]
    assert sum(r["seconds_this_compile"] > 0 for r in results) == 1
    assert results[0]["trials_total"] == results[1]["trials_total"] >= 8
    assert results[0]["records"] == results[1]["records"] > 0
    stats = json.loads((Path(results[0]["database"]) / "edgepack_tuning.json").read_text())
    assert stats["sessions"] == 1


def test_int8_target_default_gives_tvm_fp32(mnist_model, sample_sets, tmp_path, tvm_cache):
    """x86-vnni defaults to INT8; TVM builds FP32 only, so it gets the float graph whatever ONNX
    Runtime's timing decided (it used to fail, or not, by that timing)."""
    import edgepack

    model, _ = mnist_model
    r = edgepack.compile(model, target="x86-vnni", backends=["onnxruntime", "tvm"], input_shapes={"": (1, 1, 28, 28)},
                         calib=sample_sets["mnist_calib"], output_dir=tmp_path / "o", runs=5, warmup=1,
                         threads=THREADS, progress=False)
    tvm = next(a for a in r["artifacts"] if a["backend"] == "tvm")
    assert tvm["precision"] == "fp32" and tvm["parity"]["max_abs_diff"] < 1e-4
    assert r["quantization"]["per_backend"]["tvm"]["why"] == "tvm builds fp32 only"
