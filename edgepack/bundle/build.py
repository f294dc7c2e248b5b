"""Fill a folder with a bundle's contents: the artifact, the runner, golden vectors, report.md,
README.md and manifest.json. Deterministic: the same compile output gives the same bytes."""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np

from edgepack.backends import REGISTRY, get_backend
from edgepack.bundle import golden
from edgepack.bundle.manifest import SCHEMA_FILE, Manifest
from edgepack.bundle.readme import readme
from edgepack.bundle.source import Output
from edgepack.devices import for_artifact
from edgepack.devices.base import WORKER
from edgepack.errors import EdgepackError
from edgepack.fsutil import MARKER, PID_FILE, sha256_file, slug
from edgepack.ir.spec import TensorSpec
from edgepack.report.schema import Artifact

RUN_PY = Path(__file__).resolve().with_name("runner") / "run.py"
MANIFEST = "manifest.json"
NOT_LISTED = (MANIFEST, MARKER, PID_FILE)  # at the top: the manifest itself, and a folder bundle's own markers


def bundle_name(output: Output, art: Artifact) -> str:
    r = output.report
    return slug(f"{r.source.name}-{r.target.name}-{art.backend}-{art.precision}")


def build(output: Output, art: Artifact, folder: Path) -> Manifest:
    """Write the bundle for artifact `art` of `output` into `folder` (existing, empty)."""
    backend = get_backend(art.backend)
    files = _copy_artifact(output, art, folder / "model", backend)
    main = folder / "model" / Path(art.path).name
    for src in (WORKER, backend.session_file(), RUN_PY):
        _copy(src, folder / "runner" / src.name)
    specs = _input_specs(output)
    feeds, origin = golden.golden_inputs(output.folder, output.report.data, specs)
    device = for_artifact(art.backend, main)  # the host, or the emulated board for a cross-compiled artifact
    outputs = device.outputs(art.backend, main, feeds)
    (folder / "golden").mkdir()
    golden.write_npz(folder / "golden" / "inputs.npz", golden.inputs_npz(feeds))
    golden.write_npz(folder / "golden" / "outputs.npz", golden.outputs_npz(outputs))
    out_names = _output_names(output, outputs)
    deploy = backend.deployment(main)
    where = "host CPU, in a fresh process" if device.latency_is_real else f"{device.name} (emulated)"
    parts = {
        "name": bundle_name(output, art), "model": output.report.source.name, "backend": art.backend,
        "artifact": {"path": f"model/{main.name}", "files": [f"model/{n}" for n in files], "precision": art.precision,
                     "size_bytes": art.size_bytes},
        "runtime": _runtime(art.backend, deploy, backend.session_file().name),
        "inputs": _tensors(specs, feeds[0], main, "inputs", output),
        "outputs": _tensors([TensorSpec(n, (), "") for n in out_names], dict(zip(out_names, outputs[0])), main,
                            "outputs", output),
        "preprocessing": _preprocessing(output.report.data),
        "target": _target(output.report.target.profile or {"name": output.report.target.name}),
        # the target profile's ops this runtime cannot run there (its own fallbacks, where known, are in ops)
        "ops": {**deploy["ops"], "unsupported_by_target": art.unsupported_ops}, "lineage": _lineage(output),
        "measurements": _measurements(output, art),
        "golden": {"inputs": "golden/inputs.npz", "outputs": "golden/outputs.npz", "feeds": len(feeds),
                   "origin": origin, "computed_on": where,
                   "tolerances": golden.tolerances(art.precision, out_names, outputs)},
        "runner": {"entry": "runner/run.py", "worker": f"runner/{WORKER.name}",
                   "session": f"runner/{backend.session_file().name}",
                   "requires": ["numpy", REGISTRY[art.backend].packages[0]]},
        "android": _android(main, output.report.data),
    }
    return _finish(output, folder, parts)


def _finish(output: Output, folder: Path, parts: dict) -> Manifest:
    """report.md, the schema, README.md, then the manifest over every file written."""
    if (output.folder / "report.md").is_file():
        _copy(output.folder / "report.md", folder / "report.md")
    _copy(SCHEMA_FILE, folder / SCHEMA_FILE.name)
    draft = Manifest.model_validate({**parts, "files": {}})
    (folder / "README.md").write_text(readme(draft))
    files = {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() not in NOT_LISTED}
    manifest = Manifest.model_validate({**parts, "files": files})
    (folder / MANIFEST).write_text(manifest.dumps())
    return manifest


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _copy_artifact(output: Output, art: Artifact, dst: Path, backend) -> list[str]:
    """The artifact and its companions, checked against the report's hashes: a file changed since
    the compile would ship figures that are not its own."""
    main = output.folder / art.path
    names = []
    for path in [main, *(p for p in backend.companions(main) if p.is_file())]:
        recorded = art.files.get(path.name)
        if recorded is not None and sha256_file(path) != recorded.sha256:
            raise EdgepackError(f"{path}: changed since the compile (its sha256 differs from report.json); "
                                "compile again")
        _copy(path, dst / path.name)
        names.append(path.name)
    return sorted(names)


def _input_specs(output: Output) -> list[TensorSpec]:
    """The inputs as compiled: the source's names and dtypes, the canonical graph's fixed shapes."""
    shapes = (output.report.canonical.model_extra or {}).get("input_shapes") or {}
    return [TensorSpec(t.name, tuple(shapes.get(t.name, t.shape or ())), t.dtype) for t in output.report.source.inputs]


