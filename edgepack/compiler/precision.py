"""What precision ships, decided once: one value instead of four flags spread over compile.

`how` says how the shipped precision is made:
- "fp32" / "fp16": float graphs (fp16 converted with float I/O);
- "bf16": the FP32 graph, computed in BF16 by a runtime that can (OpenVINO's inference precision),
  only where the CPU has BF16 instructions: emulated BF16 would be slower than FP32 and less exact;
- "prequantized": the model is already QDQ (QAT or an earlier quantizer), shipped as INT8;
- "own": every chosen runtime quantizes with its own converter (TFLite), from the float graph
  and the calibration data, judged after the fact against the budget;
- "search": edgepack's INT8 search (passes.precision), then a per-runtime choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import onnx

from edgepack.backends import get_backend
from edgepack.compiler.int8_choice import Choice, choose
from edgepack.compiler.request import QUANTIZERS
from edgepack.errors import EdgepackError
from edgepack.ir.spec import fixed_batch, graph_inputs
from edgepack.passes.precision import Int8Plan, Int8Search, quantize_for_target
from edgepack.passes.quantize import quantized_nodes, to_fp16
from edgepack.report.schema import Quantization

How = Literal["fp32", "fp16", "bf16", "prequantized", "own", "search"]


def intent(quant, model: onnx.ModelProto, has_calib: bool, profile, backends: list[str],
           exploring: bool = False) -> How:
    """How the precision will be made (`quant`: the request's QuantOptions), checked before any
    slow work."""
    requested = quant.precision
    if quantized_nodes(model):
        if requested not in (None, "int8"):
            raise EdgepackError(f"the model is already INT8 (QuantizeLinear/DequantizeLinear); --precision "
                                f"{requested} does not apply")
        return _searched_only(quant, "prequantized", "the model is already INT8")
    wanted = requested or (profile.precision if has_calib else "fp32")
    if wanted == "bf16":
        check_bf16(backends, exploring)
    if wanted != "int8":
        return _searched_only(quant, wanted, f"{wanted} ships")
    if not has_calib:
        raise EdgepackError("INT8 needs calibration data: pass --calib DATA (a few hundred samples)")
    if not any(get_backend(n).consumes_qdq for n in backends):
        return _searched_only(quant, "own", f"{', '.join(backends)} quantize(s) with its own converter")
    if quant.quantizers == ("dynamic",) and "onnxruntime" not in backends:
        raise EdgepackError("--quantizer dynamic makes ONNX Runtime's dynamic INT8 format (MatMulInteger), "
                            f"which only onnxruntime runs; the runtimes here are {', '.join(backends)}")
    return "search"


def _searched_only(quant, how: How, why: str) -> How:
    """`how`, unless --quantizer was given: it picks the INT8 search's candidates, and there is
    no search here (`why`); saying so beats ignoring it."""
    if quant.quantizers:
        raise EdgepackError(f"--quantizer {','.join(quant.quantizers)} chooses among edgepack's INT8 search "
                            f"candidates, and this compile runs no INT8 search: {why}")
    return how


def check_bf16(backends: list[str], exploring: bool) -> None:
    """BF16 needs a runtime that computes in it and a CPU with BF16 instructions (one line each
    otherwise, never a silent FP32). Runtimes edgepack chose (`exploring`) that cannot run it are
    skipped at build time; runtimes the user named must all run it."""
    from edgepack.backends import REGISTRY, backend_class
    from edgepack.hostinfo import missing_bf16

    able = [n for n in REGISTRY if "bf16" in backend_class(n).precisions]
    unable = [n for n in backends if n not in able]
    if unable and (not exploring or len(unable) == len(backends)):
        raise EdgepackError(f"{', '.join(unable)} cannot compute in BF16 (--precision bf16); "
                            f"{', '.join(able)} can: pass --backend {able[0]}")
    missing = missing_bf16()
    if missing:
        raise EdgepackError(missing)


@dataclass(frozen=True)
class PrecisionPlan:
    how: How
    graph: onnx.ModelProto  # what runtimes get, unless the search chooses per runtime
    precision: str  # what ships where no per-runtime choice is made
    section: Quantization | None = None
    search: Int8Plan | None = None
    float_graph: onnx.ModelProto | None = None  # what a runtime ships instead of INT8 (default: the canonical)

    def outcome(self, choices: dict, built: list, max_drop: float) -> Quantization | None:
        """The report's quantization section once every runtime is built: the per-runtime choices,
        and for runtimes with their own quantizer (INT8 judged after the fact: TFLite's converter)
        whether each artifact's measured drop is within the budget."""
        if self.section is None:
            return None
        update = {"per_backend": choices} if choices else {}
        over = [a for a in built if a.accuracy_drop is not None and a.accuracy_drop > max_drop]
        if self.how == "own" and over:
            update.update(met=False, note="accuracy budget not met: " + "; ".join(
                f"{a.backend} INT8 drop {a.accuracy_drop:.4f} > {max_drop}" for a in over))
        missed = _missed_where_run(choices)
        if missed:  # INT8 insisted on, and no graph within the budget where it runs
            update.update(met=False, note="accuracy budget not met where the artifact runs: " + "; ".join(missed))
        return self.section.model_copy(update=update)

    def for_runtime(self, name: str, canonical, profile, threads: int, feeds, timing, control=None, calib=None,
                    workdir=None) -> Choice:
        """The graph runtime `name` builds; `control` (int8_choice.Int8Control) judges the INT8
        graphs a runtime chooses among in that runtime and drives its own quantizer, if it has one."""
        if self.search is None:
            return Choice(self.graph, self.precision)
        fallback = self.float_graph if self.float_graph is not None else canonical
        return choose(name, self.search, fallback, profile, threads, feeds, timing, control, calib, workdir)


def _missed_where_run(choices: dict | None) -> list[str]:
    """'openvino: static QDQ scores 0.9891 there' for each runtime whose shipped INT8 graph was
    judged where it runs and missed the budget (shipped because INT8 was asked for)."""
    return [f"{name}: {c.chosen} scores {t['score']:.4f} there" for name, c in (choices or {}).items()
            for t in (c.timings or []) if t.get("graph") == c.chosen and t.get("met") is False]


def plan(how: How, model: onnx.ModelProto, c, calib=None, judge=None, base: float = 0.0) -> PrecisionPlan:
    """The precision plan for `model` (the canonical, possibly pruned graph) in compilation `c`."""
    if how == "fp16":
        return PrecisionPlan(how, to_fp16(model), "fp16")
    if how == "bf16":  # FP32 weights: the runtime computes in BF16 (its inference precision)
        return PrecisionPlan(how, model, "bf16")
    if how == "prequantized":
        return _prequantized(model, c)
    budget = c.req.quant.budget
    if how == "own":
        if c.scope.resolve(model):
            raise EdgepackError(f"--keep-float does not reach {', '.join(c.backends)}: its converter quantizes on "
                                f"its own (float op types come from the target profile's keep_float_op_types)")
        return PrecisionPlan(how, model, "int8", Quantization(
            met=True, by="each backend's own quantizer, calibrated on --calib", max_drop=budget.max_drop,
            calibration={"data": calib.source, "samples": len(calib)}))
    if how == "search":
        c.events.step("INT8 search: calibrating, timing layer kinds, fitting the accuracy budget")
        search = Int8Search(c.profile, budget.as_tuple(), c.scope, c.bench.threads, fixed_batch(graph_inputs(model)),
                            insist=c.insist_int8, allow_dynamic="onnxruntime" in c.backends, timing=c.timing,
                            say=c.events.step, quantizers=c.req.quant.quantizers or QUANTIZERS)
        found = quantize_for_target(model, calib, judge, base, search)
        return PrecisionPlan(how, found.model, found.precision, Quantization(**found.section), found)
    return PrecisionPlan("fp32", model, "fp32")


def _prequantized(model: onnx.ModelProto, c) -> PrecisionPlan:
    """An INT8 graph as given. With the float graph it came from (`fp32_model`), each runtime
    builds and times both and ships the faster, unless INT8 was asked for: QDQ that a runtime
    cannot fuse runs slower than the float graph (the demo's QAT model on a VNNI host)."""
    section = Quantization(met=True, by="the model itself: already QDQ (quantization-aware training or an "
                                        "earlier quantizer); edgepack does not quantize it again")
    ref = c.req.quant.fp32_model
    if ref is None:
        return PrecisionPlan("prequantized", model, "int8", section)
    from edgepack.frontends import load_source
    from edgepack.ir.canonical import canonicalize

    shapes = {s.name: tuple(s.shape) for s in graph_inputs(model)}
    float_graph, _ = canonicalize(load_source(ref.value, None, None).model, shapes)
    search = Int8Plan(model, "int8", {}, [{"format": "INT8 as given", "model": model}],
                      insisted=c.req.quant.precision == "int8", timed_in="",  # every runtime times the two
                      float_source=False)
    return PrecisionPlan("prequantized", model, "int8", section, search, float_graph)
