"""The Python API; the CLI is a thin layer over these functions.

The flat keyword forms users like: each builds a request and calls the layer that does the
work (compile -> edgepack.compiler, run -> edgepack.pipeline), returning the report as a dict.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from edgepack.backends import backend_for_artifact, get_backend
from edgepack.bundle.verify import is_bundle
from edgepack.compiler.artifacts import BENCH_FEEDS
from edgepack.compiler.flow import compile_request
from edgepack.compiler.inputs import dataset, feeds
from edgepack.compiler.request import BenchSettings, CompileRequest
from edgepack.compiler.select import headline
from edgepack.devices import DeviceOptions, LocalDevice
from edgepack.errors import EdgepackError, first_line
from edgepack.events import ConsoleListener, Events, silent
from edgepack.frontends import load_source
from edgepack.fsutil import artifact_identity, check_free, input_paths, slug, staged_dir
from edgepack.ir.canonical import canonicalize
from edgepack.ir.spec import TensorSpec, graph_inputs
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
            timing: Timing = DEFAULT_TIMING, eval_output: str | None = None, devices: list[str] | None = None,
            devices_file: str | Path | None = None, track: bool = True, tracking_uri: str | None = None,
            quantizers: str | list[str] | None = None, calibration: str | None = None) -> dict:
    """Compile `model` for `target`; returns the report (also written to output_dir) as a dict.

    precision None = what the target rewards (its profile's `precision`) when calibration data
    is given, else fp32. INT8 is checked against `max_drop` (default 0.01 absolute; "1%" is
    relative) on `eval_data` with `metric`, or on fidelity to FP32 over calibration samples held
    out of calibration (the report's accuracy.held_out says which); `eval_output` names the graph
    output the metric judges (default the first). `devices`: also measure every artifact there
    (names from `devices_file` / devices.yaml, ssh://user@host[:port], "local", "qemu"). The run is
    recorded in the tracking store (`tracking_uri`, $MLFLOW_TRACKING_URI or ./mlruns-edgepack/)
    unless `track` is False. `quantizers` limits the INT8 search's candidates ("onnxruntime",
    "nncf", "dynamic"; default all); `calibration` replaces the profile's calibration method.
    The typed form: `edgepack.compiler.compile_request(CompileRequest(...))`.
    """
    request = CompileRequest.from_kwargs(
        model, target=target, backends=backends, output_dir=output_dir, input_shapes=input_shapes,
        weights=weights, calib=calib, precision=precision, eval_data=eval_data, metric=metric, max_drop=max_drop,
        keep_float=keep_float, prune=prune, prune_mode=prune_mode, prune_layers=prune_layers,
        prune_protect=prune_protect, sparsity=sparsity, runs=runs, warmup=warmup, threads=threads, force=force,
        eval_output=eval_output, quantizers=quantizers, calibration=calibration,
        devices=DeviceOptions(tuple(devices or ()), str(devices_file) if devices_file else None))
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
            progress: bool = True, devices: list[str] | None = None, devices_file: str | Path | None = None,
            accept_new_host_key: bool = False, track: bool = True) -> dict:
    """Latency report of an existing artifact or bundle, measured in a fresh process (as a dict);
    with `devices` (names from devices.yaml, ssh://user@host[:port], "local", "qemu") also
    measured on each of them, results in the artifact's `devices` list."""
    from edgepack import tracking

    on = DeviceOptions(tuple(devices or ()), str(devices_file) if devices_file else None, accept_new_host_key)
    with tracking.session("profile", {"name": f"profile {artifact}"}, None, track) as rec:
        return profile_artifact(artifact, target, backend, inputs, BenchSettings(runs, warmup, threads), output_dir,
                                force, progress, on, Events(*tracking.listeners(rec))).to_json()


def profile_artifact(artifact: str | Path, target: str | TargetProfile | None, backend: str | None,
                     inputs: str | Path | None, settings: BenchSettings, output_dir: str | Path | None,
                     force: bool, progress: bool, on: DeviceOptions | None = None,
                     events: Events | None = None) -> ProfileReport:
    """The typed profile report of an existing artifact or bundle. Devices are resolved and checked
    (the artifact's architecture, the runtime installed there) before anything runs anywhere; a
    connection that drops mid-run raises DeviceLost and no report is written. `events` hears the
    report once it is written."""
    path = Path(artifact)
    if not path.exists():
        raise EdgepackError(f"{artifact}: no such file")
    if is_bundle(path):
        return _profile_bundle(path, target, backend, inputs, settings, output_dir, force, progress, on, events)
    prof = target if isinstance(target, TargetProfile) else load_profile(target or "host")
    runtime = get_backend(backend) if backend else backend_for_artifact(path)
    with _held(on, runtime.name, path) as devices:
        here = not runtime.cross_compiled(path)  # a cross-compiled artifact runs only on its devices
        specs = _artifact_inputs(runtime, path, artifact, here)
        subject = _Subject(path, str(path), runtime, specs, here, path.stem, input_paths(path, inputs))
        return _profile(subject, inputs, prof, settings, output_dir, force, progress, devices, events)


@dataclass
class _Subject:
    """What a profile runs: the artifact file, how the report names it, and (for a bundle) the
    inputs and expected outputs it brings along."""

    path: Path
    shown: str
    runtime: object
    specs: list
    here: bool  # runs on this host (False: built for another CPU)
    stem: str
    guarded: list[Path]  # the user's inputs the output folder must not replace
    feeds: list | None = None  # None: from --inputs or random
    reference: list | None = None  # expected outputs of `feeds` (None: this host's, computed here)
    source: str | None = None
    precision: str = "as built"
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _held(on: DeviceOptions | None, backend: str, path: Path):
    """The devices asked for, each held (locked, connected) and checked from here to its result."""
    devices = on.resolve() if on else []
    with contextlib.ExitStack() as held:
        for device in devices:
            held.enter_context(device.session())
            device.check(backend, path)
        yield devices


def _profile_bundle(bundle: Path, target, backend, inputs, settings: BenchSettings, output_dir, force: bool,
                    progress: bool, on: DeviceOptions | None, events: Events | None) -> ProfileReport:
    """A bundle: its structure and hashes verified first (refused with verify's line and exit
    code), then its artifact profiled with the manifest's backend and target profile, on its
    golden inputs, each device's outputs compared with the golden outputs."""
    from edgepack.bundle import checked
    from edgepack.bundle.golden import read_feeds

    with checked(bundle) as (root, m):
        if backend and backend != m.backend:
            raise EdgepackError(f"{bundle}: a {m.backend} bundle; --backend {backend} does not apply to it")
        runtime, path = get_backend(m.backend), root / m.artifact.path
        prof = target if isinstance(target, TargetProfile) else (
            load_profile(target) if target else _manifest_profile(bundle, m))
        shown = str(path) if bundle.is_dir() else f"{bundle}:{m.artifact.path}"
        with _held(on, runtime.name, path) as devices:
            specs = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in m.inputs]
            subject = _Subject(path, shown, runtime, specs, not runtime.cross_compiled(path), m.name,
                               input_paths(bundle, inputs), precision=m.artifact.precision,
                               notes=[f"bundle {m.name}: structure and sha256 of its {len(m.files)} files "
                                      "verified before running"])
            if inputs is None:
                subject.feeds = read_feeds(root / m.golden.inputs, m.golden.feeds)
                expected = read_feeds(root / m.golden.outputs, m.golden.feeds)
                subject.reference = [[f[str(j)] for j in range(len(f))] for f in expected]
                subject.source = f"the bundle's {m.golden.feeds} golden inputs ({m.golden.origin})"
                subject.notes.append(f"device parity: against the bundle's golden outputs ({m.golden.computed_on})")
            return _profile(subject, inputs, prof, settings, output_dir, force, progress, devices, events)


def _manifest_profile(bundle: Path, m) -> TargetProfile:
    """The target profile the bundle was built for, from its manifest (its benchmark settings)."""
    try:
        return TargetProfile.model_validate(m.target.profile)
    except ValidationError:
        raise EdgepackError(f"{bundle}: the manifest's target profile {m.target.name!r} is not one this edgepack "
                            "reads; pass --target") from None


def _profile(s: _Subject, inputs, prof, settings: BenchSettings, output_dir, force: bool, progress: bool,
             devices: list, events: Events | None) -> ProfileReport:
    outdir = Path(output_dir) if output_dir else Path("edgepack-out") / (
        f"profile-{slug(s.stem)}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_free(outdir, force, s.guarded)
    bench = settings.resolve(prof)
    runtime, path, reference, source = s.runtime, s.path, s.reference, s.source
    bench_feeds = s.feeds
    if bench_feeds is None:
        data = dataset(inputs, s.specs)
        bench_feeds = feeds(data, s.specs, BENCH_FEEDS)
        source = data.source if data else "random normal inputs"
        reference = _reference(runtime, path, bench_feeds) if s.here and devices else None
    # the devices first: a connection problem shows before the host's (possibly long) timing
    runs = [d.profile(runtime.name, path, bench_feeds, bench, reference, progress) for d in devices]
    host = LocalDevice().time(runtime.name, path, bench_feeds, progress=progress, **bench.as_dict()) if s.here else {
        "latency_ms": None, "notes": [f"not timed on this host: built for {runtime.architecture(path)}"]}
    host["notes"] = [*s.notes, *host.get("notes", [])]
    entry = Artifact(backend=runtime.name, precision=s.precision, path=s.shown,
                     **artifact_identity(path, runtime.companions(path)), inputs=[t.to_dict() for t in s.specs],
                     devices=runs or None, **host)
    report = ProfileReport(**header("profile"), target={"name": prof.name, "description": prof.description},
                           data={"source": source}, artifacts=[entry], output_dir=str(outdir), **headline(entry))
    with staged_dir(outdir, force, "profile", s.guarded) as stage:
        write_report(stage, report)
    (events or silent()).emit("report", f"report: {outdir}/report.md (and report.json)",
                              path=str(outdir / "report.json"), command="profile")
    return report


def _artifact_inputs(runtime, path: Path, artifact, loadable: bool) -> list:
    """The artifact's inputs: from loading it here, or (built for another CPU) from its own files."""
    if not loadable:
        declared = runtime.declared_inputs(path)
        if declared is None:
            raise EdgepackError(f"{artifact}: built for {runtime.architecture(path)}; its inputs cannot be read "
                                "here: pass --inputs DATA")
        return declared
    try:
        return runtime.inputs(runtime.load(path, 1))
    except EdgepackError:
        raise
    except Exception as e:
        raise EdgepackError(f"{artifact}: {runtime.name} cannot load it: {first_line(e)}")


def _reference(runtime, path: Path, bench_feeds: list) -> list:
    """This host's outputs of the artifact: what each device's outputs are compared with."""
    run = runtime.runner(path, 1)
    return [run(f) for f in bench_feeds]


# -- helpers ---------------------------------------------------------------------------------

@contextlib.contextmanager
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
