"""The Python API; the CLI is a thin layer over these functions.

compile(): frontend -> canonical ONNX -> per-backend artifact -> parity -> latency -> report.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgepack import __version__
from edgepack.backends import REGISTRY, backend_for_artifact, get_backend
from edgepack.bench.report import write_report
from edgepack.data import Dataset, load_dataset, random_inputs
from edgepack.devices import LocalDevice, for_artifact
from edgepack.errors import EdgepackError, first_line
from edgepack.passes.metrics import Evaluator, drop, parse_drop
from edgepack.passes.precision import quantize_for_target
from edgepack.passes.prune import magnitude_prune
from edgepack.passes.prune import prune as prune_channels
from edgepack.passes.quantize import IgnoredScope, quantized_nodes, to_fp16
from edgepack.runtime import interleaved_ms, ort_runner
from edgepack.frontends import load_source
from edgepack.fsutil import artifact_identity, check_free, staged_dir
from edgepack.hostinfo import environment
from edgepack.ir.canonical import canonicalize
from edgepack.ir.spec import graph_inputs, graph_outputs
from edgepack.ir.stats import model_stats
from edgepack.targets import TargetProfile, load_profile
from edgepack.verify import compare_outputs, measure_parity

PARITY_SAMPLES = 16
BOARD_PARITY_SAMPLES = 2  # each emulated run costs seconds
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_DROP = 0.01
FIDELITY_SAMPLES = 64
BENCH_FEEDS = 8


def inspect(model, input_shapes: dict | None = None, weights: str | None = None) -> dict:
    """Stats of a model as given (ONNX files as they are; torch models as exported)."""
    source = load_source(model, input_shapes, weights)
    stats = model_stats(source.model, source.path if source.kind == "onnx" else None,
                        input_shapes=_named_shapes(source.model, input_shapes))
    stats["prunable_groups"] = _prunable_groups(source.model, input_shapes)
    return stats


def _prunable_groups(model, input_shapes) -> list[dict] | dict:
    """Channel groups of the canonical graph and their L1 importance (what --prune would cut)."""
    from edgepack.passes.prune import group_importance
    from edgepack.passes.prune_graph import analyze

    try:
        canonical, _ = canonicalize(model, input_shapes)
        analysis = analyze(canonical)
    except EdgepackError as e:
        return {"error": str(e)}
    groups = []
    for g in analysis.groups:
        row = g.to_dict()
        if g.prunable:
            imp = group_importance(canonical, g, "l1", analysis)
            row["importance"] = {"min": float(imp.min()), "mean": float(imp.mean()), "max": float(imp.max())}
        groups.append(row)
    return groups


def compile(model, target: str | TargetProfile = "host", backends: list[str] | None = None,
            output_dir: str | Path | None = None, input_shapes: dict | None = None,
            weights: str | None = None, calib: str | Path | None = None, precision: str | None = None,
            eval_data: str | Path | None = None, metric: str | None = None, max_drop: str | float | None = None,
            keep_float: list[str] | None = None, prune: float | None = None, prune_mode: str = "uniform",
            prune_layers: dict | None = None, prune_protect: list[str] | None = None,
            sparsity: float | None = None, runs: int | None = None, warmup: int | None = None,
            threads: int | None = None, force: bool = False, progress: bool = True) -> dict:
    """Compile `model` for `target`; returns the report (also written to output_dir).

    precision None = what the target rewards (its profile's `precision`) when calibration data
    is given, else fp32. INT8 is checked against `max_drop` (default 0.01 absolute; "1%" is
    relative) on `eval_data` with `metric`, or on fidelity to FP32 over the calibration inputs.
    """
    profile = target if isinstance(target, TargetProfile) else load_profile(target)
    chosen = _choose_backends(profile, backends)
    budget = parse_drop(DEFAULT_MAX_DROP if max_drop is None else max_drop)
    scope = IgnoredScope.parse(keep_float)
    if precision not in (None, *PRECISIONS):
        raise EdgepackError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    source = load_source(model, input_shapes, weights)
    outdir = Path(output_dir) if output_dir else Path("edgepack-out") / f"{_slug(source.name)}-{profile.name}"
    check_free(outdir, force)  # fail before the slow part, not after it

    canonical, canon_info = canonicalize(source.model, input_shapes)
    canonical, compression = _compress(canonical, profile, prune, prune_mode, prune_layers, prune_protect, sparsity)
    specs = graph_inputs(canonical)
    batch = _batch(specs)
    data = _dataset(calib, specs)
    evalset = _dataset(eval_data, specs)
    prequantized = bool(quantized_nodes(canonical))
    if prequantized and precision not in (None, "int8"):
        raise EdgepackError(f"the model is already INT8 (QuantizeLinear/DequantizeLinear); --precision {precision} does not apply")
    wanted = "int8" if prequantized else precision or (profile.precision if data is not None else "fp32")
    if wanted == "int8" and data is None and not prequantized:
        raise EdgepackError("INT8 needs calibration data: pass --calib DATA (a few hundred samples)")
    parity_feeds = _feeds(data, specs, PARITY_SAMPLES)
    canon_info["parity"] = measure_parity(source.run, ort_runner(canonical, optimize=False), parity_feeds)
    canon_stats = model_stats(canonical)
    bench = profile.bench_settings(runs, warmup, threads)

    report = {
        "edgepack_version": __version__,
        "command": "compile",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": _source_section(source),
        "canonical": {**canon_info, **{k: canon_stats[k] for k in ("params", "macs", "op_histogram")}},
        "target": {"name": profile.name, "description": profile.description, "profile": profile.to_dict()},
        "data": {"source": data.source if data else "random normal inputs (no --calib given)",
                 "samples_for_parity": len(parity_feeds)},
        "precision_requested": precision or f"target default ({wanted})",
        "artifacts": [],
        "environment": environment(),
    }
    report.update({k: v for k, v in compression.items() if k != "plan"})
    if precision is None and data is None and profile.precision != "fp32":
        report["notes"] = [f"{profile.name} rewards {profile.precision}; pass --calib DATA to get it"]
    evaluator = None
    if evalset is not None or (wanted == "int8" and not prequantized):
        metric = metric or ("top1" if evalset is not None and evalset.labels is not None else "cosine")
        # fidelity on calibration inputs needs no more than FIDELITY_SAMPLES to rank layers
        judged = evalset if evalset is not None else data.take(FIDELITY_SAMPLES * batch)
        evaluator = Evaluator.build(metric, judged, batch, source.run)
        report["accuracy"] = {"metric": metric, "data": evaluator.data.source, "samples": len(evaluator.data),
                              "source": evaluator.score(source.run)}
        if compression:  # artifacts answer for what they lose against the pruned FP32 graph they come from
            compressed = ort_runner(canonical)
            report["accuracy"]["compressed_fp32"] = evaluator.score(compressed)
        if budget[1] and not report["accuracy"]["source"]:
            raise EdgepackError(f"a relative --max-drop needs a metric on which FP32 does not score 0 ({metric} "
                                f"does): give an absolute budget, e.g. --max-drop 0.01")

    shipped, shipped_precision, plan = canonical, wanted, None
    own_quantizers = wanted == "int8" and not prequantized and not any(get_backend(n).consumes_qdq for n in chosen)
    if prequantized:
        report["quantization"] = {"by": "the model itself: already QDQ (quantization-aware training or an "
                                        "earlier quantizer); edgepack does not quantize it again", "met": True}
    elif own_quantizers:
        if scope.resolve(canonical):
            raise EdgepackError(f"--keep-float does not reach {', '.join(chosen)}: its converter quantizes on its "
                                f"own (float op types come from the target profile's keep_float_op_types)")
        report["quantization"] = {"by": "each backend's own quantizer, calibrated on --calib", "met": True,
                                  "max_drop": budget[0], "calibration": {"data": data.source, "samples": len(data)}}
    elif wanted == "int8":
        judge, base = evaluator, report["accuracy"]["source"]
        if compression:  # INT8 answers for what it loses against the pruned graph, not for pruning's loss
            judge = evaluator.against(compressed)
            base = judge.score(compressed)
        plan = quantize_for_target(canonical, data, profile, judge, base, budget, scope, bench["threads"], batch,
                                   insist=precision == "int8", allow_dynamic="onnxruntime" in chosen)
        shipped, shipped_precision, report["quantization"] = plan.model, plan.precision, plan.section
    elif wanted == "fp16":
        shipped = to_fp16(canonical)

    ops = set(canon_stats["op_histogram"])
    with staged_dir(outdir, force) as stage:
        for name in chosen:
            art_dir = stage / name
            art_dir.mkdir()
            try:
                model_for, precision_for = (shipped, shipped_precision) if plan is None else _graph_for(
                    name, plan, canonical, profile, bench["threads"], parity_feeds[0])
                entry = _artifact(name, art_dir, canonical, model_for, precision_for, data, profile, ops, bench,
                                  prequantized)
            except EdgepackError as e:
                if backends != ["auto"]:
                    raise
                # exploring every runtime: one that cannot take this model is reported, not fatal
                report.setdefault("skipped", []).append({"backend": name, "reason": str(e)})
                shutil.rmtree(art_dir)
                continue
            path = Path(entry["path"])
            entry["path"] = str(path.relative_to(stage))
            run = entry.pop("run")
            device = for_artifact(name, path)
            if not device.latency_is_real:  # cross-compiled: checked on the emulated board, never timed as real
                feeds = parity_feeds[:BOARD_PARITY_SAMPLES]  # one emulated process for all of them
                entry["parity"] = compare_outputs([source.run(f) for f in feeds], device.outputs(name, path, feeds))
                entry["latency_ms"] = None
                entry["emulated_run"] = device.time(name, path, parity_feeds[:1], threads=1, warmup=0, runs=10,
                                                    progress=progress)
                report["artifacts"].append(entry)
                continue
            entry["parity"] = measure_parity(source.run, run, parity_feeds)
            if evaluator is not None:
                entry["accuracy"] = evaluator.score(run)
                entry["accuracy_drop"] = drop(report["accuracy"].get("compressed_fp32", report["accuracy"]["source"]),
                                              entry["accuracy"], budget[1])
            entry.update(device.time(name, path, _feeds(data, specs, BENCH_FEEDS), progress=progress, **bench))
            report["artifacts"].append(entry)
        if own_quantizers:
            _check_own_quantizers(report["quantization"], report["artifacts"], budget[0])
        if not report["artifacts"]:
            raise EdgepackError("no runtime could build this model: " +
                                "; ".join(f"{x['backend']}: {x['reason']}" for x in report["skipped"]))
        if "plan" in compression:  # which channels survived: the fine-tuning stage reuses it
            compression["plan"].save(stage / "prune_plan.json")
            report["pruning"]["plan"] = "prune_plan.json"
        report["selected"] = _select(report["artifacts"], budget[0] if evaluator is not None else None)
        report.update(_primary(report["artifacts"][report["selected"]["index"]]))
        report["output_dir"] = str(outdir)
        write_report(stage, report)
    return report


def run(recipe, output_dir: str | Path | None = None, force: bool = False, resume: bool = False,
        progress: bool = True) -> dict:
    """The distill -> prune -> quantize -> emit flow of a recipe (YAML path, dict or Recipe).

    Each stage is measured, gated and saved in its own folder; raises
    edgepack.pipeline.engine.GateFailed (with `.report`) when a stage misses its gate.
    """
    from edgepack.pipeline.engine import run as run_flow

    return run_flow(recipe, output_dir, force=force, resume=resume, progress=progress)


def profile(artifact: str | Path, target: str | TargetProfile | None = None, backend: str | None = None,
            inputs: str | Path | None = None, runs: int | None = None, warmup: int | None = None,
            threads: int | None = None, output_dir: str | Path | None = None, force: bool = False,
            progress: bool = True) -> dict:
    """Latency report of an existing artifact, measured in a fresh process."""
    path = Path(artifact)
    if not path.exists():
        raise EdgepackError(f"{artifact}: no such file")
    prof = target if isinstance(target, TargetProfile) else load_profile(target or "host")
    runtime = get_backend(backend) if backend else backend_for_artifact(path)
    try:
        specs = runtime.inputs(runtime.load(path, 1))
    except EdgepackError:
        raise
    except Exception as e:
        raise EdgepackError(f"{artifact}: {runtime.name} cannot load it: {first_line(e)}")
    outdir = Path(output_dir) if output_dir else Path("edgepack-out") / (
        f"profile-{_slug(path.stem)}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_free(outdir, force)
    data = _dataset(inputs, specs)
    bench = prof.bench_settings(runs, warmup, threads)
    entry = {"backend": runtime.name, "precision": "as built", "path": str(path),
             **artifact_identity(path, runtime.companions(path)),
             "inputs": [s.to_dict() for s in specs], "notes": []}
    entry.update(LocalDevice().time(runtime.name, path, _feeds(data, specs, BENCH_FEEDS), progress=progress, **bench))
    report = {
        "edgepack_version": __version__,
        "command": "profile",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": {"name": prof.name, "description": prof.description},
        "data": {"source": data.source if data else "random normal inputs"},
        "artifacts": [entry],
        **_primary(entry),
        "environment": environment(),
    }
    with staged_dir(outdir, force) as stage:
        report["output_dir"] = str(outdir)
        write_report(stage, report)
    return report


# -- helpers ---------------------------------------------------------------------------------

def _compress(model, profile, ratio, mode, layers, protect, sparsity) -> tuple:
    """Structured pruning (widths rounded to the target's channel multiple), then magnitude
    sparsity; returns the model and the report sections (with the plan to save)."""
    out: dict = {}
    if ratio or layers:  # --prune-layer alone prunes just those layers (the rest at ratio 0)
        ratio = ratio or 0.0
        before = model_stats(model)
        model, plan = prune_channels(model, ratio, mode=mode, channel_multiple=profile.pruning.channel_multiple,
                                     overrides=layers, protected=protect)
        after = model_stats(model)
        out["pruning"] = {"ratio": ratio, "mode": mode, "channel_multiple": plan.channel_multiple,
                          "params_before": before["params"], "params_after": after["params"],
                          "macs_before": before["macs"], "macs_after": after["macs"],
                          **plan.summary(), "unprunable": plan.unprunable, "notes": plan.notes}
        out["plan"] = plan
    if sparsity:
        model, out["sparsity"] = magnitude_prune(model, sparsity)
    return model, out


def _artifact(name, art_dir: Path, canonical, shipped, precision: str, calib, profile, ops: set, bench,
              prequantized: bool = False) -> dict:
    """Emit one backend's artifact and open it; parity, accuracy and latency are added by the caller."""
    backend = get_backend(name)
    # a runtime with its own quantizer gets the float graph and the calibration data instead of QDQ
    own_quantizer = precision != "fp32" and not backend.consumes_qdq
    if own_quantizer and prequantized:
        raise EdgepackError(f"{name} quantizes with its own converter and cannot take an already-INT8 (QDQ) "
                            "model: give it the float model and --calib")
    path = backend.emit(canonical if own_quantizer else shipped, art_dir, profile, precision=precision,
                        calib=calib if own_quantizer else None)
    deploys = name in profile.backends
    described = backend.describe(path)
    device = for_artifact(name, path)
    emulated = not device.latency_is_real
    notes = [] if deploys else [f"{name} is not among {profile.name}'s runtimes ({', '.join(profile.backends)})"]
    elsewhere = profile.runs_elsewhere()
    if elsewhere and not emulated:
        notes.append(f"timed on this host, not on {profile.name}'s {elsewhere}: the figures rank artifacts "
                     "here, they are not the target's latency")
    return {
        "backend": name, "precision": precision, "path": str(path), **artifact_identity(path, backend.companions(path)),
        "emulated": emulated,
        "run": (lambda feeds: device.outputs(name, path, [feeds])[0]) if emulated
        else backend.runner(path, bench["threads"]),
        "unsupported_ops": profile.unsupported_ops(ops, name) if deploys else [],
        "notes": notes, "runtime": described,
    }



def _graph_for(name: str, plan, canonical, profile, threads: int, feeds) -> tuple:
    """(graph, precision) for runtime `name` after the INT8 search.

    ONNX Runtime gets the search's own pick: it was timed there. A runtime that builds quickly
    (`times_int8_choice`) builds and times each static INT8 graph within the budget, and FP32
    unless INT8 was insisted on, and takes the fastest *there*: runtimes fuse QDQ patterns
    differently (NNCF's graph is slow in ONNX Runtime, fast in OpenVINO), and INT8 that loses to
    FP32 in ONNX Runtime can win elsewhere. Others follow ONNX Runtime's decision with the static
    graph (dynamic INT8 is an ONNX Runtime format). The timings go to `quantization.per_backend`."""
    backend = get_backend(name)
    if name == plan.timed_in or not backend.consumes_qdq:
        return plan.model, plan.precision
    if "int8" not in backend.precisions and not plan.insisted:  # asked for INT8: emit() says it cannot
        plan.section.setdefault("per_backend", {})[name] = {"chosen": "FP32", "precision": "fp32",
                                                           "why": f"{name} builds {', '.join(backend.precisions)} only"}
        return canonical, "fp32"
    options = [(o["format"], o["model"], "int8") for o in plan.static]
    if not plan.insisted or not options:
        options.append(("FP32", canonical, "fp32"))
    if len(options) == 1:
        return options[0][1], options[0][2]
    if not backend.times_int8_choice:
        return (plan.static[0]["model"], "int8") if plan.precision == "int8" else (canonical, "fp32")
    timings, runners = [{"graph": label} for label, _, _ in options], {}
    with tempfile.TemporaryDirectory(prefix="edgepack-int8-choice-") as tmp:
        for i, (label, graph, precision) in enumerate(options):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            try:
                runners[i] = backend.runner(backend.emit(graph, folder, profile, precision=precision), threads)
            except EdgepackError as e:  # a candidate this runtime cannot build is reported, not fatal
                timings[i]["error"] = str(e)
        for i, ms in zip(runners, interleaved_ms(list(runners.values()), feeds)):
            timings[i]["ms"] = ms
    if not runners:
        raise EdgepackError(f"{name} built none of the graphs: " +
                            "; ".join(f"{t['graph']}: {t['error']}" for t in timings))
    best = min(runners, key=lambda i: timings[i]["ms"])
    label, graph, precision = options[best]
    plan.section.setdefault("per_backend", {})[name] = {
        "timings": timings, "chosen": label, "precision": precision,
        "timing": f"in-process, fastest median of interleaved rounds, {threads} threads, each graph built for {name}"}
    return graph, precision


def _check_own_quantizers(q: dict, artifacts: list[dict], max_drop: float) -> None:
    """INT8 from a runtime's own quantizer (TFLite's converter) is judged after the fact: the
    budget holds only if every such artifact's measured drop is within it."""
    over = [a for a in artifacts if a.get("accuracy_drop") is not None and a["accuracy_drop"] > max_drop]
    if over:
        q["met"] = False
        q["note"] = "accuracy budget not met: " + "; ".join(
            f"{a['backend']} INT8 drop {a['accuracy_drop']:.4f} > {max_drop}" for a in over)


def _choose_backends(profile: TargetProfile, requested: list[str] | None) -> list[str]:
    """Requested backends as given; "auto": every runtime of the target that edgepack can build
    here (the fastest within the accuracy budget is then selected); by default the target's
    preferred runtime that is installed."""
    if requested and requested != ["auto"]:
        for name in requested:
            if name not in REGISTRY:
                get_backend(name)  # raises with close-name suggestions
        return list(dict.fromkeys(requested))
    usable, missing = [], []
    for name in profile.backends:
        try:
            get_backend(name)
            usable.append(name)
        except EdgepackError as e:
            missing.append(str(e))
    if not usable:
        raise EdgepackError(f"none of {profile.name}'s runtimes is usable: {'; '.join(missing)}")
    return usable if requested == ["auto"] else usable[:1]


def _dataset(data, specs) -> Dataset | None:
    """A path to load, or a Dataset already in memory (the pipeline's splits), checked against the inputs."""
    if isinstance(data, Dataset):
        return data.check_against(specs)
    return load_dataset(data, specs) if data else None


def _feeds(data: Dataset | None, specs, n: int) -> list[dict[str, np.ndarray]]:
    """Batches shaped like the model's inputs: real data when given, seeded random otherwise."""
    batch = _batch(specs)
    if data is None:
        data = random_inputs(specs, n=n * batch, seed=0)
    whole = min(n, len(data) // batch) * batch  # a fixed-batch graph cannot take a short last batch
    if not whole:
        raise EdgepackError(f"{data.source}: {len(data)} samples, fewer than the model's batch of {batch}")
    return list(data.take(whole).batches(batch))


def _batch(specs) -> int:
    """The graph's fixed batch size (canonical graphs have static shapes)."""
    first = specs[0].shape[0] if specs and specs[0].shape else 1
    return first if isinstance(first, int) and first > 0 else 1


def _source_section(source) -> dict:
    stats = model_stats(source.model, source.path if source.kind == "onnx" else None)
    return {"name": source.name, "kind": source.kind, "path": source.path, "sha256": source.sha256,
            "params": stats["params"], "macs": stats["macs"], "size_bytes": stats["size_bytes"],
            "inputs": [s.to_dict() for s in graph_inputs(source.model)],
            "outputs": [s.to_dict() for s in graph_outputs(source.model)]}


def _select(artifacts: list[dict], max_drop: float | None) -> dict:
    """The artifact to ship: the lowest p50 among those within the accuracy budget."""
    timed = [i for i, a in enumerate(artifacts) if a["latency_ms"] is not None]
    if not timed:
        return {"index": 0, "backend": artifacts[0]["backend"], "reason": "only emulated artifacts (not timed)"}
    ok = [i for i in timed if max_drop is None or artifacts[i].get("accuracy_drop", 0.0) <= max_drop]
    pool = ok or timed
    best = min(pool, key=lambda i: artifacts[i]["latency_ms"]["p50"])
    a = artifacts[best]
    why = "the only artifact" if len(artifacts) == 1 else (
        f"lowest p50 ({a['latency_ms']['p50']:.3f} ms) of {len(artifacts)} artifacts"
        + (" within the accuracy budget" if max_drop is not None and ok else ""))
    return {"index": best, "backend": a["backend"], "reason": why}


def _primary(entry: dict) -> dict:
    """The shipped artifact's headline fields, at the top of the report for quick reading."""
    keys = ("backend", "precision", "latency_ms", "load_ms", "throughput_per_s", "memory_mb", "parity")
    return {k: entry[k] for k in keys if k in entry}


def _named_shapes(model, input_shapes):
    from edgepack.ir.spec import match_shapes

    return match_shapes([s.name for s in graph_inputs(model)], input_shapes) or None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "model"
