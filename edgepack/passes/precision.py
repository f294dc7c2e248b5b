"""Choose what ships for INT8: measured speed per layer kind, the accuracy budget, static vs
dynamic format, and a final FP32-vs-INT8 check — an INT8 model slower than its source is never
shipped silently."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import onnx

from edgepack.data import Dataset
from edgepack.errors import EdgepackError
from edgepack.passes.accuracy import control, rank
from edgepack.passes.ladder import FLOAT_FAILING, RUNGS
from edgepack.passes.metrics import Evaluator, drop
from edgepack.passes.quantize import IgnoredScope, Quantizer, quantized_nodes
from edgepack.passes.quantize_nncf import NNCF_CONFIGS, NncfConfig, NncfQuantizer
from edgepack.passes.speed import select_kinds
from edgepack.runtime import DEFAULT_TIMING, ort_runner

NNCF_RUNG = "NNCF's graph"  # the ladder's last rung: another quantizer


# what the report gives of each candidate ("seconds": what making it added to the compile)
CANDIDATE_FIGURES = ("format", "score", "drop", "met", "ms", "int8_layers", "fidelity", "seconds")


@dataclass(frozen=True)
class Int8Search:
    """How the INT8 search runs: the target, the budget, what stays float, and how it times."""

    profile: Any  # TargetProfile
    budget: tuple[float, bool]  # (max drop, relative)
    scope: IgnoredScope
    threads: int
    batch: int = 1
    insist: bool = False  # --precision int8: FP32 is not an option for any runtime
    allow_dynamic: bool = True  # ONNX Runtime is among the runtimes: its dynamic format may compete
    timing: Any = DEFAULT_TIMING  # runtime.Timing: (runners, feeds) -> ms each
    rungs: tuple[str, ...] = RUNGS  # onnxruntime quantizer fallback rungs (passes.ladder), in order
    say: Any = None  # str -> None: progress lines (the compiler's events), so a long search shows life
    # the candidates tried, by quantizer (--quantizer): "onnxruntime" (edgepack's static QDQ through
    # onnxruntime.quantization), "nncf" (NNCF_CONFIGS), "dynamic" (where allow_dynamic)
    quantizers: tuple[str, ...] = ("onnxruntime", "nncf", "dynamic")

    def step(self, message: str) -> None:
        if self.say is not None:
            self.say(f"INT8 search: {message}")

    def counter(self, what: str):
        """progress(i, n) for the accuracy control's loops, as step lines."""
        return lambda i, n: self.step(f"{what} {i}/{n}")

    def ms(self, model: onnx.ModelProto, feeds) -> float:
        """A candidate's ONNX Runtime time, taken as the speed step took FP32's (fastest of rounds)."""
        return self.timing([ort_runner(model, self.threads)], feeds)[0]


def _static(quantizer, evaluator, base_score, user_float, feeds, search: Int8Search) -> dict:
    """Static QDQ: user scope + out-of-range tensors + slow kinds float, then the accuracy loop."""
    outliers = {n: r for n, r in quantizer.outlier_nodes().items() if n not in user_float}
    search.step("calibrated; timing each layer kind in INT8 against float")
    speed = select_kinds(quantizer, feeds, search.threads, keep_float=user_float + list(outliers),
                         timing=search.timing)
    # an explicit --precision int8 gets INT8 layers: the speed evidence is reported, not applied
    speed_float = [] if search.insist else speed["float_nodes"]
    search.step(f"static QDQ: fitting the accuracy budget ({evaluator.metric} on {len(evaluator.data)} samples)")
    result = control(quantizer, evaluator, base_score, *search.budget, user_float + list(outliers) + speed_float,
                     progress=search.counter("static QDQ: measured layer group"))
    kept = (_in_scope(user_float)
            + [{"node": n, "reason": r} for n, r in outliers.items()]
            + [{"node": n, "reason": "speed: this layer kind ran faster in float here"} for n in speed_float]
            + result.kept_float)
    return {"format": "static QDQ", "model": result.model, "score": result.score, "drop": result.drop,
            "met": result.met, "ms": search.ms(result.model, feeds), "kept_float": kept,
            "accuracy_steps": result.steps, "group_ranking": result.ranking, "speed": speed}


def _in_scope(names: list[str]) -> list[dict]:
    return [{"node": n, "reason": "ignored scope (user or profile)"} for n in names]


