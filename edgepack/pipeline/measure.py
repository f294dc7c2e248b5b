"""Every stage is measured the same way: its model as canonical ONNX, top-1 on the test split in
ONNX Runtime, params/MACs/size from the graph, p50 in a fresh process. Same yardstick, so the
table's rows compare (the teacher row is the FP32 ONNX Runtime baseline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from edgepack.devices import LocalDevice
from edgepack.frontends.torch_module import export
from edgepack.ir.canonical import canonicalize
from edgepack.ir.spec import graph_inputs
from edgepack.ir.stats import model_stats
from edgepack.runtime import predict


def to_onnx(model: torch.nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """The torch model as the canonical graph the backends take (BN folded, batch 1)."""
    return canonical(export(model.eval(), (example,), ["input"]))


def canonical(model: onnx.ModelProto) -> onnx.ModelProto:
    return canonicalize(model, None)[0]


def onnx_accuracy(model: onnx.ModelProto | Path, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x) == y).mean())


def measure(model: onnx.ModelProto, path: Path, test: tuple[np.ndarray, np.ndarray], bench, events) -> dict:
    """A stage's row: params, MACs, size, test accuracy and latency of `model`, saved at `path`."""
    stats = model_stats(model)
    x, y = test
    name = graph_inputs(model)[0].name
    lat = LocalDevice().time("onnxruntime", path, [{name: x[i:i + 1]} for i in range(8)],
                             progress=events.show_progress, **bench.as_dict())["latency_ms"]
    return {"params": stats["params"], "macs": stats["macs"], "size_bytes": path.stat().st_size,
            "accuracy": onnx_accuracy(path, x, y), "p50_ms": lat["p50"], "p99_ms": lat["p99"]}

