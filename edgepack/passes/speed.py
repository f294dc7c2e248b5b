"""Which layer kinds are worth running in INT8 on this CPU? Measured, not assumed.

INT8 is not always faster: on AVX2 without VNNI, ORT's INT8 MobileNetV2 ran 2.2x slower than
FP32, largely in depthwise convolutions. For each quantized layer kind we time the INT8 model
with that kind kept in float; a kind whose float version is faster stays float.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

from edgepack.passes.quantize import Quantizer, initializer_shapes, layer_kind, quantized_nodes
from edgepack.runtime import DEFAULT_TIMING, Timing, ort_runner

COMPUTE_KINDS = {"Conv", "DepthwiseConv", "ConvTranspose", "MatMul", "Gemm"}
MIN_GAIN = 0.05  # a kind must save >= 5% of end-to-end latency to count as "slower in INT8"


def kinds_of(model: onnx.ModelProto, names: set[str]) -> dict[str, list[str]]:
    shapes = initializer_shapes(model)
    out: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.name in names:
            out.setdefault(layer_kind(n, shapes), []).append(n.name)
    return out


def select_kinds(quantizer: Quantizer, feeds: dict[str, np.ndarray], threads: int,
                 keep_float: list[str] = (), timing: Timing = DEFAULT_TIMING) -> dict:
    """Time FP32, INT8, and INT8 minus each layer kind; return the kinds to keep float + evidence.
    Each comparison is timed by `timing` (by default in interleaved rounds, runtime.interleaved_ms:
    with one median each, MobileNetV2's data-movement ops went float in one compile and INT8 in
    the next)."""
    def ms(*runners):
        return timing(list(runners), feeds)

    qmodel = quantizer.quantize(keep_float)
    current = ort_runner(qmodel, threads)
    fp32_ms, int8_ms = ms(ort_runner(quantizer.model, threads), current)
    by_kind = kinds_of(quantizer.model, quantized_nodes(qmodel) - set(keep_float))
    # time compute kinds one by one; the cheap data-movement ops together, as one trial
    movers = [k for k in by_kind if k not in COMPUTE_KINDS]
    if len(movers) > 1:
        by_kind["+".join(sorted(movers))] = [n for k in movers for n in by_kind.pop(k)]
    evidence, slow = [], []
    current_ms, floated = int8_ms, list(keep_float)
    for kind, nodes in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        candidate = ort_runner(quantizer.quantize(floated + nodes), threads)
        current_ms, t = ms(current, candidate)
        row = {"kind": kind, "layers": len(nodes), "int8_ms": current_ms, "with_kind_float_ms": t}
        if t < current_ms * (1 - MIN_GAIN):
            slow.append(kind)
            floated += nodes
            row["decision"] = "keep float: faster than INT8 here"
            current, current_ms = candidate, t
        else:
            row["decision"] = "INT8"
        evidence.append(row)
    return {"fp32_ms": fp32_ms, "int8_all_ms": int8_ms, "int8_selected_ms": current_ms,
            "float_kinds": slow, "float_nodes": [n for k in slow for n in by_kind[k]],
            "per_kind": evidence, "threads": threads, "runs": getattr(timing, "runs", 0),
            "rounds": getattr(timing, "rounds", 0),
            "layer_kinds": dict(Counter({k: len(v) for k, v in by_kind.items()}))}
