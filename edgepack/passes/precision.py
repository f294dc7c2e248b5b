"""Choose what ships for INT8: measured speed per layer kind, then the accuracy budget, then a
final FP32-vs-INT8 check, so an INT8 model slower than its source is never shipped silently."""

from __future__ import annotations

import onnx

from edgepack.data import Dataset
from edgepack.passes.accuracy import control
from edgepack.passes.metrics import Evaluator, drop
from edgepack.passes.quantize import IgnoredScope, Quantizer, quantized_nodes
from edgepack.passes.speed import select_kinds
from edgepack.runtime import ort_runner


def quantize_for_target(model: onnx.ModelProto, calib: Dataset, profile, evaluator: Evaluator,
                        base_score: float, budget: tuple[float, bool], scope: IgnoredScope,
                        threads: int, batch: int, insist: bool, progress=None) -> tuple[onnx.ModelProto, str, dict]:
    """Returns (model to ship, "int8" | "fp32", the report's quantization section)."""
    quantizer = Quantizer(model, calib, profile, batch)
    user_float = scope.resolve(model)
    feeds = next(calib.batches(batch))
    speed = select_kinds(quantizer, feeds, threads, keep_float=user_float)
    # an explicit --precision int8 gets INT8 layers: the speed evidence is reported, not applied
    speed_float = [] if insist else speed["float_nodes"]
    keep = user_float + speed_float
    max_drop, relative = budget
    result = control(quantizer, evaluator, base_score, max_drop, relative, keep, progress=progress)
    int8_ms = ort_runner(result.model, threads).median_ms(feeds)
    fp32_ms = ort_runner(model, threads).median_ms(feeds)
    q = profile.quantization
    kept = ([{"node": n, "reason": "ignored scope (user or profile)"} for n in user_float]
            + [{"node": n, "reason": "speed: this layer kind ran faster in float here"} for n in speed_float]
            + result.kept_float)
    section = {
        "scheme": {"format": q.format, "weights": q.weights.model_dump(), "activations": q.activations.model_dump(),
                   "reduce_range": q.reduce_range, "calibration": q.calibration, "op_types": list(q.op_types)},
        "calibration": {"data": calib.source, "samples": len(calib)},
        "metric": evaluator.metric, "fp32_score": base_score, "int8_score": result.score,
        "drop": result.drop, "max_drop": max_drop, "relative": relative, "met": result.met,
        "int8_layers": len(quantized_nodes(result.model)), "kept_float": kept,
        "accuracy_steps": result.steps, "group_ranking": result.ranking,
        "speed": speed, "fp32_ms": fp32_ms, "int8_ms": int8_ms, "timing": f"in-process median, {threads} threads",
    }
    if not result.met:
        section["note"] = (f"accuracy budget not met: best INT8 {evaluator.metric} {result.score:.4f} vs "
                           f"FP32 {base_score:.4f} (drop {result.drop:.4f} > {max_drop}); shipped the best found")
    if int8_ms >= fp32_ms:
        msg = f"INT8 measured slower than FP32 here ({int8_ms:.3f} vs {fp32_ms:.3f} ms)"
        if not insist:
            section.update(decision="fp32", note=f"{msg}: shipping FP32")
            return model, "fp32", section
        section["warning"] = f"{msg}; shipped INT8 because --precision int8 was asked"
    section["decision"] = "int8"
    return result.model, "int8", section


__all__ = ["quantize_for_target", "drop"]
