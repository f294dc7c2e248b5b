"""The INT8 search's quantizer and calibration method as options and search knobs, and the bf16
precision, on a small real Conv graph with real runtimes (seconds each)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import edgepack
from edgepack.compiler.request import CompileRequest
from edgepack.errors import EdgepackError
from edgepack.hostinfo import cpu_info, missing_bf16
from edgepack.targets import detect_host

from helpers import message_lines, run_cli

FAST = {"runs": 3, "warmup": 1, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("knobs") / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32))
    return path


def test_quantizer_and_calibration_shape_the_int8_search(tmp_path, small_onnx, calib):
    nncf = edgepack.compile(small_onnx, backends=["onnxruntime"], calib=calib, precision="int8", quantizers="nncf",
                            calibration="entropy", output_dir=tmp_path / "nncf", **FAST)
    q = nncf["quantization"]
    assert q["quantizers"] == ["nncf"] and q["scheme"]["calibration"] == "entropy"
    assert [c["format"] for c in q["format_candidates"]] == ["static QDQ (NNCF: its ranges + bias correction)"]
    assert nncf["target"]["profile"]["quantization"]["calibration"] == "entropy"  # the override is the profile's

    own = edgepack.compile(small_onnx, backends=["onnxruntime"], calib=calib, precision="int8",
                           quantizers=["onnxruntime"], output_dir=tmp_path / "own", **FAST)
    q = own["quantization"]
    default = detect_host().quantization.calibration
    assert q["quantizers"] == ["onnxruntime"] and q["scheme"]["calibration"] == default != "entropy"
    assert [c["format"] for c in q["format_candidates"]] == ["static QDQ"]


def test_the_knobs_change_the_request_key(small_onnx):
    keys = {CompileRequest.from_kwargs(small_onnx, precision="int8", **kw).key()
            for kw in ({}, {"quantizers": "nncf"}, {"quantizers": ["nncf", "dynamic"]}, {"calibration": "entropy"},
                       {"calibration": "percentile"})}
    assert len(keys) == 5


@pytest.mark.parametrize("args, expected", [
    (["--quantizer", "nncff"], "--quantizer 'nncff': unknown (did you mean: nncf?); use one of onnxruntime, nncf, dynamic"),
    (["--quantizer", "onnxruntime,fo"], "--quantizer 'fo': unknown"),
    (["--calibration", "entrpy"], "--calibration 'entrpy': unknown (did you mean: entropy?)"),
    (["--precision", "fp32", "--quantizer", "nncf"], "this compile runs no INT8 search: fp32 ships"),
    (["--precision", "bf16", "-b", "onnxruntime"], "onnxruntime cannot compute in BF16"),
])
def test_bad_knobs_are_one_line(tmp_path, small_onnx, calib, args, expected):
    r = run_cli("compile", small_onnx, "--calib", calib, *args, "-o", tmp_path / "out", "--no-progress", timeout=300)
    lines = message_lines(r.stderr)
    assert r.returncode == 1 and len(lines) == 1 and expected in lines[0], r.stderr[-1000:]
    assert not (tmp_path / "out").exists()


def test_bf16_is_refused_on_a_cpu_without_bf16_instructions(small_onnx):
    """What the check says on CPUs this test machine is not (the flags as /proc/cpuinfo gives them)."""
    avx512 = {"model": "Intel Xeon Gold 6230", "arch": "x86_64", "flags": ["avx2", "avx512f", "avx512_vnni"]}
    assert missing_bf16(avx512) == ("--precision bf16: this CPU (Intel Xeon Gold 6230) has none of the flags "
                                    "avx512_bf16, amx_bf16, so BF16 would be emulated (slower than FP32 and less "
                                    "exact): use fp32, fp16 or int8")
    assert missing_bf16({**avx512, "flags": ["avx512_bf16"]}) is None
    assert "bf16" in missing_bf16({"model": "Cortex-A72", "arch": "aarch64", "flags": ["asimd"]})
    if missing_bf16() is not None:  # and on this one, a compile says it in one line
        with pytest.raises(EdgepackError, match="none of the flags"):
            edgepack.compile(onnx.load(str(small_onnx)), backends=["openvino"], precision="bf16", **FAST)


@pytest.mark.skipif(missing_bf16() is not None, reason=f"this CPU has no BF16 instructions ({cpu_info()['model']})")
def test_bf16_openvino_artifact_computes_in_bf16_close_to_fp32(tmp_path, small_onnx, calib):
    pytest.importorskip("openvino")
    import openvino as ov

    from edgepack.backends import get_backend
    from edgepack.runtime import ort_runner

    r = edgepack.compile(small_onnx, backends=["openvino"], precision="bf16", calib=calib,
                         output_dir=tmp_path / "out", **FAST)
    art = r["artifacts"][0]
    assert (art["precision"], r["precision_requested"]) == ("bf16", "bf16")
    assert art["runtime"]["inference_precision_hint"] == "bf16" and art["runtime"]["layers_by_precision"].get("bf16")
    path = tmp_path / "out" / art["path"]
    assert ov.Core().read_model(str(path)).get_rt_info(["edgepack", "inference_precision_hint"]).astype(str) == "bf16"
    x = np.load(calib)["x"][:8]
    backend = get_backend("openvino")
    session = backend.load(path, 1)
    got = np.concatenate([backend.run(session, {"x": x[i:i + 1]})[0] for i in range(8)])
    ref = np.concatenate([ort_runner(onnx.load(str(small_onnx)))({"x": x[i:i + 1]})[0]
                          for i in range(8)])
    scale = np.abs(ref).max()
    assert 0 < np.abs(got - ref).max() <= 2e-2 * scale  # BF16 arithmetic (not FP32), within its 8-bit mantissa


def test_a_search_over_the_int8_knobs(tmp_path, small_onnx, calib):
    pytest.importorskip("optuna")
    from edgepack.search import SearchSpec, search

    spec = SearchSpec.model_validate({
        "name": "knobs", "model": str(small_onnx), "calib": str(calib), "trials": 2, "repeats": 1,
        "runs": 3, "warmup": 1, "threads": 1, "seed": 1,
        "space": {"backend": ["onnxruntime"], "precision": ["int8"], "quantizer": ["onnxruntime", "nncf"],
                  "calibration": ["minmax", "entropy"]}})
    search(spec, tmp_path / "out")
    trials = json.loads((tmp_path / "out" / "search.json").read_text())["targets"][0]["trials"]
    assert len(trials) == 2
    assert all({"quantizer", "calibration"} <= set(t["point"]) for t in trials)
    reports = [json.loads(p.read_text())["quantization"] for p in (tmp_path / "out" / "trials").glob("*/out/report.json")]
    assert len(reports) == 2
    points = {(t["point"]["quantizer"], t["point"]["calibration"]) for t in trials}
    assert {(q["quantizers"][0], q["scheme"]["calibration"]) for q in reports} == points


def test_the_compile_budget_is_a_knob_of_int8_points_only(tmp_path, small_onnx, calib):
    """space.max_drop: each INT8 point's compile spends the point's budget (its report says so);
    a float point does not take it: one point, one compile."""
    pytest.importorskip("optuna")
    from edgepack.search import SearchSpec, search

    spec = SearchSpec.model_validate({
        "name": "budgets", "model": str(small_onnx), "calib": str(calib), "trials": 4, "repeats": 1,
        "runs": 3, "warmup": 1, "threads": 1,
        "space": {"backend": ["onnxruntime"], "precision": ["int8", "fp32"], "max_drop": [0.0, 0.05]}})
    search(spec, tmp_path / "out")
    trials = json.loads((tmp_path / "out" / "search.json").read_text())["targets"][0]["trials"]
    points = {json.dumps(t["point"], sort_keys=True) for t in trials}
    assert len(points) == 3 and sum("max_drop" in p for p in points) == 2  # the space has 3 points
    reports = [json.loads(p.read_text()) for p in (tmp_path / "out" / "trials").glob("*/out/report.json")]
    assert len(reports) == 3
    budgets = sorted(r["quantization"]["max_drop"] for r in reports if r["precision_requested"] == "int8")
    assert budgets == [0.0, 0.05]
    from edgepack.search.figures import label

    int8 = next(t["point"] for t in trials if t["point"]["precision"] == "int8" and t["point"]["max_drop"] == 0.05)
    assert label(int8).endswith("int8 max_drop 0.05")
