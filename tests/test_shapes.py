"""Open input dimensions are never silently 1, and the judged output can be chosen."""

from __future__ import annotations

import json
import shlex

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgepack
from edgepack.errors import EdgepackError
from helpers import message_lines, run_cli


def conv_graph(in_shape: list, outputs: int = 1) -> onnx.ModelProto:
    """Conv (8 channels, same padding) on an input of `in_shape` (dims may be names); a second
    output (the Relu of the first, negated) when outputs=2, so the two rank classes differently."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], rng.standard_normal(216).astype(np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    out_shape = [in_shape[0], 8, in_shape[2], in_shape[3]]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)]
    if outputs == 2:
        nodes += [helper.make_node("Relu", ["y"], ["r"], name="relu"), helper.make_node("Neg", ["r"], ["z"], name="neg")]
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, out_shape))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)], outs, [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture()
def open_hw(tmp_path):
    path = tmp_path / "open_hw.onnx"
    onnx.save(conv_graph(["N", 3, "H", "W"]), str(path))
    return path


def _input_shape(report: dict) -> list:
    return report["canonical"]["input_shapes"]["x"]


def test_open_height_width_is_refused_with_a_ready_line(open_hw, tmp_path):
    out = tmp_path / "out"
    r = run_cli("compile", open_hw, "--target", "host", "-o", out)
    lines = message_lines(r.stderr)
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "'x' [N, 3, H, W]: dim 2 (H), 3 (W)" in lines[0]
    assert not out.exists()  # nothing written for a compile that cannot describe a real input
    # the line it shows is ready to paste: it compiles, at that shape
    ready = shlex.split(lines[0].split("e.g. ", 1)[1])
    assert ready == ["--input-shape", "x:1,3,224,224"]
    r = run_cli("compile", open_hw, "--target", "host", "-o", out, "--runs", "3", "--warmup", "1", *ready)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert _input_shape(report) == [1, 3, 224, 224]
    assert report["artifacts"][0]["parity"]["samples"] > 0


def test_open_batch_alone_is_one_and_the_report_says_so(tmp_path):
    path = tmp_path / "open_batch.onnx"
    onnx.save(conv_graph(["N", 3, 16, 16]), str(path))
    report = edgepack.compile(path, target="host", output_dir=tmp_path / "out", runs=3, warmup=1, progress=False)
    assert _input_shape(report) == [1, 3, 16, 16]
    assert any("batch dimension 'N' taken as 1" in n for n in report["notes"])


def test_open_dims_taken_from_the_calibration_samples(open_hw, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).random((12, 3, 40, 48), dtype=np.float32))
    report = edgepack.compile(open_hw, target="host", output_dir=tmp_path / "out", calib=calib, precision="fp32",
                              runs=3, warmup=1, progress=False)
    assert _input_shape(report) == [1, 3, 40, 48]
    assert any("[1, 3, 40, 48], the shape of the samples in" in n for n in report["notes"])


def test_every_open_input_is_named_at_once():
    from edgepack.ir.spec import TensorSpec, resolve_shapes

    specs = [TensorSpec("ids", ("batch", "seq"), "int64"), TensorSpec("mask", ("batch", "seq"), "int64"),
             TensorSpec("lang", ("batch",), "int64")]
    with pytest.raises(EdgepackError) as e:
        resolve_shapes(specs)
    msg = str(e.value)
    assert "'ids' [batch, seq]: dim 1 (seq); 'mask' [batch, seq]: dim 1 (seq)" in msg
    assert "--input-shape ids:1,128 --input-shape mask:1,128 --input-shape lang:1" in msg
    shapes, notes = resolve_shapes(specs, {"ids": (2, 7), "mask": (2, 7)})
    assert shapes == {"ids": (2, 7), "mask": (2, 7), "lang": (1,)} and len(notes) == 1


def test_inspect_says_its_counts_assume_a_shape(open_hw):
    r = run_cli("inspect", open_hw)
    assert r.returncode == 0, r.stderr
    assert "assume x [1, 3, 1, 1]" in " ".join(r.stdout.split())
    r = run_cli("inspect", open_hw, "--input-shape", "1,3,32,32")
    assert r.returncode == 0 and "assume" not in r.stdout


def test_the_judged_output_can_be_named(tmp_path):
    path = tmp_path / "two_outputs.onnx"
    onnx.save(conv_graph([1, 3, 8, 8], outputs=2), str(path))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(2).standard_normal((40, 3, 8, 8)).astype(np.float32))
    report = edgepack.compile(path, target="host", output_dir=tmp_path / "out", calib=calib, precision="int8",
                              eval_output="z", runs=3, warmup=1, progress=False)
    assert report["accuracy"]["output"] == "z"
    r = run_cli("compile", path, "--target", "host", "--calib", calib, "--eval-output", "zz", "-o", tmp_path / "o2")
    lines = message_lines(r.stderr)
    assert r.returncode == 1 and len(lines) == 1
    assert "--eval-output 'zz' is not a model output; outputs are ['y', 'z']" in lines[0]
