"""The compile flow, in the order it happens:

    prepare -> lower -> compress -> evaluate -> plan precision -> build and measure per runtime -> finish

Each step is a function of the compilation and what the steps before it made; none of them
prints (they emit events) or touches process-global state, so compiles can run side by side.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnx

from edgepack import interrupt
from edgepack.compiler import artifacts as build
from edgepack.compiler import precision
from edgepack.compiler.context import Compilation
from edgepack.compiler.inputs import Split, dataset, feeds, hold_out, shapes_for
from edgepack.compiler.request import CompileRequest
from edgepack.compiler.select import choose_backends, headline, select
from edgepack.errors import EdgepackError
from edgepack.events import Events, silent
from edgepack.frontends import load_source
from edgepack.fsutil import check_free, input_paths, output_lock, slug, staged_dir
from edgepack.ir.canonical import canonicalize
from edgepack.ir.spec import fixed_batch, graph_inputs, graph_outputs
from edgepack.ir.stats import model_stats
from edgepack.passes.metrics import Evaluator, drop, output_index
from edgepack.passes.prune import magnitude_prune
from edgepack.passes.prune import prune as prune_channels
from edgepack.passes.quantize import IgnoredScope
from edgepack.report import header, write_report
from edgepack.report.schema import Accuracy, CompileReport, Skipped
from edgepack.runtime import DEFAULT_TIMING, Timing, ort_runner
from edgepack.targets import TargetProfile, load_profile
from edgepack.verify import measure_parity, nonfinite_weights

PARITY_SAMPLES = 16
INPUTS_FILE = "inputs.npz"  # a few of the compile's own inputs, kept beside the report
INPUTS_FEEDS = 3  # enough for a bundle's golden vectors, small enough for a 224x224 CNN (~2 MB)
INPUTS_MAX_BYTES = 32 << 20  # fewer feeds (at least one) for models with big inputs


def compile_request(req: CompileRequest, events: Events | None = None,
                    timing: Timing = DEFAULT_TIMING) -> CompileReport:
    """Compile as `req` says; returns the typed report (also written to the output folder)."""
    c = prepare(req, events or silent(), timing)
    with output_lock(c.outdir):  # a second compile into this -o refuses now, not after the work
        return _compile(c, req)


def _compile(c: Compilation, req: CompileRequest) -> CompileReport:
    """The steps after prepare, with the output folder held."""
    model, canon_info = lower(c)
    model, compression = compress(c, model)
    data = Data.of(c, model)
    how = precision.intent(req.quant, model, data.calib is not None, c.profile, list(c.backends), c.exploring)
    # parity of the graph every artifact is built from (pruned, when --prune: one-shot pruning loses accuracy)
    canon_info["parity"] = measure_parity(c.source.run, ort_runner(model, optimize=False), data.parity_feeds)
    judge = evaluate(c, model, data, compressed=bool(compression), needed=how in ("search", "own"))
    plan = precision.plan(how, model, c, data.calib, *judge.for_int8())
    with staged_dir(c.outdir, req.force, "compile", _inputs(req)) as stage:
        built = build_all(c, stage, model, plan, data, judge)
        build.measure_on_devices(c, built.artifacts, stage, data)
        if "plan" in compression:  # which channels survived: the fine-tuning stage reuses it
            compression["plan"].save(stage / "prune_plan.json")
            compression["pruning"]["plan"] = "prune_plan.json"
        save_inputs(stage / INPUTS_FILE, kept_inputs(data.parity_feeds))
        report = finish(c, model, canon_info, compression, data, judge, plan, built)
        write_report(stage, report)
        interrupt.check()  # a signal some library swallowed: the output is not published
    c.events.emit("report", f"report: {c.outdir}/report.md (and report.json)", path=str(c.outdir / "report.json"),
                  command="compile", datasets=_datasets(req))
    return report


def prepare(req: CompileRequest, events: Events, timing: Timing) -> Compilation:
    """Everything checked before the slow part: target, runtimes, options, model, output folder."""
    profile = with_calibration(req.target if isinstance(req.target, TargetProfile) else load_profile(req.target),
                               req.quant.calibration)
    backends = tuple(choose_backends(profile, list(req.backends) if req.backends else None))
    scope = IgnoredScope.parse(list(req.quant.keep_float))
    source = load_source(req.model.value, req.shapes, req.weights)
    output_index([o.name for o in graph_outputs(source.model)], req.evaluation.output)  # a misspelt name fails now
    outdir = Path(req.output_dir) if req.output_dir else Path("edgepack-out") / f"{slug(source.name)}-{profile.name}"
    check_free(outdir, req.force, _inputs(req))  # fail before the slow part, not after it
    devices = tuple(req.devices.resolve())
    for device in devices:  # an unreachable or unknown device fails now, not after the build
        device.probe()
    events.step(f"compile {source.name} for {profile.name}: {', '.join(backends)}")
    return Compilation(req, profile, backends, req.bench.resolve(profile), scope, source, outdir, events, timing,
                       devices)


def with_calibration(profile: TargetProfile, method: str | None) -> TargetProfile:
    """The profile with its quantization.calibration replaced by `method` (--calibration): the
    override is a value of the target's data, so every quantizer that reads the profile sees it
    and the report's target section says what was used."""
    if method is None or method == profile.quantization.calibration:
        return profile
    quantization = profile.quantization.model_copy(update={"calibration": method})
    return profile.model_copy(update={"quantization": quantization})


