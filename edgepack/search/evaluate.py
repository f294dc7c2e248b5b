"""One trial, in whichever process runs it: the point -> a CompileRequest -> figures.

Cheap figures first: MACs and a lower bound of the size come from the pruned graph in seconds;
a point they already rule out is never compiled or timed. A compiled point is timed `repeats`
times in fresh processes only when everything else meets the constraints (latency is the one
noisy figure, and only points that can reach the front need its confidence interval).

The same point is never computed twice: the compile request's content hash names the trial's
folder, and its figures.json is written last, atomically; a point found there is read back.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.compiler.request import CompileRequest
from edgepack.errors import EdgepackError, first_line
from edgepack.fsutil import atomic_write
from edgepack.runtime import DEFAULT_TIMING
from edgepack.search.figures import MB, WEIGHT_BYTES, Figures, from_report, violations
from edgepack.search.spec import Constraints

FIGURES = "figures.json"


class MeasuredLatency:
    """The default timing strategy: the compile's own p50, plus `repeats - 1` more, each timed
    in a fresh process. Tests inject a strategy with fixed answers instead (same interface)."""

    compile_timing = DEFAULT_TIMING  # how the compile times its INT8 candidates

    def p50s(self, first: float, point: dict, figures: dict, rerun, repeats: int) -> list[float]:
        return [first] + [rerun() for _ in range(repeats - 1)]


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, picklable: the base request (no output folder), the point's
    knobs, the target's constraints, where trials live, the timing strategy."""

    base: CompileRequest
    point: dict
    constraints: Constraints
    trials_dir: str
    repeats: int = 3
    timing: object = field(default_factory=MeasuredLatency)

    @property
    def device(self) -> str | None:
        """The board max_p50_ms is measured on (None: this host, in the compile's fresh processes)."""
        return self.constraints.device if self.constraints.max_p50_ms is not None else None

    def evaluate(self) -> dict:
        """The point's figures (as JSON-safe dict), computed or read back from an earlier run."""
        req = request_for(self.base, self.point)
        folder = Path(self.trials_dir) / req.key()
        done = folder / FIGURES
        if done.is_file():
            fig = Figures.from_json(json.loads(done.read_text()))
            fig.cached = True
            return fig.to_json()
        req = req.with_options(output_dir=str(folder / "out"), force=True)
        try:
            fig = _cheap(req, self.point, self.constraints)
            if fig is None:
                fig = _build(req, self)
        except EdgepackError as e:
            fig = Figures("failed", error=first_line(e))
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(done, json.dumps(fig.to_json(), indent=1))
        return fig.to_json()


def request_for(base: CompileRequest, point: dict) -> CompileRequest:
    """The compile request of one point of the search space."""
    from dataclasses import replace

    prune = replace(base.prune, ratio=point.get("prune_ratio") or None, mode=point.get("prune_mode", "uniform"))
    quant = replace(base.quant, precision=point["precision"], keep_float=tuple(point.get("keep_float", ())))
    return base.with_options(backends=(point["backend"],), prune=prune, quant=quant, output_dir=None)


def evaluate(job) -> dict:
    """Run one trial in whichever process: every kind of job (a model's compile, `Job`; a
    recipe's flow, search.recipe.RecipeJob) knows how to evaluate itself and returns the same
    figures, so executors, the study and the front never ask which kind it was."""
    return job.evaluate()


def _cheap(req: CompileRequest, point: dict, bounds: Constraints) -> Figures | None:
    """Figures without a build when MACs or the size's lower bound already miss (else None)."""
    if bounds.max_macs is None and bounds.max_size_mb is None:
        return None
    from edgepack.compiler.flow import compress, lower, prepare
    from edgepack.events import silent
    from edgepack.ir.stats import model_stats

    c = prepare(req, silent(), DEFAULT_TIMING)
    model, _ = compress(c, lower(c)[0])
    stats = model_stats(model)
    fig = Figures("cheap", values={"macs": stats["macs"],
                                   "size_mb": stats["params"] * WEIGHT_BYTES[point["precision"]] / MB},
                  backend=point["backend"], precision=point["precision"])
    missed = {k: v for k, v in violations(fig, bounds).items() if k in ("max_macs", "max_size_mb") and v > 0}
    return fig if missed else None


def _build(req: CompileRequest, job: Job) -> Figures:
    """Compile, read the selected artifact's figures, and time it again when it can be feasible."""
    from edgepack.compiler import compile_request

    report = compile_request(req, timing=job.timing.compile_timing)
    art = report.artifacts[report.selected.index]
    path = Path(report.output_dir) / art.path
    fig = Figures("built", values=from_report(report), report=str(Path(report.output_dir) / "report.json"),
                  artifact=str(path), backend=art.backend, precision=art.precision)
    if "p50_ms" not in fig.values:
        return fig
    calib = req.quant.calib.value if req.quant.calib else None
    return timed(fig, job, art, lambda: retime(calib, art, path, job.device))


def timed(fig: Figures, job, art, rerun) -> Figures:
    """`fig` with its p50 the median of `job.repeats` timings (one when another constraint
    already misses: only points that can reach the front need the interval) and its 95% CI."""
    others = {k: v for k, v in violations(fig, job.constraints).items() if k != "max_p50_ms"}
    repeats = job.repeats if all(v <= 0 for v in others.values()) else 1
    # on a board every p50 is the board's: the compile's own was this host's
    first = rerun() if job.device else fig.values["p50_ms"]
    samples = job.timing.p50s(first, job.point, fig.values, rerun, repeats)
    fig.p50_samples = [float(s) for s in samples]
    fig.values["p50_ms"] = statistics.median(samples)
    # one timing: the worker's own interval of its median, where it reports one
    fig.ci95_ms = ci95_of_median(samples) if len(samples) > 1 else float(getattr(art.latency_ms, "ci95_ms", 0) or 0)
    return fig


def ci95_of_median(samples: list[float]) -> float:
    """Half-width of a 95% interval for the central p50 of a few repeated p50s (Student's t on
    their spread: with 3-5 repeats an order-statistic interval would span the whole range)."""
    if len(samples) < 2:
        return 0.0
    from scipy.stats import t

    return float(t.ppf(0.975, len(samples) - 1) * statistics.stdev(samples) / len(samples) ** 0.5)


def retime(calib, art, path: Path, device: str | None) -> float:
    """One more p50 of the artifact with the compile's settings: in a fresh process here, or on
    the named board."""
    from edgepack.backends import get_backend
    from edgepack.compiler.artifacts import BENCH_FEEDS
    from edgepack.compiler.inputs import dataset, feeds
    from edgepack.devices import LocalDevice

    runtime = get_backend(art.backend)
    specs = runtime.inputs(runtime.load(path, 1))
    data = dataset(calib, specs)  # None: seeded random inputs (a latency does not depend on values)
    if device:
        from edgepack.devices import resolve  # checked before the search started (run._device)

        runner = resolve(device)
    else:
        runner = LocalDevice()
    timed = runner.time(art.backend, path, feeds(data, specs, BENCH_FEEDS), threads=art.threads,
                               warmup=art.warmup, runs=art.runs, progress=False)
    return timed["latency_ms"].p50 if hasattr(timed["latency_ms"], "p50") else timed["latency_ms"]["p50"]