def _dynamic(quantizer, evaluator, base_score, names, feeds, search: Int8Search) -> dict | None:
    search.step("dynamic INT8 candidate")
    model = quantizer.quantize_dynamic(names)
    if model is None:
        return None
    score = evaluator.score(ort_runner(model))
    max_drop, relative = search.budget
    d = drop(base_score, score, relative)
    return {"format": "dynamic (MatMul/Gemm, ORT MatMulInteger)", "model": model, "score": score, "drop": d,
            "met": d <= max_drop, "ms": search.ms(model, feeds), "kept_float": _in_scope(names)}


def _nncf(quantizer, evaluator, base_score, names, feeds, search: Int8Search, ranking,
          config: NncfConfig) -> dict | None:
    """NNCF's quantization of the same graph, run as `config` says, as a competing candidate.
    Where it misses the budget, the accuracy control returns layers to float in the order measured
    on edgepack's own candidate (`ranking`, or a callable measuring it once when first needed):
    ranking with edgepack's quantizer (cached calibration), not NNCF's, keeps it to a few NNCF runs.
    `ranking` None: edgepack's quantizer failed on every rung, so NNCF's own graph is ranked."""
    try:
        nncf_quantizer = NncfQuantizer(quantizer, config=config)
    except ImportError:  # the openvino extra is not installed
        return None
    search.step(f"{config.label}: quantizing and fitting the accuracy budget")
    try:
        result = control(nncf_quantizer, evaluator, base_score, *search.budget, names, ranking=ranking,
                         progress=search.counter("NNCF: measured layer group"))
    except EdgepackError as e:  # a candidate that fails is reported, not fatal
        return {"format": config.label, "error": str(e)}
    return {"format": config.label, "model": result.model,
            "score": result.score, "drop": result.drop, "met": result.met,
            "ms": search.ms(result.model, feeds),
            "kept_float": _in_scope(names) + result.kept_float}


def _clocked(make, *args) -> dict | None:
    """make(*args) with the seconds it took: what each candidate adds to a compile, reported."""
    start = time.perf_counter()
    candidate = make(*args)
    if candidate is not None:
        candidate["seconds"] = time.perf_counter() - start
    return candidate


@dataclass
class Int8Plan:
    """What the INT8 search found. It times in ONNX Runtime, so `model`/`precision` are ONNX
    Runtime's pick (FP32 when INT8 measured slower there). `static` holds the static QDQ graphs
    (fastest in ONNX Runtime first) that other runtimes choose from: they cannot run the dynamic
    format, fuse QDQ patterns differently, and may run INT8 faster than FP32 where ONNX Runtime
    does not. Within the budget; when none is and INT8 ships anyway, the most accurate one."""

    model: onnx.ModelProto
    precision: str
    section: dict
    static: list[dict]  # {"format", "model"}
    insisted: bool  # --precision int8 was asked: FP32 is not an option for any runtime
    timed_in: str = "onnxruntime"  # the runtime whose timing made `model`/`precision` (ort_runner)
    # the graph runtimes fall back to is the float graph INT8 was searched from: a runtime's own
    # quantizer may start from it (False: the model came INT8, e.g. from QAT, and stays so)
    float_source: bool = True


def quantize_for_target(model: onnx.ModelProto, calib: Dataset, evaluator: Evaluator, base_score: float,
                        search: Int8Search) -> Int8Plan:
    """Quantize for the search's profile, check the budget, compare INT8 with FP32 in ONNX Runtime
    (see Int8Plan)."""
    with Quantizer(model, calib, search.profile, search.batch, search.rungs) as quantizer:
        feeds = next(calib.batches(search.batch))
        user_float = search.scope.resolve(model)
        static, ranking = None, None  # without edgepack's candidate, NNCF's own graph is ranked
        if "onnxruntime" in search.quantizers:
            static = _clocked(_attempt, "static QDQ", _static, quantizer, evaluator, base_score, user_float, feeds,
                              search)
            # static's ranking: [] when it met the budget at once (NNCF's candidates then get one
            # measured with edgepack's quantizer, once, only if one of them needs it), None when it failed
            ranking = static.get("group_ranking")
            if ranking == []:
                ranking = cache(partial(rank, quantizer, evaluator, base_score, search.budget[1], user_float,
                                        search.counter("measured layer group")))
        candidates = [static]
        for config in NNCF_CONFIGS if "nncf" in search.quantizers else ():
            candidates.append(_clocked(_nncf, quantizer, evaluator, base_score, user_float, feeds, search, ranking,
                                       config))
        if search.allow_dynamic and "dynamic" in search.quantizers:
            candidates.append(_clocked(_attempt, "dynamic (MatMul/Gemm, ORT MatMulInteger)", _dynamic, quantizer,
                                       evaluator, base_score, user_float, feeds, search))
        failed = [c for c in candidates if c is not None and "error" in c]
        candidates = [c for c in candidates if c is not None and "error" not in c]
        if not candidates:
            return _none_quantized(model, calib, search, failed, quantizer.ladder)
        return _decide(model, calib, evaluator, base_score, search, candidates, failed, quantizer.ladder)


