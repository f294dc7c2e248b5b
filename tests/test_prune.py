"""Structured and magnitude pruning on real canonical graphs (MobileNetV2, MNIST CNN, ONNX light
models), checked by onnx.checker, ONNX Runtime and an exactness test: zeroing the removed channels
in the original graph must give the same outputs as deleting them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.errors import EdgepackError
from edgepack.ir.canonical import canonicalize
from edgepack.ir.stats import model_stats
from edgepack.passes.prune import (PrunePlan, apply_plan, magnitude_prune, plan_pruning, prune,
                                   prune_groups)
from edgepack.passes.prune_graph import analyze, layout_index

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _feeds(model, seed=0):
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


def _run(model, feeds):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def _zeroed(model, plan):
    """`model` with the channels the plan removes zeroed at their source (producer filters and
    biases, depthwise filters and biases): deleting them must not change any output."""
    a = analyze(model)
    kept = plan.kept()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    nodes = {n.name: n for n in out.graph.node}
    for sl in a.slices:
        zero_ok = sl.role in ("filters", "bias", "out-features", "depthwise", "depthwise bias") or (
            sl.role == "per-channel" and nodes[sl.node].op_type in ("Add", "Sub", "Mul"))  # f(0, 0) == 0
        if not zero_ok:
            continue
        t = inits[nodes[sl.node].input[sl.index]]
        arr = numpy_helper.to_array(t).copy()
        gone = np.setdiff1d(np.arange(sl.layout.width), layout_index(sl.layout, kept))
        idx = [slice(None)] * arr.ndim
        idx[sl.axis] = gone
        arr[tuple(idx)] = 0
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
    return out


def _widths_ok(plan, m):
    for g in plan.groups.values():
        k = len(g["kept"])
        assert k == g["size"] or (k % m == 0 and k >= m), (g["size"], k)


def _check_exact(model, pruned, plan, rtol=1e-3):
    feeds = _feeds(model)
    ref = _run(_zeroed(model, plan), feeds)[0]
    got = _run(pruned, feeds)[0]
    assert ref.shape == got.shape
    scale = np.abs(ref).max() + 1e-6
    assert np.abs(ref - got).max() <= rtol * scale


@pytest.fixture(scope="module")
def mnv2(mobilenet_onnx):
    model, _ = canonicalize(onnx.load(str(mobilenet_onnx)))
    return model


def _light(name):
    model, _ = canonicalize(onnx.load(str(LIGHT / name)))
    return model


def test_mobilenet_half(mnv2):
    pruned, plan = prune(mnv2, 0.5, channel_multiple=16)
    onnx.checker.check_model(pruned)
    before, after = model_stats(mnv2), model_stats(pruned)
    ratio = after["macs"] / before["macs"]
    print(f"MobileNetV2 @0.5 (multiple 16): MACs {before['macs']} -> {after['macs']} ({ratio:.3f}), "
          f"params {before['params']} -> {after['params']}")
    assert ratio < 0.45
    assert after["params"] < 0.5 * before["params"]
    assert [o.type.tensor_type.shape for o in pruned.graph.output] == \
        [o.type.tensor_type.shape for o in mnv2.graph.output]
    _widths_ok(plan, 16)
    _check_exact(mnv2, pruned, plan)
    # inverted residual blocks: the residual stream is one group fed by every block's projection
    groups = prune_groups(mnv2)
    by_size = {}
    for g in groups:
        if g.prunable:
            by_size.setdefault(g.size, []).append(len(g.producers))
    assert max(by_size[24]) == 2 and max(by_size[32]) == 3 and max(by_size[64]) == 4
    assert max(by_size[96]) == 3 and max(by_size[160]) == 3
    # depthwise convs change their group attribute with their channels
    dw = [n for n in pruned.graph.node if n.op_type == "Conv" and
          next(a.i for a in n.attribute if a.name == "group") > 1]
    w = {t.name: t.dims for t in pruned.graph.initializer}
    assert dw and all(next(a.i for a in n.attribute if a.name == "group") == w[n.input[1]][0] for n in dw)
    # the classifier (graph output) is reported, not pruned
    bad = [g for g in groups if not g.prunable]
    assert len(bad) == 1 and bad[0].size == 1000 and "graph output" in bad[0].reasons[0]


def test_plan_json_round_trip(mnv2, tmp_path):
    pruned, plan = prune(mnv2, 0.25, channel_multiple=8, mode="global")
    plan.save(tmp_path / "plan.json")
    again = PrunePlan.load(tmp_path / "plan.json")
    assert again == plan
    assert apply_plan(mnv2, again).SerializeToString() == pruned.SerializeToString()
    _widths_ok(again, 8)


def test_overrides_protected_global(mnv2):
    names = [n.name for n in mnv2.graph.node if n.op_type == "Conv"]
    first, second = names[0], names[3]
    _, plan = prune(mnv2, 0.5, mode="global", channel_multiple=1,
                    overrides={second: 0.75}, protected=[first])
    a = analyze(mnv2)
    g1, g2 = plan.groups[a.node_group[first]], plan.groups[a.node_group[second]]
    assert len(g1["kept"]) == g1["size"]
    assert len(g2["kept"]) == g2["size"] - math.floor(0.75 * g2["size"])
    total = sum(g["size"] for g in plan.groups.values())
    kept = sum(len(g["kept"]) for g in plan.groups.values())
    assert 0.35 < 1 - kept / total < 0.6


def test_resnet_residual_sum():
    model = _light("light_resnet50.onnx")
    groups = prune_groups(model)
    stream = sorted((len(g.producers), g.size) for g in groups if g.prunable)
    # each stage's residual stream: the projection shortcut + every block's last conv
    assert (4, 256) in stream and (5, 512) in stream and (7, 1024) in stream and (4, 2048) in stream
    pruned, plan = prune(model, 0.5, channel_multiple=16)
    assert model_stats(pruned)["macs"] < 0.3 * model_stats(model)["macs"]
    _widths_ok(plan, 16)
    _check_exact(model, pruned, plan)


@pytest.mark.parametrize("name", ["light_inception_v1.onnx", "light_squeezenet.onnx", "light_densenet121.onnx"])
def test_concat(name):
    model = _light(name)
    pruned, plan = prune(model, 0.5, channel_multiple=16)
    _widths_ok(plan, 16)
    _check_exact(model, pruned, plan)
    assert model_stats(pruned)["macs"] < 0.45 * model_stats(model)["macs"]
    if "inception" in name:  # LRN normalises across channels: its input groups are reported
        reasons = [r for u in plan.unprunable for r in u["reasons"]]
        assert any("LRN" in r for r in reasons)


def test_mnist_conv_conv_gemm(mnist_model, tmp_path):
    import torch

    module, _ = mnist_model
    path = tmp_path / "mnist.onnx"
    torch.onnx.export(module.eval(), (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"])
    model, _ = canonicalize(onnx.load(str(path)))
    pruned, plan = prune(model, 0.5, channel_multiple=1)
    _check_exact(model, pruned, plan)
    convs = lambda s: [layer["macs"] for layer in s["layers"] if layer["op_type"] == "Conv"]  # noqa: E731
    c0, c1 = convs(model_stats(model)), convs(model_stats(pruned))
    drop = 1 - sum(c1[1:]) / sum(c0[1:])  # conv-conv part: both in and out channels halve
    print(f"MNIST conv2+conv3 MACs drop at 0.5: {drop:.3f} (expected 1 - 0.5*0.5 = 0.75)")
    assert abs(drop - 0.75) < 0.02
    gemm = [t for t in pruned.graph.initializer if len(t.dims) == 2 and t.dims[0] == 10]
    assert any(t.dims[1] == 32 for t in gemm)  # Gemm input features follow the pooled channels


def _mlp(matmul: bool):
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((8, 32)).astype(np.float32), rng.standard_normal(32).astype(np.float32)
    w2, b2 = rng.standard_normal((32, 16)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    w3 = rng.standard_normal((16, 4)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"))]
    if matmul:
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
                 helper.make_node("Add", ["h1", "b1"], ["a1"], name="bias1"),
                 helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
                 helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
                 helper.make_node("Add", ["h2", "b2"], ["a2"], name="bias2"),
                 helper.make_node("Tanh", ["a2"], ["r2"], name="act2"),
                 helper.make_node("MatMul", ["r2", "w3"], ["y"], name="fc3")]
        shape_x = [2, 5, 8]
    else:  # Gemm with transB, as torch exports nn.Linear
        inits[0] = numpy_helper.from_array(w1.T.copy(), "w1")
        inits[2] = numpy_helper.from_array(w2.T.copy(), "w2")
        nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1", transB=1),
                 helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
                 helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"], name="fc2", transB=1),
                 helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
                 helper.make_node("Gemm", ["r2", "w3"], ["y"], name="fc3")]
        shape_x = [2, 8]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("matmul", [False, True])
def test_mlp_hidden_units(matmul):
    model = _mlp(matmul)
    pruned, plan = prune(model, 0.5)
    assert sorted(len(g["kept"]) for g in plan.groups.values()) == [8, 16]
    w = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert w["w3"] == [8, 4] and w["b1"] == [16] and w["b2"] == [8]
    _check_exact(model, pruned, plan, rtol=1e-5)


def test_unknown_consumer_reported():
    """A Reshape that mixes channels into other dims: the group is reported, the graph intact."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w2")
    w3 = numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w3")
    shp = numpy_helper.from_array(np.array([1, 2, 4, 8], np.int64), "shp")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Reshape", ["r1", "shp"], ["rs"], name="mix"),
             helper.make_node("Conv", ["x", "w2"], ["c2"], name="conv2", pads=[0, 0, 0, 0]),
             helper.make_node("Conv", ["c2", "w3"], ["y2"], name="conv3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 4])],
                              [helper.make_tensor_value_info("rs", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("y2", TensorProto.FLOAT, None)], [w1, w2, w3, shp])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    pruned, plan = prune(model, 0.5)
    assert [u["producers"] for u in plan.unprunable if any("mix" in r for r in u["reasons"])] == [["conv1"]]
    assert list(plan.groups) and all(plan.groups[g]["producers"] == ["conv2"] for g in plan.groups)
    onnx.checker.check_model(pruned)
    _run(pruned, _feeds(model))


@pytest.mark.parametrize("scope,ratio", [("global", 0.5), ("layer", 0.3), ("layer", 0.9)])
def test_magnitude(mnv2, scope, ratio):
    out, report = magnitude_prune(mnv2, ratio, scope=scope)
    assert abs(report["sparsity"] - ratio) < 0.01
    if scope == "layer":
        assert all(abs(layer["sparsity"] - ratio) < 0.01 for layer in report["layers"] if layer["params"] >= 100)
    assert "no speed-up" in report["note"]
    onnx.checker.check_model(out)
    assert _run(out, _feeds(mnv2))[0].shape == (1, 1000)


def test_errors(mnv2):
    conv = next(n.name for n in mnv2.graph.node if n.op_type == "Conv")
    for bad in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(EdgepackError, match=r"\[0, 1\)"):
            prune(mnv2, bad)
    with pytest.raises(EdgepackError, match=r"\[0, 1\)"):
        magnitude_prune(mnv2, 1.0)
    with pytest.raises(EdgepackError, match="did you mean"):
        prune(mnv2, 0.5, overrides={conv + "x": 0.3})
    with pytest.raises(EdgepackError, match="protected node .*did you mean"):
        prune(mnv2, 0.5, protected=[conv[:-1]])
    with pytest.raises(EdgepackError, match="override ratio"):
        prune(mnv2, 0.5, overrides={conv: 2})
    with pytest.raises(EdgepackError, match="mode"):
        prune(mnv2, 0.5, mode="best")
    # a single conv straight to the graph output: nothing to prune
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w])
    with pytest.raises(EdgepackError, match="nothing prunable.*graph output"):
        plan_pruning(helper.make_model(graph), 0.5)


