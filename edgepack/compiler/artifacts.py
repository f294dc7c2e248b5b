"""One runtime's artifact: emit it, then measure it where it runs (parity, accuracy, latency)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepack.compiler.inputs import feeds
from edgepack.devices import Device, DeviceLost, for_artifact
from edgepack.errors import EdgepackError
from edgepack.fsutil import artifact_identity
from edgepack.passes.metrics import drop
from edgepack.report.schema import Artifact
from edgepack.verify import compare_outputs, measure_parity

BOARD_PARITY_SAMPLES = 2  # each emulated run costs seconds
BENCH_FEEDS = 8


@dataclass(frozen=True)
class Emitted:
    """An artifact on disk, before measurement."""

    backend: str
    precision: str
    path: Path
    described: dict
    notes: list[str]
    unsupported_ops: list[str]
    device: Device  # where it runs: this host, or the emulated board for a cross-compiled artifact

    @property
    def emulated(self) -> bool:
        """Its device's time is not latency (emulated): it is checked there, never timed as real."""
        return not self.device.latency_is_real


def emit(c, name: str, art_dir: Path, canonical, choice, calib, ops: set, prequantized: bool) -> Emitted:
    """Emit runtime `name`'s artifact of the graph `choice` picked for it."""
    backend = c.backend(name)
    if choice.precision == "bf16" and "bf16" not in backend.precisions:  # left to build under --backend auto
        raise EdgepackError(f"{name} cannot compute in BF16: it builds {', '.join(backend.precisions)}")
    # a runtime with its own quantizer gets the float graph and the calibration data instead of QDQ
    own_quantizer = choice.precision != "fp32" and not backend.consumes_qdq
    if own_quantizer and prequantized:
        raise EdgepackError(f"{name} quantizes with its own converter and cannot take an already-INT8 (QDQ) "
                            "model: give it the float model and --calib")
    if choice.prebuilt is not None:  # built (and judged) while the runtime chose: shipped as it is
        path = _move_built(choice.prebuilt, art_dir)
    else:
        path = backend.emit(canonical if own_quantizer else choice.graph, art_dir, c.profile,
                            precision=choice.precision, calib=calib if own_quantizer else None)
    profile = c.profile
    deploys = name in profile.backends
    device = for_artifact(name, path)
    notes = [] if deploys else [f"{name} is not among {profile.name}'s runtimes ({', '.join(profile.backends)})"]
    elsewhere = profile.runs_elsewhere()
    if elsewhere and device.latency_is_real:
        notes.append(f"timed on this host, not on {profile.name}'s {elsewhere}: the figures rank artifacts "
                     "here, they are not the target's latency")
    return Emitted(name, choice.precision, path, backend.describe(path), notes,
                   profile.unsupported_ops(ops, name) if deploys else [], device)


def _move_built(artifact: Path, art_dir: Path) -> Path:
    """Move the folder holding `artifact` (and its companions) into `art_dir`, and drop every
    other build the choice left beside it (their folder is the choice's own work folder)."""
    import shutil

    for item in artifact.parent.iterdir():
        shutil.move(str(item), art_dir / item.name)
    shutil.rmtree(artifact.parent.parent, ignore_errors=True)
    return art_dir / artifact.name


def measure(c, e: Emitted, stage: Path, data, judge) -> Artifact:
    """Parity against the source, accuracy with the compile's judge, latency in a fresh process;
    an emulated artifact gets parity and emulated time only."""
    backend = c.backend(e.backend)
    entry = {"backend": e.backend, "precision": e.precision, "path": str(e.path.relative_to(stage)),
             **artifact_identity(e.path, backend.companions(e.path)), "emulated": e.emulated,
             "unsupported_ops": e.unsupported_ops, "notes": e.notes, "runtime": e.described}
    if e.emulated:
        sample = data.parity_feeds[:BOARD_PARITY_SAMPLES]  # one emulated process for all of them
        entry["parity"] = compare_outputs([c.source.run(f) for f in sample], e.device.outputs(e.backend, e.path, sample))
        entry["emulated_run"] = e.device.time(e.backend, e.path, sample[:1], threads=1, warmup=0, runs=10,
                                              progress=c.events.show_progress)
        return Artifact(**entry, latency_ms=None)
    # accuracy runs in this process (thousands of samples); the device times in a fresh one
    run = backend.runner(e.path, c.bench.threads)
    entry["parity"] = measure_parity(c.source.run, run, data.parity_feeds)
    if judge.evaluator is not None:
        entry["accuracy"], entry["fidelity"] = judge.evaluator.assess(run)
        entry["accuracy_drop"] = drop(judge.reference, entry["accuracy"], c.req.quant.budget.relative)
    entry.update(e.device.time(e.backend, e.path, feeds(data.calib, data.specs, BENCH_FEEDS),
                               progress=c.events.show_progress, **c.bench.as_dict()))
    return Artifact(**entry)


def measure_on_devices(c, artifacts: list[Artifact], stage: Path, data) -> None:
    """Each artifact also measured on the devices asked for (--device), with the target's
    benchmark settings and parity against the source model, computed there. An artifact a
    device cannot run (another architecture, a runtime it lacks) gets a note saying why; a
    dropped connection (DeviceLost) ends the compile: no report is written with a partial run."""
    if not c.devices:
        return
    bench_feeds = feeds(data.calib, data.specs, BENCH_FEEDS)
    reference = [c.source.run(f) for f in bench_feeds]
    for a in artifacts:
        path = stage / a.path
        for device in c.devices:
            try:
                device.check(a.backend, path)
            except DeviceLost:
                raise
            except EdgepackError as e:
                a.notes.append(f"not run on {device.name}: {e}")
                continue
            run = device.profile(a.backend, path, bench_feeds, c.bench, reference, c.events.show_progress)
            a.devices = [*(a.devices or []), run]
