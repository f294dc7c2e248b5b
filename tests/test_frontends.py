"""Frontends -> canonical IR on real models, with parity measured against the source."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgepack.data import load_dataset
from edgepack.errors import EdgepackError
from edgepack.frontends import load_source
from edgepack.frontends.onnx_file import reference_runner
from edgepack.ir.canonical import canonicalize
from edgepack.ir.spec import graph_inputs
from edgepack.verify import measure_parity

from helpers import LIGHT


def _photo_feeds(photos, name, n=12):
    data = load_dataset(photos)
    return [{name: data.inputs[next(iter(data.inputs))][i:i + 1]} for i in range(n)], data


def test_mobilenet_module_to_canonical_parity_on_real_photos(mobilenet_torch, sample_sets):
    src = load_source(mobilenet_torch, {"": (1, 3, 224, 224)})
    assert src.kind == "torch" and len(src.sha256) == 64
    canonical, info = canonicalize(src.model)
    onnx.checker.check_model(canonical)
    assert not any(n.op_type == "BatchNormalization" for n in canonical.graph.node)
    assert info["nodes_after"] < info["nodes_before"]
    feeds, _ = _photo_feeds(sample_sets["photos"], graph_inputs(canonical)[0].name)
    parity = measure_parity(src.run, reference_runner(canonical), feeds)
    assert parity["max_abs_diff"] < 1e-4
    assert parity["top1_agreement"] == 1.0


def test_real_photos_are_classified_as_imagenet_says(mobilenet_onnx, sample_sets):
    """The canonical graph still *works*: chelsea is a tabby cat (281-285), coffee is espresso (967)."""
    src = load_source(str(mobilenet_onnx))
    canonical, _ = canonicalize(src.model)
    run = reference_runner(canonical)
    data = load_dataset(sample_sets["photos"])
    files = sorted(p.name for p in sample_sets["photos"].iterdir() if p.suffix == ".png")
    x = data.inputs["input"] if "input" in data.inputs else next(iter(data.inputs.values()))
    pred = {f: int(run({"input": x[i:i + 1]})[0].argmax()) for i, f in enumerate(files)}
    chelsea = next(v for k, v in pred.items() if k.startswith("chelsea") and "flip" not in k and "crop" not in k)
    coffee = next(v for k, v in pred.items() if k.startswith("coffee") and "flip" not in k and "crop" not in k)
    assert 281 <= chelsea <= 285
    assert coffee == 967


def test_torchscript_and_factory_frontends(tmp_path, mobilenet_torch):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    ts = tmp_path / "net.ts"
    torch.jit.trace(net, torch.randn(1, 3, 16, 16)).save(str(ts))
    src = load_source(str(ts), {"": (1, 3, 16, 16)})
    assert src.kind == "torchscript"
    canonical, _ = canonicalize(src.model)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    name = graph_inputs(canonical)[0].name
    assert measure_parity(src.run, reference_runner(canonical), [{name: x}])["max_abs_diff"] < 1e-5

    (tmp_path / "netdef.py").write_text(
        "import torch\n"
        "def make():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),\n"
        "        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))\n")
    torch.save(net.state_dict(), tmp_path / "w.pt")
    src2 = load_source(f"{tmp_path}/netdef.py:make", {"": (1, 3, 16, 16)}, weights=str(tmp_path / "w.pt"))
    # the factory + weights computes what the original module computed
    np.testing.assert_allclose(src2.run({"input": x})[0], net(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


def test_generated_node_names_never_repeat_a_given_one():
    from onnx import TensorProto, helper

    from edgepack.ir.canonical import name_nodes

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="Relu_1"), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"], name="Relu_1")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4])]))
    name_nodes(model)
    names = [n.name for n in model.graph.node]
    assert names[0] == "Relu_1" and len(set(names)) == 3, names


def test_torch_model_without_shapes_is_a_clear_error(mobilenet_torch):
    with pytest.raises(EdgepackError, match="--input-shape x:"):
        load_source(mobilenet_torch)


def test_minilm_export_parity_on_real_sentences():
    from edgepack.models.minilm import minilm, tokenize

    model = minilm()
    src = load_source(model, {"input_ids": (1, 32), "attention_mask": (1, 32)})
    canonical, info = canonicalize(src.model)
    assert {s.name for s in graph_inputs(canonical)} == {"input_ids", "attention_mask"}
    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Return a new list containing all items from the iterable in ascending order.",
        "Permission is hereby granted, free of charge, to any person obtaining a copy.",
        "Edge devices need small and fast models.",
    ]
    tok = tokenize(sentences, 32)
    feeds = [{k: v[i:i + 1] for k, v in tok.items()} for i in range(len(sentences))]
    parity = measure_parity(src.run, reference_runner(canonical), feeds)
    assert parity["cosine_min"] > 0.99999
    assert parity["max_abs_diff"] < 1e-4
    assert "MatMul" in {n.op_type for n in canonical.graph.node}


@pytest.mark.parametrize("name", ["light_resnet50", "light_densenet121", "light_inception_v1"])
def test_old_opset_onnx_is_upgraded_and_batchnorm_folded(name):
    src = load_source(str(LIGHT / f"{name}.onnx"))
    canonical, info = canonicalize(src.model)
    assert info["opset_in"] == 9 and info["opset"] >= 13
    onnx.checker.check_model(canonical)
    before = sum(n.op_type == "BatchNormalization" for n in src.model.graph.node)
    assert info["batchnorm_folded"] + info["batchnorm_left"] == before
    if name == "light_resnet50":  # every BN follows a Conv there
        assert info["batchnorm_left"] == 0 and before == 53
