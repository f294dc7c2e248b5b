"""INT8 never ends on a quantizer bug: onnxruntime's quantizer raises on a real graph, the
fallback ladder finds another way, the report names the rung, and nothing is left behind.

The graph is the smallest form of what made onnxruntime 1.32 raise on magika's byte-level file
classifier: a Gemm classifier whose bias is [1, N] (as converters write it) rather than [N].
With per-channel weights, the int32-bias weight-scale adjustment reads bias[i] as a number
and gets a row ("ValueError: The truth value of an array with more than one element is
ambiguous"). NNCF 3.4 has its own: with a node float whose input tensor another node reads
twice (Mul(r, r), a square in magika's LayerNorm), it raises "Can not add the quantizer to the
dq_output_r_1 edge". Real onnxruntime and NNCF throughout.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.data import Dataset
from edgepack.errors import EdgepackError
from edgepack.ir.canonical import canonicalize
from edgepack.passes.ladder import CONFIGURED, FLOAT_FAILING, NO_BIAS_ADJUST, PER_TENSOR, RUNGS, Ladder
from edgepack.passes.metrics import Evaluator
from edgepack.passes.precision import Int8Search, quantize_for_target
from edgepack.passes.quantize import IgnoredScope, Quantizer, quantized_nodes
from edgepack.report.schema import Quantization
from edgepack.runtime import ort_runner
from edgepack.targets import load_profile

from helpers import PinnedTiming, message_lines, run_cli

CLASSES, FEATURES = 6, 8
BUG = "truth value of an array with more than one element is ambiguous"


def _row_bias_classifier() -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm(transB, bias [1, CLASSES])."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (FEATURES, 3, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, FEATURES).astype(np.float32), "conv_b"),
             numpy_helper.from_array(rng.normal(0, 0.5, (CLASSES, FEATURES)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (1, CLASSES)).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "row_bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CLASSES])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _two_bug_classifier() -> onnx.ModelProto:
    """MatMul -> r; ReduceSum(r), Mul(r, r), Sub(r, sum) -> Add -> Gemm(transB, bias [1, CLASSES]):
    onnxruntime raises on the Gemm as configured, NNCF when node "sum" is kept float."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (16, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1], np.int64), "axis"),
             numpy_helper.from_array(rng.normal(0, 0.5, (CLASSES, 16)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (1, CLASSES)).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["r"], name="mm"),
             helper.make_node("ReduceSum", ["r", "axis"], ["s"], name="sum", keepdims=1),
             helper.make_node("Mul", ["r", "r"], ["sq"], name="square"),
             helper.make_node("Sub", ["r", "s"], ["d"], name="sub"),
             helper.make_node("Add", ["d", "sq"], ["a"], name="add"),
             helper.make_node("Gemm", ["a", "fc_w", "fc_b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "two_bugs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CLASSES])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def two_bugs() -> tuple[onnx.ModelProto, Dataset]:
    x = np.random.default_rng(3).normal(0, 1, (32, 16)).astype(np.float32)
    return canonicalize(_two_bug_classifier())[0], Dataset({"x": x}, source="<normal vectors>")


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    canonical, _ = canonicalize(_row_bias_classifier())
    fc = next(n for n in canonical.graph.node if n.op_type == "Gemm")  # the trigger survives canonicalization
    assert [list(t.dims) for t in canonical.graph.initializer if t.name == fc.input[2]] == [[1, CLASSES]]
    return canonical


@pytest.fixture(scope="module")
def calib() -> Dataset:
    x = np.random.default_rng(1).uniform(0, 1, (64, 3, 8, 8)).astype(np.float32)
    return Dataset({"x": x}, source="<uniform images>")


def _quantizer(model, calib, rungs=RUNGS) -> Quantizer:
    return Quantizer(model, calib, load_profile("x86-vnni"), rungs=rungs)  # per-channel symmetric int8 weights


