"""Compile requests are values: frozen, hashable, comparable, and digestible by content."""

from __future__ import annotations

import dataclasses

import onnx
import pytest

from edgepack.compiler import Budget, CompileRequest
from edgepack.errors import EdgepackError
from helpers import conv_relu


def test_requests_from_the_same_keywords_are_equal_and_hash_alike(tmp_path):
    a = CompileRequest.from_kwargs("m.onnx", target="x86-vnni", calib="calib.npz", max_drop="1%",
                                   keep_float=["type:Gemm"], prune_layers={"conv": 0.3}, input_shapes={"x": (1, 3, 8, 8)})
    b = CompileRequest.from_kwargs("m.onnx", target="x86-vnni", calib="calib.npz", max_drop="1%",
                                   keep_float=["type:Gemm"], prune_layers={"conv": 0.3}, input_shapes={"x": (1, 3, 8, 8)})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.quant.budget == Budget(0.01, True) and a.shapes == {"x": (1, 3, 8, 8)}
    assert a != b.with_options(quant=dataclasses.replace(b.quant, keep_float=()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.force = True


def test_in_memory_models_compare_by_identity_and_digest_by_content(tmp_path):
    m1, m2 = conv_relu(3, 4, 8), conv_relu(3, 4, 8)
    r1, r2 = CompileRequest.from_kwargs(m1), CompileRequest.from_kwargs(m2)
    assert r1 != r2 and r1 == CompileRequest.from_kwargs(m1)  # another object is another request
    assert r1.key() == r2.key()  # ... with the same contents
    path = tmp_path / "m.onnx"
    onnx.save(m1, str(path))
    before = CompileRequest.from_kwargs(str(path)).key()
    onnx.save(conv_relu(3, 8, 8), str(path))  # the file changed: the key follows its bytes
    assert CompileRequest.from_kwargs(str(path)).key() != before


def test_a_bad_option_fails_when_the_request_is_made():
    with pytest.raises(EdgepackError, match="unknown precision 'int4'"):
        CompileRequest.from_kwargs("m.onnx", precision="int4")
    with pytest.raises(EdgepackError, match="--max-drop"):
        CompileRequest.from_kwargs("m.onnx", max_drop="lots")
