"""model_stats on hand-built graphs with known answers and on the real models in the onnx wheel."""

import json
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.errors import EdgepackError
from edgepack.ir.stats import format_count, model_stats

LIGHT = Path(onnx.__file__).parent / "backend/test/data/light"
F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="test")
    if all(o.type.tensor_type.HasField("shape") for o in outputs):
        onnx.checker.check_model(m)  # the checker wants output shapes; inference fills them
    return m


def _init(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.zeros(shape, dtype), name)


def _vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def test_conv_macs_and_initializer_params():
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="c")
    m = _model([conv], [_vi("x", [1, 3, 8, 8])], [_vi("y", None)],
               [_init("w", (4, 3, 3, 3)), _init("b", (4,))])
    s = model_stats(m)
    assert s["macs"] == 4 * 8 * 8 * 3 * 9
    assert s["params"] == 4 * 3 * 9 + 4
    assert s["params_breakdown"]["initializers"] == 112
    assert s["param_bytes"] == 112 * 4
    assert s["layers"] == [{"name": "c", "op_type": "Conv", "macs": 6912,
                            "output_shape": [1, 4, 8, 8], "params": 112}]
    assert s["opset"] == 17 and s["producer"] == "test" and s["nodes"] == 1
    assert s["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert s["size_bytes"] == m.ByteSize()
    json.dumps(s)


def test_depthwise_conv_counts_one_input_channel_per_filter():
    c = 8
    conv = helper.make_node("Conv", ["x", "w"], ["y"], group=c, pads=[1, 1, 1, 1],
                            strides=[2, 2])
    m = _model([conv], [_vi("x", [1, c, 16, 16])], [_vi("y", None)], [_init("w", (c, 1, 3, 3))])
    s = model_stats(m)
    assert s["macs"] == c * 8 * 8 * 9
    assert s["layers"][0]["name"] == "Conv_0"


def test_conv_transpose():
    ct = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])
    m = _model([ct], [_vi("x", [1, 4, 5, 5])], [_vi("y", None)], [_init("w", (4, 6, 3, 3))])
    s = model_stats(m)
    assert s["layers"][0]["output_shape"] == [1, 6, 11, 11]
    assert s["macs"] == 4 * 5 * 5 * 6 * 9


def test_gemm_with_transposed_weight_excludes_bias():
    gemm = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    m = _model([gemm], [_vi("x", [2, 10])], [_vi("y", None)],
               [_init("w", (5, 10)), _init("b", (5,))])
    s = model_stats(m)
    assert s["macs"] == 2 * 10 * 5
    assert s["params"] == 55
    assert s["macs_by_op"] == {"Gemm": 100}


def test_batched_matmul_broadcasts():
    mm = helper.make_node("MatMul", ["a", "b"], ["y"])
    m = _model([mm], [_vi("a", [2, 4, 8])], [_vi("y", None)], [_init("b", (8, 16))])
    assert model_stats(m)["macs"] == 2 * 4 * 8 * 16