def test_configured_quantizer_raises_on_the_row_bias(model, calib):
    """The bug is real (if onnxruntime fixes it, this test says the ladder's first rung is moot)."""
    with _quantizer(model, calib, rungs=(CONFIGURED,)) as q, pytest.raises(EdgepackError, match=BUG):
        q.quantize()


@pytest.mark.parametrize("rung", [NO_BIAS_ADJUST, PER_TENSOR])
def test_each_scheme_rung_quantizes_every_layer(model, calib, rung):
    with _quantizer(model, calib, rungs=(CONFIGURED, rung)) as q:
        qmodel = q.quantize()
        assert q.ladder.rung == rung and BUG in q.ladder.failed[CONFIGURED]
        assert {"conv", "fc"} <= quantized_nodes(qmodel)
        # the next quantization (another float scope) goes straight to the rung that worked
        q.quantize(["conv"])
        assert list(q.ladder.failed) == [CONFIGURED] and q.ladder.rung == rung


def test_failing_node_rung_finds_the_node_by_bisection(model, calib):
    """Per-channel kept everywhere the quantizer can: only the Gemm it raises on stays float."""
    with _quantizer(model, calib, rungs=(CONFIGURED, FLOAT_FAILING)) as q:
        qmodel = q.quantize()
        assert q.ladder.rung == FLOAT_FAILING and q.ladder.failing == ["fc"]
        fc = next(n for n in qmodel.graph.node if n.name == "fc")
        assert "conv" in quantized_nodes(qmodel) and list(fc.input[1:]) == ["fc_w", "fc_b"]  # float weights
        x = calib.inputs["x"][:4]
        ref = np.concatenate([ort_runner(model)({"x": x[i:i + 1]})[0] for i in range(4)])
        got = np.concatenate([ort_runner(qmodel)({"x": x[i:i + 1]})[0] for i in range(4)])
        assert np.allclose(ref, got, atol=0.1)


def test_ladder_refuses_unknown_rungs():
    with pytest.raises(EdgepackError, match="unknown quantizer fallback rung"):
        Ladder({}, lambda keep: [], rungs=("per-channel please",))


def _search(rungs) -> Int8Search:
    return Int8Search(load_profile("x86-vnni"), (0.05, False), IgnoredScope(), threads=1, insist=True,
                      allow_dynamic=False, timing=PinnedTiming(int8_ms=0.5), rungs=rungs)


def test_nncf_graph_ships_when_onnxruntime_fails_every_rung(model, calib):
    """The last rung is another quantizer: onnxruntime's failure is reported, not fatal."""
    evaluator = Evaluator.build("cosine", calib.take(16), 1, ort_runner(model))
    plan = quantize_for_target(model, calib, evaluator, 1.0, _search((CONFIGURED,)))
    fallback = plan.section["fallback"]
    assert plan.precision == "int8" and fallback["shipped"] == "NNCF's graph"
    assert [r["rung"] for r in fallback["rungs"]] == ["onnxruntime: as configured", "NNCF's graph"]
    assert BUG in fallback["rungs"][0]["error"] and "error" not in fallback["rungs"][1]
    assert any(c["format"] == "static QDQ" and BUG in c["error"] for c in plan.section["format_candidates"])
    assert "fp32_ms" in plan.section and quantized_nodes(plan.model)


def test_every_quantizer_failing_ships_fp32_or_is_one_error_when_int8_is_insisted(two_bugs):
    model, calib = two_bugs
    evaluator = Evaluator.build("cosine", calib.take(8), 1, ort_runner(model))
    search = _search((CONFIGURED,))
    search = replace(search, scope=IgnoredScope(names=["sum"]))  # NNCF raises with it float
    with pytest.raises(EdgepackError) as e:
        quantize_for_target(model, calib, evaluator, 1.0, search)
    assert "\n" not in str(e.value) and str(e.value).startswith("--precision int8: no quantizer produced")
    assert BUG in str(e.value) and "dq_output_r" in str(e.value)
    plan = quantize_for_target(model, calib, evaluator, 1.0, replace(search, insist=False))
    assert plan.precision == "fp32" and plan.model is model and plan.static == []
    section = plan.section
    assert section["decision"] == "fp32" and section["note"].endswith("shipping FP32")
    fallback = section["fallback"]
    assert fallback["shipped"] is None and "NNCF quantization failed" in fallback["rungs"][-1]["error"]
    Quantization(**section)  # the report's typed section takes it


