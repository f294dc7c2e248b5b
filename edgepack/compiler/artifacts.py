"""One runtime's artifact: emit it, then measure it where it runs (parity, accuracy, latency)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepack.bench.runner import benchmark
from edgepack.board import ensure_board
from edgepack.compiler.inputs import feeds
from edgepack.errors import EdgepackError
from edgepack.fsutil import artifact_identity
from edgepack.passes.metrics import drop
from edgepack.report.schema import Artifact
from edgepack.verify import measure_parity

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

    @property
    def emulated(self) -> bool:
        """Cross-compiled for another architecture: it runs on the emulated board, never timed as real."""
        return bool(self.described.get("cross_compiled"))


def emit(c, name: str, art_dir: Path, canonical, choice, calib, ops: set, prequantized: bool) -> Emitted:
    """Emit runtime `name`'s artifact of the graph `choice` picked for it."""
    backend = c.backend(name)
    # a runtime with its own quantizer gets the float graph and the calibration data instead of QDQ
    own_quantizer = choice.precision != "fp32" and not backend.consumes_qdq
    if own_quantizer and prequantized:
        raise EdgepackError(f"{name} quantizes with its own converter and cannot take an already-INT8 (QDQ) "
                            "model: give it the float model and --calib")
    path = backend.emit(canonical if own_quantizer else choice.graph, art_dir, c.profile, precision=choice.precision,
                        calib=calib if own_quantizer else None)
    profile = c.profile
    deploys = name in profile.backends
    described = backend.describe(path)
    notes = [] if deploys else [f"{name} is not among {profile.name}'s runtimes ({', '.join(profile.backends)})"]
    elsewhere = profile.runs_elsewhere()
    if elsewhere and not described.get("cross_compiled"):
        notes.append(f"timed on this host, not on {profile.name}'s {elsewhere}: the figures rank artifacts "
                     "here, they are not the target's latency")
    return Emitted(name, choice.precision, path, described, notes,
                   profile.unsupported_ops(ops, name) if deploys else [])


def measure(c, e: Emitted, stage: Path, data, judge) -> Artifact:
    """Parity against the source, accuracy with the compile's judge, latency in a fresh process;
    an emulated artifact gets parity and emulated time only."""
    backend = c.backend(e.backend)
    entry = {"backend": e.backend, "precision": e.precision, "path": str(e.path.relative_to(stage)),
             **artifact_identity(e.path, backend.companions(e.path)), "emulated": e.emulated,
             "unsupported_ops": e.unsupported_ops, "notes": e.notes, "runtime": e.described}
    if e.emulated:
        run = ensure_board().runner(e.backend, e.path)
        entry["parity"] = measure_parity(c.source.run, run, data.parity_feeds[:BOARD_PARITY_SAMPLES])
        entry["emulated_run"] = run(data.parity_feeds[0], runs=10).to_dict()
        return Artifact(**entry, latency_ms=None)
    run = backend.runner(e.path, c.bench.threads)
    entry["parity"] = measure_parity(c.source.run, run, data.parity_feeds)
    if judge.evaluator is not None:
        entry["accuracy"] = judge.evaluator.score(run)
        entry["accuracy_drop"] = drop(judge.reference, entry["accuracy"], c.req.quant.budget.relative)
    entry.update(benchmark(e.backend, e.path, feeds(data.calib, data.specs, BENCH_FEEDS),
                           progress=c.events.show_progress, **c.bench.as_dict()))
    return Artifact(**entry)