def test_integer_ops_use_the_float_formulas_and_int8_weights_are_params():
    u8 = TensorProto.UINT8
    nodes = [helper.make_node("ConvInteger", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MatMulInteger", ["a", "b"], ["y"])]
    m = _model(nodes, [_vi("x", [1, 3, 8, 8], u8), _vi("a", [2, 4, 8], u8)],
               [_vi("c", None, TensorProto.INT32), _vi("y", None, TensorProto.INT32)],
               [_init("w", (4, 3, 3, 3), np.int8), _init("b", (8, 16), np.int8)])
    s = model_stats(m)
    assert s["macs_by_op"] == {"ConvInteger": 4 * 8 * 8 * 3 * 9, "MatMulInteger": 2 * 4 * 8 * 16}
    assert s["params"] == 108 + 128 and s["param_bytes"] == 236 and s["int_elements"] == 0


def test_attention_matmuls_with_symbolic_dims():
    """Q@K^T and attn@V between activations; batch/seq fixed by input_shapes or taken as 1."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
        helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["y"], name="av"),
    ]
    shape = ["batch", 4, "seq", 16]
    m = _model(nodes, [_vi(n, shape) for n in "qkv"], [_vi("y", shape)])

    s = model_stats(m, input_shapes={"q": (2, 4, 10, 16), "k": (2, 4, 10, 16),
                                     "v": (2, 4, 10, 16)})
    per_matmul = 2 * 4 * 10 * 10 * 16
    assert s["macs"] == 2 * per_matmul
    assert {layer["name"]: layer["params"] for layer in s["layers"]} == {"qk": 0, "av": 0}
    assert s["macs_assumed_dims"] == {}
    assert s["inputs"][0]["shape"] == ["batch", 4, "seq", 16]  # the interface, not the fix

    s1 = model_stats(m)
    assert s1["macs"] == 2 * (4 * 1 * 1 * 16)
    assert s1["macs_assumed_dims"] == {n: [1, 4, 1, 16] for n in "qkv"}

    with pytest.raises(EdgepackError, match="did you mean"):
        model_stats(m, input_shapes={"qq": (1, 4, 1, 16)})


def test_dynamic_axis_shape_math_is_folded():
    """BERT exports slice position ids by Gather(Shape(ids), 1): onnx's inference alone loses
    the sequence length there; folding the shape arithmetic recovers it."""
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("Shape", ["ids"], ["s"]),
        helper.make_node("Constant", [], ["one"], value_int=1),
        helper.make_node("Gather", ["s", "one"], ["seq"]),
        helper.make_node("Constant", [], ["zero"], value_ints=[0]),
        helper.make_node("Unsqueeze", ["seq", "zero"], ["end"]),
        helper.make_node("Constant", [], ["axis1"], value_ints=[1]),
        helper.make_node("Slice", ["pos_buf", "zero", "end", "axis1"], ["pos"]),
        helper.make_node("Gather", ["emb", "pos"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["y"], name="proj"),
    ]
    inits = [numpy_helper.from_array(np.arange(512, dtype=np.int64)[None], "pos_buf"),
             _init("emb", (512, 64)), _init("w", (64, 32))]
    m = _model(nodes, [_vi("ids", ["batch", "seq"], i64)], [_vi("y", None)], inits)
    plain = onnx.shape_inference.infer_shapes(m, data_prop=True)
    h = next(v for v in plain.graph.value_info if v.name == "h")
    assert not h.type.tensor_type.shape.dim[1].HasField("dim_value")  # onnx alone: unknown

    s = model_stats(m, input_shapes={"ids": (1, 10)})
    assert s["unknown_shape_nodes"] == []
    assert s["layers"][0]["output_shape"] == [1, 10, 32]
    assert s["macs"] == 10 * 64 * 32
    assert s["int_elements"] == 512 + 3
    assert s["params"] == 512 * 64 + 64 * 32


def test_paddle_style_constant_weights_and_int_constants():
    """Weights held in Constant nodes count as params; int64 shape constants do not."""
    w = numpy_helper.from_array(np.ones((64, 128), np.float32), "w")  # big: stripped for inference
    nodes = [
        helper.make_node("Constant", [], ["w"], value=w),
        helper.make_node("Constant", [], ["scale"], value_floats=[1.0, 2.0]),
        helper.make_node("Constant", [], ["shape"], value_ints=[1, 2, 64]),
        helper.make_node("Reshape", ["x", "shape"], ["x3"]),
        helper.make_node("MatMul", ["x3", "w"], ["y"], name="fc"),
    ]
    m = _model(nodes, [_vi("x", [2, 64])], [_vi("y", None)])
    s = model_stats(m)
    assert s["params"] == 64 * 128 + 2
    assert s["params_breakdown"] == {"initializers": 0, "constants": 8194, "constant_of_shape": 0}
    assert s["param_bytes"] == 8194 * 4
    assert s["int_elements"] == 3
    # the Reshape target comes from a Constant: data propagation must see it
    assert s["layers"][0]["output_shape"] == [1, 2, 128]
    assert s["macs"] == 2 * 64 * 128
    assert s["layers"][0]["params"] == 64 * 128


def test_constant_of_shape_weights_count_only_with_static_shape():
    nodes = [
        helper.make_node("ConstantOfShape", ["wshape"], ["w"],
                         value=helper.make_tensor("v", F, [1], [0.5])),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("Shape", ["y"], ["ys"]),
        helper.make_node("ConstantOfShape", ["ys"], ["buf"]),  # run-time buffer, not a weight
    ]
    m = _model(nodes, [_vi("x", [3, 4])], [_vi("y", None), _vi("buf", None)],
               [numpy_helper.from_array(np.array([4, 5], np.int64), "wshape")])
    s = model_stats(m)
    assert s["params"] == 20
    assert s["params_breakdown"]["constant_of_shape"] == 20
    assert s["macs"] == 3 * 4 * 5


def test_if_subgraph_nodes_are_counted():
    def branch(name, op):
        w = numpy_helper.from_array(np.ones((4, 4), np.float32), f"{name}_w")
        nodes = [helper.make_node("Constant", [], [f"{name}_w"], value=w),
                 helper.make_node(op, ["x", f"{name}_w"], [f"{name}_y"])]
        return helper.make_graph(nodes, name, [], [_vi(f"{name}_y", [4, 4])])

    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "MatMul"),
                              else_branch=branch("else", "Add"))]
    m = _model(nodes, [_vi("cond", [], TensorProto.BOOL), _vi("x", [4, 4])], [_vi("y", [4, 4])])
    s = model_stats(m)
    assert s["nodes"] == 5
    assert s["op_histogram"] == {"Constant": 2, "Add": 1, "If": 1, "MatMul": 1}
    assert s["params"] == 32
    assert s["macs"] == 4 * 4 * 4
    assert s["macs_by_op"] == {"MatMul": 64}


def test_unknown_shapes_are_reported_not_guessed():
    # a custom-domain op onnx cannot infer feeds the MatMul
    nodes = [helper.make_node("Mystery", ["x"], ["h"], domain="custom"),
             helper.make_node("MatMul", ["h", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [_vi("x", [2, 8])], [_vi("y", None)],
                              [_init("w", (8, 4))])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("custom", 1)])
    s = model_stats(m)
    assert s["unknown_shape_nodes"] == ["mm"]
    assert s["macs"] == 0 and s["layers"] == []
    assert s["params"] == 32


def test_size_on_disk_includes_external_data(tmp_path):
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"])
    m = _model([gemm], [_vi("x", [1, 256])], [_vi("y", None)], [_init("w", (256, 256))])
    path = tmp_path / "m.onnx"
    onnx.save(m, path, save_as_external_data=True, location="m.data", size_threshold=0)
    total = path.stat().st_size + (tmp_path / "m.data").stat().st_size
    assert total > 256 * 256 * 4

    for loaded in (onnx.load(path), onnx.load(path, load_external_data=False)):
        s = model_stats(loaded, path)
        assert s["size_bytes"] == total
        assert s["external_data"] == ["m.data"]
        assert s["params"] == 256 * 256 and s["macs"] == 256 * 256


def test_light_resnet50():
    """caffe2 'light' model: weights are ConstantOfShape outputs of constant shapes."""
    path = LIGHT / "light_resnet50.onnx"
    m = onnx.load(path)
    tracemalloc.start()
    try:
        s = model_stats(m, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 25.5e6 <= s["params"] <= 25.7e6  # 25.56M + BatchNorm running statistics
    assert s["params_breakdown"]["constant_of_shape"] > 25e6
    assert 3.8e9 <= s["macs"] <= 4.2e9
    assert s["macs_by_op"]["Gemm"] == 2048 * 1000
    assert sum(1 for layer in s["layers"] if layer["op_type"] == "Conv") == 53
    assert s["op_histogram"]["Conv"] == 53
    assert s["unknown_shape_nodes"] == []
    assert s["size_bytes"] == path.stat().st_size
    assert s["opset"] == 9 and s["inputs"][0]["shape"] == [1, 3, 224, 224]
    # shapes only, judged by memory, not time (a busy machine slows it, it does not grow it): the
    # 25.6M float weights would take 102 MB; measured peak 0.3 MB
    assert peak < 20e6, peak
    json.dumps(s)


@pytest.mark.parametrize("name, params, macs", [
    ("squeezenet", (1.2e6, 1.26e6), (0.3e9, 0.4e9)),   # SqueezeNet 1.1: 1.235M, ~350M MACs
    ("inception_v1", (6.9e6, 7.1e6), (1.4e9, 1.6e9)),  # GoogLeNet: ~7M, ~1.5G MACs
])
def test_light_models(name, params, macs):
    s = model_stats(onnx.load(LIGHT / f"light_{name}.onnx"))
    assert params[0] <= s["params"] <= params[1]
    assert macs[0] <= s["macs"] <= macs[1]
    assert s["unknown_shape_nodes"] == []


def test_weights_as_initializers_match_constant_of_shape():
    """Materialising the light model's weights as initializers gives the same params and MACs."""
    m = onnx.load(LIGHT / "light_squeezenet.onnx")
    before = model_stats(m)
    shapes = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    keep, inits = [], list(m.graph.initializer)
    for node in m.graph.node:
        if node.op_type == "ConstantOfShape":
            inits.append(_init(node.output[0], tuple(shapes[node.input[0]])))
        else:
            keep.append(node)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    del m.graph.initializer[:]
    m.graph.initializer.extend(i for i in inits if not i.name.endswith("__SHAPE"))
    inputs = [i for i in m.graph.input if not i.name.endswith("__SHAPE")]
    del m.graph.input[:]
    m.graph.input.extend(inputs)
    m.ir_version = 8  # IR 3 would require every initializer to be a graph input
    after = model_stats(m)
    assert after["params"] == before["params"]
    assert after["params_breakdown"]["constant_of_shape"] == 0
    assert after["macs"] == before["macs"]


def test_format_count():
    assert format_count(950) == "950"
    assert format_count(3_504_872) == "3.50M"
    assert format_count(300_774_272) == "300.8M"
    assert format_count(4_089_184_256) == "4.09G"
    assert format_count(12_300) == "12.3K"