def lower(c: Compilation) -> tuple[onnx.ModelProto, dict]:
    """The source as the canonical ONNX graph (checked, simplified, static shapes). NaN/Inf
    weights are refused: the model computes NaN whatever it is fed, so parity, accuracy and the
    INT8 search would all measure nothing."""
    data = c.req.quant.calib or c.req.evaluation.data
    shapes, notes = shapes_for(c.source.model, c.req.shapes, data.value if data else None)
    canonical, info = canonicalize(c.source.model, shapes)
    info["shape_notes"] = notes + info["shape_notes"]
    bad = nonfinite_weights(canonical)
    if bad:
        raise EdgepackError(f"{c.source.name}: {len(bad)} weight tensor(s) hold NaN or Inf values: "
                            f"{', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}")
    c.events.step(f"lowered to canonical ONNX: opset {info['opset']}, {info['nodes_after']} nodes")
    return canonical, info


def compress(c: Compilation, model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """Structured pruning (widths rounded to the target's channel multiple), then magnitude
    sparsity; returns the model and the report sections (with the plan to save)."""
    opts, out = c.req.prune, {}
    if opts.structured:
        before = model_stats(model)
        model, plan = prune_channels(model, opts.ratio or 0.0, mode=opts.mode,
                                     channel_multiple=c.profile.pruning.channel_multiple,
                                     overrides=dict(opts.layers) or None, protected=list(opts.protect) or None)
        after = model_stats(model)
        out["pruning"] = {"ratio": opts.ratio or 0.0, "mode": opts.mode, "channel_multiple": plan.channel_multiple,
                          "params_before": before["params"], "params_after": after["params"],
                          "macs_before": before["macs"], "macs_after": after["macs"],
                          **plan.summary(), "unprunable": plan.unprunable, "notes": plan.notes}
        out["plan"] = plan
        c.events.step(f"pruned: params {before['params']} -> {after['params']}")
    if opts.sparsity:
        model, out["sparsity"] = magnitude_prune(model, opts.sparsity)
    return model, out


@dataclass(frozen=True)
class Data:
    """The sets a compile runs on, checked against the graph's inputs. Without --eval, part of
    --calib is held out (`split`): quantizers calibrate on `calib`, the rest, and the INT8 judge
    scores fidelity on inputs no quantizer saw (judged on the inputs it calibrated on, a search
    on a depthwise CNN met a cosine budget of 0.99 that was 0.975 on photos it had not seen)."""

    specs: list
    batch: int
    calib: object  # Dataset | None: what quantizers calibrate on
    evalset: object  # Dataset | None
    parity_feeds: list
    split: Split | None = None  # --calib cut into calibration and judged samples (no --eval)

    @classmethod
    def of(cls, c: Compilation, model: onnx.ModelProto) -> Data:
        specs = graph_inputs(model)
        calib = dataset(c.req.quant.calib.value if c.req.quant.calib else None, specs)
        evalset = dataset(c.req.evaluation.data.value if c.req.evaluation.data else None, specs)
        batch = fixed_batch(specs)
        split = hold_out(calib, batch) if calib is not None and evalset is None else None
        if split is not None:  # nothing keeps the whole set alive beside its two parts
            calib = split.calib
        return cls(specs, batch, calib, evalset, feeds(calib, specs, PARITY_SAMPLES), split)


@dataclass(frozen=True)
class Judge:
    """How accuracy is measured (None: no metric needed), and against which FP32 graph."""

    evaluator: Evaluator | None = None
    section: Accuracy | None = None
    compressed: object = None  # the pruned FP32 graph's runner, when compression ran

    def for_int8(self) -> tuple:
        """(judge, base score) for the INT8 search: INT8 answers for what it loses against the
        pruned graph, not for pruning's loss."""
        if self.evaluator is None:
            return None, 0.0
        if self.compressed is None:
            return self.evaluator, self.section.source
        judge = self.evaluator.against(self.compressed)
        return judge, judge.score(self.compressed)

    def int8_control(self, budget, user_float: tuple = ()):
        """int8_choice.Int8Control against the graph INT8 answers to, for runtimes that choose
        among INT8 graphs themselves: each executes QDQ its own way (OpenVINO's INT8 kernels are
        not ONNX Runtime's reference), so a graph within the budget in ONNX Runtime may not be
        there, and a runtime's own quantizer is judged by the same metric. None without a metric;
        the reference is scored on first use only."""
        if self.evaluator is None:
            return None
        from edgepack.compiler.int8_choice import Int8Control

        reference = cache(self.for_int8)

        def score(run, batches=None) -> float:
            """The metric of `run`; on the given batch numbers only, where a quantizer asks."""
            judge = reference()[0]
            return (judge if batches is None else _batches_of(judge, list(batches))).score(run)

        def gate(run) -> tuple[float, bool]:
            value = score(run)
            return value, drop(reference()[1], value, budget.relative) <= budget.max_drop + 1e-12

        feeds = tuple(self.evaluator.data.batches(self.evaluator.batch))
        return Int8Control(score, feeds, budget.max_drop, budget.relative, gate, user_float)

    @property
    def reference(self) -> float | None:
        """The score each artifact's accuracy_drop counts from."""
        if self.section is None:
            return None
        return self.section.compressed_fp32 if self.section.compressed_fp32 is not None else self.section.source


def _batches_of(judge: Evaluator, batches: list[int]) -> Evaluator:
    """`judge` on some of its batches only (their samples, labels and FP32 outputs): NNCF's
    accuracy control scores single items to rank layers."""
    from dataclasses import replace

    from edgepack.data import Dataset

    n, b = len(judge.data), judge.batch
    rows = np.concatenate([np.arange(i * b, min((i + 1) * b, n)) for i in batches]) if batches else np.arange(0)
    data = judge.data
    subset = Dataset({k: v[rows] for k, v in data.inputs.items()}, None if data.labels is None else data.labels[rows],
                     data.source)
    return replace(judge, data=subset, reference=judge.reference[rows])


def evaluate(c: Compilation, model: onnx.ModelProto, data: Data, compressed: bool, needed: bool) -> Judge:
    """The evaluator (with --eval, or for INT8 fidelity on the calibration samples held out) and
    the source's score."""
    if data.evalset is None and not needed:
        return Judge()
    metric = c.req.evaluation.metric or (
        "top1" if data.evalset is not None and data.evalset.labels is not None else "cosine")
    judged = data.evalset if data.evalset is not None else data.split.judged
    names = [o.name for o in graph_outputs(c.source.model)]
    index = output_index(names, c.req.evaluation.output)
    evaluator = Evaluator.build(metric, judged, data.batch, c.source.run, index)
    section = Accuracy(metric=metric, data=evaluator.data.source, samples=len(evaluator.data),
                       source=evaluator.score(c.source.run), output=names[index] if len(names) > 1 else None,
                       held_out=data.split.describe() if data.evalset is None else None)
    runner = None
    if compressed:  # artifacts answer for what they lose against the pruned FP32 graph they come from
        runner = ort_runner(model)
        section.compressed_fp32 = evaluator.score(runner)
    if c.req.quant.budget.relative and not section.source:
        raise EdgepackError(f"a relative --max-drop needs a metric on which FP32 does not score 0 ({metric} "
                            f"does): give an absolute budget, e.g. --max-drop 0.01")
    return Judge(evaluator, section, runner)


@dataclass(frozen=True)
class Built:
    artifacts: list  # [Artifact], measured
    skipped: list  # [Skipped]: runtimes that could not take the model (--backend auto)
    choices: dict  # runtime -> RuntimeChoice, where the INT8 search's graph was chosen per runtime


def build_all(c: Compilation, stage: Path, canonical, plan, data: Data, judge: Judge) -> Built:
    """Each runtime's artifact, built and measured."""
    ops = set(model_stats(canonical)["op_histogram"])
    built, skipped, choices = [], [], {}
    user_float = tuple(c.req.quant.keep_float and c.scope.resolve(canonical) or ())
    control = judge.int8_control(c.req.quant.budget, user_float) if plan.search is not None else None
    for name in c.backends:
        art_dir = stage / name
        art_dir.mkdir()
        try:
            choice = plan.for_runtime(name, canonical, c.profile, c.bench.threads, data.parity_feeds[0], c.timing,
                                      control, data.calib, stage / f".{name}-int8-choice")
            if choice.evidence is not None:
                choices[name] = choice.evidence
            artifact = build.emit(c, name, art_dir, canonical, choice, data.calib, ops, plan.how == "prequantized")
            interrupt.check()  # converters (OpenVINO, onnx2tf, TVM) may have swallowed a signal
        except EdgepackError as e:
            if not c.exploring:
                raise
            skipped.append(Skipped(backend=name, reason=str(e)))
            shutil.rmtree(art_dir)
            continue
        built.append(build.measure(c, artifact, stage, data, judge))
        c.events.emit("artifact", f"built {name} {choice.precision}: {built[-1].path}",
                      backend=name, precision=choice.precision, path=built[-1].path)
    if not built:
        raise EdgepackError("no runtime could build this model: " +
                            "; ".join(f"{x.backend}: {x.reason}" for x in skipped))
    return Built(built, skipped, choices)


def finish(c: Compilation, model, canon_info, compression, data: Data, judge: Judge, plan,
           built: Built) -> CompileReport:
    """The typed report of what was built, with the artifact to ship selected."""
    stats = model_stats(model)
    max_drop = c.req.quant.budget.max_drop
    selected = select(built.artifacts, max_drop if judge.evaluator is not None else None)
    notes = list(canon_info.get("shape_notes", []))
    if c.req.quant.precision is None and data.calib is None and c.profile.precision != "fp32":
        notes.append(f"{c.profile.name} rewards {c.profile.precision}; pass --calib DATA to get it")
    return CompileReport(
        **header("compile"), source=_source_section(c.source),
        canonical={**canon_info, **{k: stats[k] for k in ("params", "macs", "op_histogram")}},
        target={"name": c.profile.name, "description": c.profile.description, "profile": c.profile.to_dict()},
        data={"source": data.calib.source if data.calib else "random normal inputs (no --calib given)",
              "samples_for_parity": len(data.parity_feeds), "inputs_file": INPUTS_FILE,
              "inputs_feeds": len(kept_inputs(data.parity_feeds)), "preprocess": _preprocess(c.req)},
        precision_requested=c.req.quant.precision or f"target default ({_wanted(plan)})",
        artifacts=built.artifacts, accuracy=judge.section,
        quantization=plan.outcome(built.choices, built.artifacts, max_drop),
        pruning=compression.get("pruning"), sparsity=compression.get("sparsity"), skipped=built.skipped or None,
        selected=selected, output_dir=str(c.outdir), notes=notes or None, **headline(built.artifacts[selected.index]))


def _inputs(req: CompileRequest) -> list[Path]:
    """The files a compile reads: --force must never replace the folder that holds them."""
    refs = (req.model, req.quant.calib, req.evaluation.data)
    return input_paths(*(r.value for r in refs if r is not None), req.weights)


def kept_inputs(feeds: list[dict]) -> list[dict]:
    """The first INPUTS_FEEDS feeds, fewer when they would pass INPUTS_MAX_BYTES (never none)."""
    kept, size = [], 0
    for feed in feeds[:INPUTS_FEEDS]:
        size += sum(v.nbytes for v in feed.values())
        if kept and size > INPUTS_MAX_BYTES:
            break
        kept.append(feed)
    return kept


def save_inputs(path: Path, feeds: list[dict]) -> None:
    """The compile's first feeds (real --calib samples, else its seeded random inputs), keys
    "<feed>__<input name>" as the device worker reads them: what a bundle replays as golden vectors."""
    import numpy as np

    np.savez_compressed(path, **{f"{i}__{k}": v for i, f in enumerate(feeds) for k, v in f.items()})


def _preprocess(req: CompileRequest) -> dict | None:
    """The preprocessing an image folder given as --calib declares (its preprocess.yaml), so a
    deployment feeds the model what it was calibrated on; None for arrays (nothing recorded)."""
    from edgepack.data import PREPROCESS_FILE, Preprocess

    value = req.quant.calib.value if req.quant.calib else None
    if not isinstance(value, (str, Path)) or not (Path(value) / PREPROCESS_FILE).is_file():
        return None
    return Preprocess.load(Path(value) / PREPROCESS_FILE).model_dump(mode="json")


def _datasets(req: CompileRequest) -> list[dict]:
    """The sets this compile read, with content digests: what a listener (tracking) records as
    the compile's inputs, so two runs on different data never look alike."""
    out = []
    for context, ref in (("calibration", req.quant.calib), ("evaluation", req.evaluation.data)):
        if ref is not None:
            source = ref.path or getattr(ref.obj, "source", type(ref.obj).__name__)
            out.append({"context": context, "name": Path(str(source)).name or str(source), "source": str(source),
                        "digest": ref.digest()})
    return out


def _wanted(plan) -> str:
    return "int8" if plan.how in ("prequantized", "own", "search") else plan.how


def _source_section(source) -> dict:
    stats = model_stats(source.model, source.path if source.kind == "onnx" else None)
    return {"name": source.name, "kind": source.kind, "path": source.path, "sha256": source.sha256,
            "params": stats["params"], "macs": stats["macs"], "size_bytes": stats["size_bytes"],
            "inputs": [s.to_dict() for s in graph_inputs(source.model)],
            "outputs": [s.to_dict() for s in graph_outputs(source.model)]}