def _output_names(output: Output, outputs: list[list[np.ndarray]]) -> list[str]:
    names = [t.name for t in output.report.source.outputs]
    n = len(outputs[0]) if outputs else 0
    return names if len(names) == n else [f"output_{j}" for j in range(n)]


def _io_sidecar(main: Path) -> dict:
    """TFLite's model.io.json (the artifact's own tensors behind each ONNX I/O), else {}."""
    side = main.with_name(main.stem + ".io.json")
    return json.loads(side.read_text()) if main.suffix == ".tflite" and side.is_file() else {}


def _tensors(specs: list[TensorSpec], sample: dict, main: Path, kind: str, output: Output) -> list[dict]:
    """Each I/O as the runner takes or returns it, with the artifact's own tensor where it differs."""
    own = {e["name"]: e for e in _io_sidecar(main).get(kind, [])}
    pre = output.report.data.preprocess or {}
    result = []
    for spec in specs:
        value = np.asarray(sample[spec.name])
        layout = (pre.get("layout") if kind == "inputs" and pre else "NCHW") if value.ndim == 4 else None
        entry = {"name": spec.name, "shape": list(value.shape), "dtype": value.dtype.name, "layout": layout}
        if spec.name in own:
            e = own[spec.name]
            perm = list(e.get("perm") or [])
            entry["artifact_tensor"] = {
                "name": e["tflite_name"], "shape": list(e["tflite_shape"]), "dtype": e["tflite_dtype"], "perm": perm,
                "layout": "NHWC" if perm == [0, 2, 3, 1] else layout, "quant": e.get("quant")}
        result.append(entry)
    return result


def _android(main: Path, data) -> dict | None:
    """A .tflite's phone section: its tensors as the Interpreter sees them and the normalization
    in pixel terms (labels: none recorded by a compile, so none here)."""
    if main.suffix != ".tflite":
        return None
    from edgepack.devices.android import phone_input_spec

    return phone_input_spec(main, data.preprocess or None)


def _runtime(name: str, deploy: dict, session: str) -> dict:
    package = REGISTRY[name].packages[0]
    try:
        tested = metadata.version(package)
    except metadata.PackageNotFoundError:
        tested = None
    return {"backend": name, "package": package, "tested_version": tested,
            "minimum_version": deploy["minimum_version"] or tested, "minimum_reason": deploy["minimum_reason"],
            "arch": deploy["arch"], "session_module": f"runner/{session}"}


def _preprocessing(data) -> dict:
    if data.preprocess:
        return {"recorded": True, "spec": data.preprocess,
                "note": f"the preprocessing of the calibration images ({data.source}): feed the model the same"}
    return {"recorded": False, "spec": None,
            "note": f"none recorded: the compile report holds no preprocessing for its data ({data.source}); "
                    "inputs are fed as the model takes them"}


def _target(profile: dict) -> dict:
    digest = hashlib.sha256(json.dumps(profile, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {"name": profile.get("name", "?"), "sha256": digest, "profile": profile}


def _lineage(output: Output) -> dict:
    r = output.report
    lineage = {"source_name": r.source.name, "source_kind": r.source.kind, "source_sha256": r.source.sha256,
               "edgepack_version": r.edgepack_version, "compiled": r.created, "report_sha256": output.report_sha256}
    if output.flow is not None:
        stages = [{"stage": f"{i + 1:02d}-{s.kind}", "kind": s.kind, "key": s.key}
                  for i, s in enumerate(output.flow.stages)]
        lineage.update(recipe=output.flow.recipe, recipe_key=stages[-1]["key"] if stages else None, stages=stages)
    return lineage


def _measurements(output: Output, art: Artifact) -> list[dict]:
    """Accuracy, parity and latency of the artifact, each with where it was measured."""
    r = output.report
    cpu = r.environment.cpu
    host = f"{cpu.get('model', '?')} ({cpu.get('arch', '?')}, {cpu.get('logical_cores', '?')} cores)"
    elsewhere = [n for n in art.notes if n.startswith("timed on this host")]
    found = []
    if art.parity is not None:
        found.append({"what": "parity", "where": "emulated" if art.emulated else "host-cpu",
                      "machine": "qemu-aarch64 on " + host if art.emulated else host, "values": art.parity.to_json(),
                      "note": "outputs against the source model's, on the same inputs"})
    if art.accuracy is not None and r.accuracy is not None:
        found.append({"what": "accuracy", "where": "host-cpu", "machine": host,
                      "values": {"metric": r.accuracy.metric, "value": art.accuracy, "drop": art.accuracy_drop,
                                 "source": r.accuracy.source, "samples": r.accuracy.samples, "data": r.accuracy.data}})
    if art.latency_ms is not None:
        values = {k: v for k, v in art.to_json().items()
                  if k in ("latency_ms", "load_ms", "memory_mb", "throughput_per_s", "threads", "runs", "warmup",
                           "batch", "process")}
        found.append({"what": "latency", "where": "host-cpu", "machine": host, "values": values,
                      "note": elsewhere[0] if elsewhere else "in a fresh process on the compiling host"})
    if art.emulated_run:
        found.append({"what": "emulated_run", "where": "emulated", "machine": "qemu-aarch64 on " + host,
                      "values": art.emulated_run, "note": art.emulated_run.get("note")})
    for run in art.devices or []:
        env = run.environment
        found.append({"what": "device_run", "where": "emulated" if run.emulated else "device",
                      "machine": f"{run.device} ({env.cpu or '?'}, {env.arch})" if env else run.device,
                      "values": run.to_json(), "note": run.note})
    return found
