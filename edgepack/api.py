"""The Python API; the CLI is a thin layer over these functions.

The flat keyword forms users like: each builds a request and calls the layer that does the
work (compile -> edgepack.compiler, run -> edgepack.pipeline), returning the report as a dict.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from edgepack.backends import backend_for_artifact, get_backend
from edgepack.compiler.artifacts import BENCH_FEEDS
from edgepack.compiler.flow import compile_request
from edgepack.compiler.inputs import dataset, feeds
from edgepack.compiler.request import BenchSettings, CompileRequest
from edgepack.compiler.select import headline
from edgepack.devices import LocalDevice
from edgepack.errors import EdgepackError, first_line
from edgepack.events import ConsoleListener, Events, silent
from edgepack.frontends import load_source
from edgepack.fsutil import artifact_identity, check_free, input_paths, slug, staged_dir
from edgepack.ir.canonical import canonicalize
from edgepack.ir.spec import graph_inputs
from edgepack.ir.stats import model_stats
from edgepack.report import header, write_report
from edgepack.report.schema import Artifact, ProfileReport
from edgepack.runtime import DEFAULT_TIMING, Timing
from edgepack.targets import TargetProfile, load_profile


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
            threads: int | None = None, force: bool = False, progress: bool = True,
            timing: Timing = DEFAULT_TIMING, eval_output: str | None = None, track: bool = True,
            tracking_uri: str | None = None) -> dict:
    """Compile `model` for `target`; returns the report (also written to output_dir) as a dict.

    precision None = what the target rewards (its profile's `precision`) when calibration data
    is given, else fp32. INT8 is checked against `max_drop` (default 0.01 absolute; "1%" is
    relative) on `eval_data` with `metric`, or on fidelity to FP32 over calibration samples held
    out of calibration (the report's accuracy.held_out says which); `eval_output` names the graph
    output the metric judges (default the first). The run is recorded in the tracking store
    (`tracking_uri`, $MLFLOW_TRACKING_URI or ./mlruns-edgepack/) unless `track` is False.
    The typed form: `edgepack.compiler.compile_request(CompileRequest(...))`.
    """
    request = CompileRequest.from_kwargs(
        model, target=target, backends=backends, output_dir=output_dir, input_shapes=input_shapes,
        weights=weights, calib=calib, precision=precision, eval_data=eval_data, metric=metric, max_drop=max_drop,
        keep_float=keep_float, prune=prune, prune_mode=prune_mode, prune_layers=prune_layers,
        prune_protect=prune_protect, sparsity=sparsity, runs=runs, warmup=warmup, threads=threads, force=force,
        eval_output=eval_output)
    kwargs = {k: v for k, v in locals().items() if k not in ("request", "timing", "track", "tracking_uri")}
    with _tracked("compile", f"compile {model} for {target}", kwargs, track, tracking_uri) as events:
        return compile_request(request, events, timing).to_json()


def run(recipe, output_dir: str | Path | None = None, force: bool = False, resume: bool = False,
        progress: bool = True, timing: Timing = DEFAULT_TIMING, track: bool = True) -> dict:
    """The distill -> prune -> quantize -> emit flow of a recipe (YAML path, dict or Recipe).

    Each stage is measured, gated and saved in its own folder; raises
    edgepack.pipeline.engine.GateFailed (with the typed `.report`) when a stage misses its gate.
    """
    from edgepack import tracking
    from edgepack.pipeline.engine import GateFailed
    from edgepack.pipeline.engine import run as run_flow
    from edgepack.pipeline.recipe import load_recipe

    recipe, missed = load_recipe(recipe), None
    start = {"name": f"run {recipe.name}", "recipe": tracking.recipe_json(recipe)}
    with tracking.session("run", start, None, track) as rec:
        events = Events(ConsoleListener(), *tracking.listeners(rec), progress=progress)
        try:
            return run_flow(recipe, output_dir, force=force, resume=resume, events=events, timing=timing).to_json()
        except GateFailed as e:  # the run itself finished: its record is complete
            missed = e
    raise missed


def profile(artifact: str | Path, target: str | TargetProfile | None = None, backend: str | None = None,
            inputs: str | Path | None = None, runs: int | None = None, warmup: int | None = None,
            threads: int | None = None, output_dir: str | Path | None = None, force: bool = False,
            progress: bool = True, track: bool = True) -> dict:
    """Latency report of an existing artifact, measured in a fresh process (as a dict)."""
    from edgepack import tracking

    with tracking.session("profile", {"name": f"profile {artifact}"}, None, track) as rec:
        return profile_artifact(artifact, target, backend, inputs, BenchSettings(runs, warmup, threads), output_dir,
                                force, progress, Events(*tracking.listeners(rec))).to_json()


def profile_artifact(artifact: str | Path, target: str | TargetProfile | None, backend: str | None,
                     inputs: str | Path | None, settings: BenchSettings, output_dir: str | Path | None,
                     force: bool, progress: bool, events: Events | None = None) -> ProfileReport:
    """The typed profile report of an existing artifact."""
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
        f"profile-{slug(path.stem)}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_free(outdir, force, input_paths(path, inputs))
    data = dataset(inputs, specs)
    bench = settings.resolve(prof)
    entry = Artifact(backend=runtime.name, precision="as built", path=str(path),
                     **artifact_identity(path, runtime.companions(path)), inputs=[s.to_dict() for s in specs],
                     **LocalDevice().time(runtime.name, path, feeds(data, specs, BENCH_FEEDS), progress=progress,
                                 **bench.as_dict()))
    report = ProfileReport(**header("profile"), target={"name": prof.name, "description": prof.description},
                           data={"source": data.source if data else "random normal inputs"}, artifacts=[entry],
                           output_dir=str(outdir), **headline(entry))
    with staged_dir(outdir, force, "profile", input_paths(path, inputs)) as stage:
        write_report(stage, report)
    (events or silent()).emit("report", f"report: {outdir}/report.md (and report.json)",
                              path=str(outdir / "report.json"), command="profile")
    return report


# -- helpers ---------------------------------------------------------------------------------

@contextmanager
def _tracked(command: str, name: str, kwargs: dict, track: bool, uri: str | None):
    """Console events, plus the tracking listener when tracking is on; the run is recorded with
    the keyword arguments that can be stored (paths and settings), for `edgepack reproduce`."""
    from edgepack import tracking

    plain = {k: v for k, v in kwargs.items() if v is None or isinstance(v, (str, int, float, bool, list, dict, Path))}
    start = {"name": name, "request": {k: str(v) if isinstance(v, Path) else v for k, v in plain.items()},
             "reproducible": len(plain) == len(kwargs)}
    with tracking.session(command, start, uri, track) as rec:
        yield Events(ConsoleListener(), *tracking.listeners(rec), progress=kwargs.get("progress", True))


def _named_shapes(model, input_shapes):
    from edgepack.ir.spec import match_shapes

    return match_shapes([s.name for s in graph_inputs(model)], input_shapes) or None