def _attempt(label: str, build, *args) -> dict | None:
    """A candidate whose quantizer raises is reported with its error's first line, not fatal."""
    try:
        return build(*args)
    except EdgepackError as e:
        return {"format": label, "error": str(e)}


def _decide(model, calib, evaluator, base_score, search: Int8Search, candidates: list[dict], failed: list[dict],
            ladder) -> Int8Plan:
    """The pick among the candidates that quantized, and INT8 against FP32 (see Int8Plan)."""
    for c in candidates:
        c["int8_layers"] = int8_layers(c["model"])
        c["fidelity"] = evaluator.fidelity(ort_runner(c["model"]))
    # asked for INT8: an all-float candidate (FP32 in disguise) is not picked while INT8 ones exist
    best = _pick(([c for c in candidates if c["int8_layers"]] if search.insist else []) or candidates)
    feeds = next(calib.batches(search.batch))
    section = _section(calib, evaluator, base_score, search, best, candidates, failed)
    if "fp32_ms" not in section:  # no static candidate timed FP32 in its speed step
        section["fp32_ms"] = search.ms(model, feeds)
    section.update(_fallback_section(ladder, best, candidates, failed, search.quantizers))
    # the speed step and the accuracy control may float every layer: such a graph is FP32, and
    # no runtime is handed it as INT8
    static = sorted((c for c in candidates if c["format"].startswith("static") and c["int8_layers"]),
                    key=lambda c: c["ms"])
    within = [{"format": c["format"], "model": c["model"]} for c in static if c["met"]]
    fp32_ms = section["fp32_ms"]
    if not best["int8_layers"]:
        msg = "no layer was left in INT8 (the slow and the sensitive ones were kept float): shipping FP32"
        section.update(decision="fp32", met=True, note=_join(section.get("note"), msg))
        if search.insist:
            section["warning"] = "--precision int8 was asked, but no INT8 graph of the search kept a layer in INT8"
        return Int8Plan(model, "fp32", section, within, search.insist)
    if best["ms"] >= fp32_ms:
        msg = f"INT8 measured slower than FP32 here ({best['ms']:.3f} vs {fp32_ms:.3f} ms)"
        if not search.insist:  # FP32 loses nothing to quantization: the budget holds for what ships
            section.update(decision="fp32", met=True, note=_join(section.get("note"), f"{msg}: shipping FP32"))
            return Int8Plan(model, "fp32", section, within, search.insist)
        section["warning"] = f"{msg}; shipped INT8 because --precision int8 was asked"
    section["decision"] = "int8"
    fallback = [_pick(static)] if static else []  # empty: only the dynamic format kept INT8 layers
    return Int8Plan(best["model"], "int8", section,
                    within or [{"format": c["format"], "model": c["model"]} for c in fallback], search.insist)


def _none_quantized(model, calib, search: Int8Search, failed: list[dict], ladder) -> Int8Plan:
    """Every quantizer raised: one line saying why; FP32 ships with that note, or, where INT8 was
    insisted on, the line is the error."""
    reason = ("no quantizer produced an INT8 graph (" + "; ".join(f"{c['format']}: {c['error']}" for c in failed) + ")"
              if failed else f"no quantizer among {', '.join(search.quantizers)} produced an INT8 graph (the dynamic "
              "format quantizes MatMul/Gemm only)")
    if search.insist:
        raise EdgepackError(f"--precision int8: {reason}")
    section = {"met": True, "decision": "fp32", "format_candidates": failed, "note": f"{reason}: shipping FP32",
               "calibration": {"data": calib.source, "samples": len(calib)}, "quantizers": list(search.quantizers),
               **_fallback_section(ladder, None, [], failed, search.quantizers)}
    return Int8Plan(model, "fp32", section, [], search.insist)


