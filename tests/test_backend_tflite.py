"""The TFLite emitter on real models (ImageNet MobileNetV2, the trained MNIST CNN), real photos and
digits, converted by onnx2tf + the TFLite converter and run by ai_edge_litert (no mocks).

MobileNetV2 is converted twice in this module (conversion is the slow part, ~10-20 s each):
FP32 through `edgepack.compile`, full-INT8 through the backend directly.

Agreement gates come from measurements on 2 cores (Intel Xeon, AVX512-VNNI/AMX) over the 60
bundled photos. FP32: max abs logit diff vs ONNX Runtime 2.8e-05, 60/60 top-1. Full INT8 (TFLite
per-channel weights, int8 activations and int8 I/O, min/max calibrated on the same photos):
top-1 agreement 0.73, mean cosine 0.953; ONNX Runtime's own QDQ MinMax INT8 of the same graph
reaches the same 0.73 (0.75 with percentile calibration), and per-layer INT8 error in the
TFLite quantization debugger is at the rounding floor (rmse/scale ~0.29), so the gap is this
PyTorch MobileNetV2's post-training quantization, not the conversion. Every flip is on a photo
where FP32 gives its top class < 50% probability (textures, microscopy, text); on the 17
photos where FP32 is confident, INT8 agrees on all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("onnx2tf")
pytest.importorskip("ai_edge_litert")

import edgepack  # noqa: E402
from edgepack.backends import backend_for_artifact, get_backend  # noqa: E402
from edgepack.data import Dataset, load_dataset  # noqa: E402
from edgepack.errors import EdgepackError  # noqa: E402
from edgepack.ir.canonical import canonicalize  # noqa: E402
from edgepack.ir.spec import graph_inputs  # noqa: E402
from edgepack.runtime import ort_runner  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402

from helpers import agreement, confident_mask, cosine, logits  # noqa: E402

THREADS = 2
SAMPLE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"  # onnx2tf's working file
INT8_AGREEMENT_FLOOR = 0.70  # measured 0.73 (goal: 0.85, issue's goal 0.99: see the docstring)


@pytest.fixture(scope="module")
def tfl():
    return get_backend("tflite")


@pytest.fixture(scope="module")
def npu():
    return load_profile("mobile-npu")


def _logits(run, data: Dataset) -> np.ndarray:
    return logits(run, data.batches(1))


@pytest.fixture(scope="module")
def compiled(mobilenet_onnx, sample_sets, tmp_path_factory):
    """MobileNetV2 -> FP32 .tflite for the phone-NPU target, the way a user compiles it."""
    out = tmp_path_factory.mktemp("compile") / "out"
    report = edgepack.compile(mobilenet_onnx, target="mobile-npu", backends=["tflite"], output_dir=out,
                              calib=sample_sets["photos"], precision="fp32", runs=5, warmup=1,
                              threads=THREADS, progress=False)
    return report, out


@pytest.fixture(scope="module")
def int8_artifact(tfl, npu, mobilenet_canonical, mobilenet_photos, tmp_path_factory):
    """Full-integer MobileNetV2, calibrated by the TFLite converter on the photos."""
    out = tmp_path_factory.mktemp("int8")
    return tfl.emit(mobilenet_canonical, out, npu, "int8", calib=mobilenet_photos)


# --------------------------------------------------------------------------- FP32


def test_compile_fp32_end_to_end(compiled):
    report, out = compiled
    art = report["artifacts"][0]
    assert art["backend"] == "tflite" and art["precision"] == "fp32"
    assert art["path"] == "tflite/model.tflite"
    # only the artifact and its I/O sidecar: onnx2tf's working files stay in a scratch folder
    assert sorted(p.name for p in (out / "tflite").iterdir()) == ["model.io.json", "model.tflite"]
    assert not Path(SAMPLE_NAME).exists() and not Path("saved_model").exists()
    assert art["parity"]["max_abs_diff"] <= 1e-4 and art["parity"]["top1_agreement"] == 1.0
    lat = art["latency_ms"]
    assert art["runs"] == 5 and 0 < lat["min"] <= lat["p50"] <= lat["max"]
    assert art["unsupported_ops"] == []
    # the NPU's latency cannot be measured on this host, and the report says so
    assert any("not the target's latency" in n and "accelerator" in n for n in art["notes"]), art["notes"]
    rt = art["runtime"]
    assert rt["precision"] == "fp32" and rt["ops"]["CONV_2D"] + rt["ops"]["DEPTHWISE_CONV_2D"] == 52
    assert "TRANSPOSE" not in rt["ops"]  # NHWC throughout, no layout shuffles
    # the phone NPU runs integer only: every FP32 compute op would fall back, and says so
    assert rt["target"]["name"] == "mobile-npu" and rt["target"]["delegate"] == "nnapi"
    assert rt["target"]["fallback_op_count"] == rt["op_count"]
    assert "integer only" in rt["target"]["fallback_reasons"]["CONV_2D"]
    assert not rt["target"]["runs_all_on_delegate"]


def test_fp32_matches_onnxruntime_on_all_photos(tfl, compiled, mobilenet_photos, mobilenet_reference):
    _, out = compiled
    path = out / "tflite" / "model.tflite"
    assert backend_for_artifact(path).name == "tflite"
    session = tfl.load(path, THREADS)
    # ONNX terms: NCHW float feeds by ONNX name in, ONNX outputs out (the .tflite itself is NHWC)
    assert [(s.name, s.shape, s.dtype) for s in tfl.inputs(session)] == [("input", (1, 3, 224, 224), "float32")]
    got = _logits(lambda f: tfl.run(session, f), mobilenet_photos)
    assert got.shape == mobilenet_reference.shape == (60, 1000)
    assert np.abs(got - mobilenet_reference).max() <= 1e-4  # measured 2.8e-05 (logits up to 21)
    assert agreement(mobilenet_reference, got) == 1.0
    io = json.loads((out / "tflite" / "model.io.json").read_text())
    assert io["inputs"][0]["tflite_shape"] == [1, 224, 224, 3] and io["inputs"][0]["perm"] == [0, 2, 3, 1]
    assert io["outputs"][0]["name"] == "logits"


# --------------------------------------------------------------------------- INT8


def test_full_int8_mobilenet(tfl, npu, int8_artifact, mobilenet_photos, mobilenet_reference):
    info = tfl.describe(int8_artifact)
    assert info["precision"] == "int8"
    # full-integer as the profile says: int8 I/O with scale/zero-point, per-channel weights
    assert npu.quantization.io_dtype == "int8"
    for t in info["inputs"] + info["outputs"]:
        assert t["dtype"] == "int8" and t["scale"] > 0 and -128 <= t["zero_point"] <= 127
    assert info["weights_per_channel"] is True
    assert info["float_ops"] == {} and info["inner_quantize_ops"] == 0
    assert set(info["ops"]) <= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "MEAN", "FULLY_CONNECTED"}
    assert info["target"]["fallback_ops"] == {} and info["target"]["runs_all_on_delegate"]
    assert int8_artifact.stat().st_size < 5e6  # int8 weights (fp32: 14 MB)

    got = _logits(tfl.runner(int8_artifact, THREADS), mobilenet_photos)  # run() (de)quantizes the I/O
    confident = confident_mask(mobilenet_reference)
    assert confident.sum() >= 10
    assert agreement(mobilenet_reference, got, confident) >= 0.9  # measured 1.00 (17 photos)
    assert agreement(mobilenet_reference, got) >= INT8_AGREEMENT_FLOOR  # measured 0.73 (60 photos)
    assert cosine(mobilenet_reference, got).mean() >= 0.93  # measured 0.953


def test_mnist_full_int8_accuracy_within_budget(tfl, npu, mnist_model, sample_sets, tmp_path):
    from edgepack.frontends import load_source

    model, _ = mnist_model
    source = load_source(model, {"": (1, 1, 28, 28)})
    canonical, _ = canonicalize(source.model)
    specs = graph_inputs(canonical)
    calib = load_dataset(sample_sets["mnist_calib"], specs)
    evalset = load_dataset(sample_sets["mnist_eval"], specs)
    path = tfl.emit(canonical, tmp_path, npu, "int8", calib=calib)

    def accuracy(run):
        out = _logits(run, evalset)
        return float((out.argmax(1) == evalset.labels).mean())

    fp32 = accuracy(ort_runner(canonical, THREADS))
    int8 = accuracy(tfl.runner(path, THREADS))
    assert fp32 >= 0.85
    assert int8 >= fp32 - 0.015  # measured 0.935 vs 0.930
    info = tfl.describe(path)
    assert info["inputs"][0]["dtype"] == "int8" and info["inputs"][0]["tflite_shape"] == [1, 28, 28, 1]
    assert info["target"]["runs_all_on_delegate"]


# --------------------------------------------------------------------------- I/O types, describe


def _small_classifier(softmax: bool = True) -> onnx.ModelProto:
    import torch

    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
              torch.nn.Flatten(), torch.nn.Linear(8, 10)]
    net = torch.nn.Sequential(*layers, *([torch.nn.Softmax(-1)] if softmax else [])).eval()
    from edgepack.frontends import load_source

    model, _ = canonicalize(load_source(net, {"": (1, 3, 16, 16)}).model)
    return model


def _with_quant(profile, **changes):
    return profile.model_copy(update={"quantization": profile.quantization.model_copy(update=changes)})


def test_io_dtype_follows_the_profile(tfl, npu, tmp_path):
    model = _small_classifier()
    name = graph_inputs(model)[0].name
    calib = Dataset({name: np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)})
    ref = ort_runner(model)
    # uint8 I/O (NPUs before NNAPI 1.2)
    path = tfl.emit(model, tmp_path / "u8", _with_quant(npu, io_dtype="uint8"), "int8", calib=calib)
    info = tfl.describe(path)
    assert [t["dtype"] for t in info["inputs"] + info["outputs"]] == ["uint8", "uint8"]
    run = tfl.runner(path, 1)
    diff = max(float(np.abs(ref(f)[0] - run(f)[0]).max()) for f in calib.batches(1))
    assert diff < 0.02  # softmax probabilities, one uint8 step is 1/256

    # float I/O with int8 inside, Softmax kept float (the arm64 profile's keep_float_op_types)
    arm = load_profile("arm64")
    path = tfl.emit(model, tmp_path / "arm", arm, "int8", calib=calib)
    info = tfl.describe(path)
    assert [t["dtype"] for t in info["inputs"] + info["outputs"]] == ["float32", "float32"]
    assert info["float_ops"] == {"SOFTMAX": 1} and info["inner_quantize_ops"] >= 1
    assert any("SOFTMAX" in n for n in info["notes"])
    assert info["target"]["fallback_ops"] == {}  # arm64 runs every op (XNNPACK or builtin kernels)

    # fp16 weights: float I/O, half-size weights dequantized at load
    path = tfl.emit(model, tmp_path / "f16", arm, "fp16")
    info = tfl.describe(path)
    assert info["precision"] == "fp16" and info["ops"].get("DEQUANTIZE", 0) >= 2
    run = tfl.runner(path, 1)
    assert max(float(np.abs(ref(f)[0] - run(f)[0]).max()) for f in calib.batches(1)) < 1e-3


def test_describe_reports_ops_the_accelerator_would_not_run(tfl, npu, int8_artifact):
    # the same INT8 model against an NPU that lacks Add and Pad: both reported, with counts
    runtime = npu.runtimes[0]
    lacking = [op for op in runtime.supported_ops if op not in ("Add", "Pad")]
    npu_old = npu.model_copy(update={"runtimes": [runtime.model_copy(update={"supported_ops": lacking})]})
    info = tfl.describe(int8_artifact, profile=npu_old)
    t = info["target"]
    assert t["fallback_ops"] == {"ADD": 10, "PAD": 5} and t["fallback_op_count"] == 15
    assert "not in the profile's supported_ops" in t["fallback_reasons"]["ADD"]
    assert t["unsupported_onnx_ops"] == ["Add"] and not t["runs_all_on_delegate"]
    # a profile whose runtime runs everything: nothing falls back
    info = tfl.describe(int8_artifact, profile=load_profile("arm64"))
    assert info["target"]["fallback_ops"] == {} and info["target"]["runs_all_on_delegate"]


# --------------------------------------------------------------------------- errors


def test_unconvertible_graph_raises_one_line_naming_op_and_node(tfl, npu, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    like = helper.make_tensor("like", TensorProto.FLOAT16, [1], [0.0])
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
         helper.make_node("CastLike", ["r", "like"], ["c"], name="castlike_1"),  # no onnx2tf op
         helper.make_node("Cast", ["c"], ["y"], name="cast_back", to=TensorProto.FLOAT)],
        "g", [x], [y], [like]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = tmp_path / "a"
    out.mkdir()
    with pytest.raises(EdgepackError) as e:
        tfl.emit(model, out, npu, "fp32")
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert "CastLike" in msg and "castlike_1" in msg
    assert list(out.iterdir()) == []

    with pytest.raises(EdgepackError, match="calibration"):
        tfl.emit(model, out, npu, "int8")  # INT8 without calibration data
    with pytest.raises(EdgepackError, match="precision"):
        tfl.emit(model, out, npu, "int4")


def test_own_quantizer_is_held_to_the_budget_and_refuses_keep_float(mnist_model, sample_sets, tmp_path):
    """TFLite quantizes with its own converter: its measured drop is checked after the fact, and
    --keep-float (which only edgepack's quantizer can honour) is refused, not ignored."""
    model, _ = mnist_model
    common = dict(target="mobile-npu", backends=["tflite"], input_shapes={"": (1, 1, 28, 28)},
                  calib=sample_sets["mnist_calib"], runs=5, warmup=1, threads=THREADS, progress=False)
    with pytest.raises(EdgepackError, match="--keep-float does not reach tflite"):
        edgepack.compile(model, keep_float=["type:Gemm"], output_dir=tmp_path / "k", **common)
    r = edgepack.compile(model, max_drop=1e-6, output_dir=tmp_path / "b", **common)  # cosine: INT8 loses more
    q, art = r["quantization"], r["artifacts"][0]
    assert art["precision"] == "int8" and art["accuracy_drop"] > 1e-6
    assert not q["met"] and "tflite INT8 drop" in q["note"]