def test_ratio_zero_is_identity(mnv2):
    pruned, plan = prune(mnv2, 0.0, channel_multiple=16)
    assert plan.summary()["channels_removed"] == 0
    assert model_stats(pruned)["macs"] == model_stats(mnv2)["macs"]


def test_minilm_mlp_hidden_units_are_pruned_attention_is_reported():
    """The transformer MLP ([B,T,C] -> [B*T,C] Reshape -> Gemm -> GELU -> Gemm) loses hidden units;
    the residual stream (LayerNorm) and attention stay whole, each with its reason."""
    from edgepack.frontends import load_source
    from edgepack.ir.stats import model_stats
    from edgepack.models.minilm import minilm, tokenize
    from edgepack.passes.prune import prune, prune_groups

    canonical, _ = canonicalize(load_source(minilm(), {"input_ids": (1, 16), "attention_mask": (1, 16)}).model)
    groups = prune_groups(canonical)
    mlp = [g for g in groups if g.prunable]
    assert len(mlp) == 6 and all(g.size == 1536 for g in mlp)  # one MLP per encoder layer
    assert any("LayerNormalization" in r for g in groups if not g.prunable for r in g.reasons)
    pruned, plan = prune(canonical, 0.5, channel_multiple=16)
    onnx.checker.check_model(pruned)
    assert all(len(g["kept"]) == 768 for g in plan.groups.values())
    assert model_stats(pruned)["macs"] < 0.8 * model_stats(canonical)["macs"]
    feeds = tokenize(["Pruning removes whole hidden units."], 16)
    out = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert out[0].shape == (1, 384)
