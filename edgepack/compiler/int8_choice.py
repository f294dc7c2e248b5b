"""Which graph each runtime gets after the INT8 search — returned as data, one runtime at a time.

ONNX Runtime gets the search's own pick: it was timed there. A runtime that builds quickly
(`times_int8_choice`) builds and times each static INT8 graph within the budget, and FP32
unless INT8 was insisted on, and takes the fastest *there*: runtimes fuse QDQ patterns
differently (NNCF's graph is slow in ONNX Runtime, fast in OpenVINO), and INT8 that loses to
FP32 in ONNX Runtime can win elsewhere. Others follow ONNX Runtime's decision with the static
graph (dynamic INT8 is an ONNX Runtime format). A graph INT8 as given (with the float graph it came
from) was timed nowhere: every runtime that can, ONNX Runtime included, times the two itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgepack.backends import get_backend
from edgepack.errors import EdgepackError
from edgepack.passes.precision import Int8Plan
from edgepack.report.schema import RuntimeChoice


@dataclass(frozen=True)
class Choice:
    """The graph one runtime builds, its precision, and (when a choice was made) the evidence."""

    graph: onnx.ModelProto
    precision: str
    evidence: RuntimeChoice | None = None
    prebuilt: Path | None = None  # the artifact the choice already built (shipped as it is)


@dataclass(frozen=True)
class Int8Control:
    """What a runtime's own accuracy-controlled quantizer needs: the compile's metric of a run
    callable, the judged feeds, the budget; and `gate`, run -> (score, within the budget)."""

    score: Callable
    feeds: tuple
    max_drop: float
    relative: bool
    gate: Callable
    # nodes the user's --keep-float holds float: a runtime's own quantizer names nodes its own way,
    # so with any, it does not compete (a scope it cannot honour is never dropped silently)
    user_float: tuple = ()


def choose(name: str, plan: Int8Plan, canonical: onnx.ModelProto, profile, threads: int, feeds,
           timing, control: Int8Control | None = None, calib=None, workdir: Path | None = None) -> Choice:
    """The graph runtime `name` ships after the INT8 search `plan` (see the module's docstring)."""
    backend = get_backend(name, profile.backend_options(name))
    if name == plan.timed_in or not backend.consumes_qdq:
        return Choice(plan.model, plan.precision)
    if "int8" not in backend.precisions and not plan.insisted:  # asked for INT8: emit() says it cannot
        why = f"{name} builds {', '.join(backend.precisions)} only"
        return Choice(canonical, "fp32", RuntimeChoice(chosen="FP32", precision="fp32", why=why))
    options = [(o["format"], o["model"], "int8", _emitter(backend, o["model"], profile, "int8")) for o in plan.static]
    own = None
    if backend.controls_int8 and control is not None and calib is not None and plan.float_source \
            and not control.user_float:
        own = (f"NNCF accuracy control in {name}", canonical, "int8",
               lambda folder: backend.emit_controlled(canonical, folder, profile, calib, control))
        options.append(own)
    if not plan.insisted or not options:
        options.append(("FP32", canonical, "fp32", _emitter(backend, canonical, profile, "fp32")))
    # one graph and nothing to judge it by: it ships as it is. With a budget, a runtime that
    # builds quickly judges even a lone graph where it runs: the search's pick met the budget in
    # ONNX Runtime, and OpenVINO ran one such graph 1 clear photo in 92 off FP32 (budget: none)
    judged_here = control is not None and backend.times_int8_choice
    if len(options) == 1 and options[0] is not own and not judged_here:  # the runtime's own quantizer: below
        return Choice(options[0][1], options[0][2])
    if not backend.times_int8_choice and plan.timed_in:  # slow builds follow the runtime that timed
        return Choice(plan.static[0]["model"], "int8") if plan.precision == "int8" else Choice(canonical, "fp32")
    return _timed(backend, options, threads, feeds, timing, control and control.gate, workdir)


def _emitter(backend, graph, profile, precision: str):
    return lambda folder: backend.emit(graph, folder, profile, precision=precision)


def _timed(backend, options: list[tuple], threads: int, feeds, timing, gate=None, workdir: Path | None = None) -> Choice:
    """Build every option in `backend` and keep the fastest there among those within the budget
    there (`gate`: run -> (score, met)); FP32 is within it by definition. With `workdir`, the
    builds are kept there and the winner ships as built (`prebuilt`): a runtime's own quantizer
    is not run twice."""
    timings, runners, paths = [{"graph": label} for label, *_ in options], {}, {}
    with tempfile.TemporaryDirectory(prefix="edgepack-int8-choice-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        for i, (label, _graph, _precision, build) in enumerate(options):
            folder = root / str(i)
            folder.mkdir(parents=True)
            try:
                paths[i] = build(folder)
                runners[i] = backend.runner(paths[i], threads)
            except EdgepackError as e:  # a candidate this runtime cannot build is reported, not fatal
                timings[i]["error"] = str(e)
        for i, ms in zip(runners, timing(list(runners.values()), feeds)):
            timings[i]["ms"] = ms
    if not runners:
        raise EdgepackError(f"{backend.name} built none of the graphs: " +
                            "; ".join(f"{t['graph']}: {t['error']}" for t in timings))
    eligible, why = _within(runners, options, timings, gate)
    best = min(eligible, key=lambda i: timings[i]["ms"])
    label, graph, precision, _ = options[best]
    evidence = RuntimeChoice(chosen=label, precision=precision, timings=timings, why=why,
                             timing=f"in-process, fastest median of interleaved rounds, {threads} threads, "
                                    f"each graph built for {backend.name}")
    return Choice(graph, precision, evidence, paths[best] if workdir is not None else None)


def _within(runners: dict, options: list[tuple], timings: list[dict], gate) -> tuple[list[int], str | None]:
    """The options that may ship: every one without a gate; else FP32 and the INT8 graphs whose
    score in this runtime is within the budget (each timing gets its score and verdict). When
    none is (INT8 insisted on), the best-scoring INT8 graph, said in `why`."""
    if gate is None:
        return list(runners), None
    eligible = []
    for i, run in runners.items():
        if options[i][2] == "fp32":
            eligible.append(i)
            continue
        timings[i]["score"], timings[i]["met"] = gate(run)
        if timings[i]["met"]:
            eligible.append(i)
    missed = [options[i][0] for i in runners if timings[i].get("met") is False]
    why = f"outside the accuracy budget when run here: {', '.join(missed)}" if missed else None
    if not eligible:
        eligible = [max(runners, key=lambda i: timings[i]["score"])]
        why += "; INT8 was asked for, so the best-scoring of them ships"
    return eligible, why