def test_a_float_scope_nncf_raises_on_leaves_that_group_int8(two_bugs):
    """The accuracy control skips a group its quantizer cannot float (NNCF's raise on magika's
    LayerNorm ended NNCF's whole candidate) and goes on with the next one."""
    from edgepack.passes.accuracy import control
    from edgepack.passes.quantize_nncf import NncfQuantizer

    model, calib = two_bugs
    evaluator = Evaluator.build("cosine", calib.take(8), 1, ort_runner(model))
    ranking = [{"group": "the sum", "nodes": ["sum"], "gain": 0.1, "mac_share": 0.0},
               {"group": "the square", "nodes": ["square"], "gain": 0.05, "mac_share": 0.0}]
    with _quantizer(model, calib, rungs=(NO_BIAS_ADJUST,)) as q:
        result = control(NncfQuantizer(q), evaluator, 1.0, -1.0, False, [], ranking=ranking)
    assert "dq_output_r" in result.steps[1]["error"] and result.steps[1]["group"] == "the sum"
    assert result.steps[1]["kept_float"] == 0  # the sum went back to INT8
    assert "score" in result.steps[2] and result.steps[2]["kept_float"] == 1  # the square went float alone


def test_compile_ships_int8_names_the_rung_and_leaves_the_folder_clean(tmp_path):
    """Through the CLI, as a user runs it: exit 0, INT8 shipped, the rung named in report.json and
    report.md, and the folder it ran in holds nothing new (after a failing and a working rung)."""
    onnx.save(_row_bias_classifier(), tmp_path / "row_bias.onnx")
    x = np.random.default_rng(1).uniform(0, 1, (32, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = run_cli("compile", tmp_path / "row_bias.onnx", "--calib", tmp_path / "calib.npz", "--precision", "int8",
                   "--target", "x86-vnni", "--runs", "5", "--warmup", "1", "-o", tmp_path / "out", "--no-progress",
                   cwd=cwd)
    assert proc.returncode == 0, message_lines(proc.stderr)
    assert os.listdir(cwd) == []
    q = json.loads((tmp_path / "out" / "report.json").read_text())["quantization"]
    assert q["decision"] == "int8"
    assert q["fallback"]["shipped"] in ("onnxruntime: int32-bias weight-scale adjustment off", "NNCF's graph")
    assert BUG in q["fallback"]["rungs"][0]["error"] and BUG in q["fallback"]["why"]
    assert "quantizer fallback: onnxruntime's quantizer raised" in (tmp_path / "out" / "report.md").read_text()


def test_quantizer_temporary_folder_is_removed_and_the_working_folder_untouched(model, calib, tmp_path,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    with _quantizer(model, calib, rungs=(CONFIGURED, NO_BIAS_ADJUST)) as q:
        q.quantize()  # the configured rung fails, the next works
        tmp = q._tmp.name
        assert os.path.isdir(tmp)
    assert not os.path.exists(tmp) and os.listdir(tmp_path) == []


def test_nothing_reaches_onnxruntime_symbolic_shape_inference():
    """onnxruntime's symbolic shape inference saves sym_shape_infer_temp.onnx and a <uuid>.data
    file into the current folder when it cannot finish (a fixed relative path: only os.chdir,
    process-global, could move it). It is reached through quant_pre_process: edgepack imports neither."""
    import ast

    from helpers import ROOT

    imported = set()
    for path in (ROOT / "edgepack").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported |= {f"{node.module}.{a.name}" for a in node.names}
    assert not [m for m in imported if "quant_pre_process" in m or "symbolic_shape_infer" in m
                or "SymbolicShapeInference" in m or m.startswith("onnxruntime.quantization.shape_inference")]