def _fallback_section(ladder, best: dict | None, candidates: list[dict], failed: list[dict],
                      quantizers: tuple[str, ...] = ("nncf",)) -> dict:
    """The report's `fallback`: present when onnxruntime's quantizer raised. Each rung tried,
    in order, with the first line of its error; the rung that made onnxruntime's graph (when one
    did); NNCF's graph as the last rung; and which of them the shipped graph came from."""
    if not ladder.failed:
        return {}
    rungs = [{"rung": f"onnxruntime: {r}", "error": e} for r, e in ladder.failed.items() if r != ladder.rung]
    if ladder.rung:
        rungs.append({"rung": f"onnxruntime: {ladder.rung}", **({"float_nodes": ladder.failing}
                                                               if ladder.rung == FLOAT_FAILING else {})})
    nncf_error = next((c["error"] for c in failed if "NNCF" in c["format"]), None)
    if nncf_error is None and not any("NNCF" in c["format"] for c in candidates):
        nncf_error = ("nncf is not installed (the openvino extra)" if "nncf" in quantizers
                      else "not tried (--quantizer)")
    rungs.append({"rung": NNCF_RUNG, **({"error": nncf_error} if nncf_error else {})})
    shipped = None if best is None else (NNCF_RUNG if "NNCF" in best["format"] else
                                         f"onnxruntime: {ladder.rung}" if best["format"].startswith("static")
                                         else best["format"])
    rung, error = next(iter(ladder.failed.items()))
    why = f"onnxruntime's quantizer raised ({rung}: {error}); " + (
        f"the INT8 graph came from rung '{shipped}'" if shipped else "no rung produced an INT8 graph")
    return {"fallback": {"rungs": rungs, "shipped": shipped, "why": why}}


def _section(calib, evaluator, base_score, search: Int8Search, best: dict, candidates: list[dict],
             failed: list[dict]) -> dict:
    """The report's quantization section: the scheme, the winner's figures, every candidate."""
    q = search.profile.quantization
    max_drop, relative = search.budget
    own = next((c for c in candidates if "speed" in c), {})  # edgepack's static candidate, unless it failed
    section = {
        "scheme": {"format": q.format, "weights": q.weights.model_dump(), "activations": q.activations.model_dump(),
                   "reduce_range": q.reduce_range, "calibration": q.calibration, "op_types": list(q.op_types)},
        "calibration": {"data": calib.source, "samples": len(calib)}, "quantizers": list(search.quantizers),
        "metric": evaluator.metric, "fp32_score": base_score, "int8_score": best["score"],
        "fidelity": best["fidelity"], "drop": best["drop"],
        "max_drop": max_drop, "relative": relative, "met": best["met"], "format": best["format"],
        "int8_layers": best["int8_layers"], "kept_float": best["kept_float"],
        "int8_ms": best["ms"],
        "timing": f"in-process, fastest median of interleaved rounds, {search.threads} threads",
        "format_candidates": [{**{k: c[k] for k in CANDIDATE_FIGURES}, "kept_float": len(c["kept_float"])}
                              for c in candidates] + failed,
        # FP32 timed by the speed step, in the same session options
        **({"fp32_ms": own["speed"]["fp32_ms"]} if own else {}),
        **{k: own[k] for k in ("accuracy_steps", "group_ranking", "speed") if k in own},
    }
    if not best["met"]:
        section["note"] = (f"accuracy budget not met: best INT8 {evaluator.metric} {best['score']:.4f} vs "
                           f"FP32 {base_score:.4f} (drop {best['drop']:.4f} > {max_drop}); shipped the best found")
    return section


def _join(*notes) -> str:
    return "; ".join(filter(None, notes))


def int8_layers(model: onnx.ModelProto) -> int:
    """Layers that run in INT8: QDQ-wrapped (static) or integer ops (dynamic)."""
    return len(quantized_nodes(model)) or sum(n.op_type in ("MatMulInteger", "ConvInteger") for n in model.graph.node)


def _pick(candidates: list[dict]) -> dict:
    """The fastest candidate that meets the budget; if none does, the most accurate one."""
    meeting = [c for c in candidates if c["met"]]
    return min(meeting, key=lambda c: c["ms"]) if meeting else max(candidates, key=lambda c: c["score"])
