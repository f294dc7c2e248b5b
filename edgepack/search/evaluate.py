"""One trial, in whichever process runs it: the point -> a CompileRequest -> figures.

Cheap figures first: MACs and a lower bound of the size come from the pruned graph in seconds;
a point they already rule out is never compiled or timed. A compiled point is timed `repeats`
times in fresh processes only when everything else meets the constraints (latency is the one
noisy figure, and only points that can reach the front need its confidence interval).

With `max_p50_ms` on a named device, every built point is timed on this host first; only a point
that can still reach the feasible front (it meets every other constraint and no point of the
front known so far beats it beyond the noise on this host's figures) is timed on the device.
Device time is the scarce one (a board is shared, a Ray trial waits for it); a skipped point
says why in its figures (`device_skipped`).

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
from edgepack.search.pareto import Row, dominates
from edgepack.search.spec import Constraints

FIGURES = "figures.json"


class MeasuredLatency:
    """The default timing strategy: the compile's own p50, plus `repeats - 1` more, each timed
    in a fresh process. Tests inject a strategy with fixed answers instead (same interface)."""

    compile_timing = DEFAULT_TIMING  # how the compile times its INT8 candidates

    def p50s(self, first: float, point: dict, figures: dict, rerun, repeats: int) -> list[float]:
        return [first] + [rerun() for _ in range(repeats - 1)]


class TimedOnDevice:
    """What both kinds of trial job share: the board their constraints time max_p50_ms on."""

    constraints: Constraints

    @property
    def device(self) -> str | None:
        """The board max_p50_ms is measured on (None: this host, in the compile's fresh processes)."""
        return self.constraints.device if self.constraints.max_p50_ms is not None else None


@dataclass(frozen=True)
class Job(TimedOnDevice):
    """Everything a worker needs, picklable: the base request (no output folder), the point's
    knobs, the target's constraints, where trials live, the timing strategy; and, for device
    timing, the objectives and the feasible front known when the trial was sent
    ((trial number, figures as JSON) pairs)."""

    base: CompileRequest
    point: dict
    constraints: Constraints
    trials_dir: str
    repeats: int = 3
    timing: object = field(default_factory=MeasuredLatency)
    objectives: dict = field(default_factory=dict)
    front: tuple = ()
    check: str | None = None  # data no compile fits to: the judged figures come from it (search/check.py)

    def evaluate(self, claim_device=None) -> dict:
        """The point's figures (as JSON-safe dict), computed or read back from an earlier run.
        `claim_device(fn)` runs the device timings `fn` once the device is free (see `evaluate`)."""
        req = request_for(self.base, self.point)
        folder = Path(self.trials_dir) / req.key()
        req = req.with_options(output_dir=str(folder / "out"), force=True)
        return figures_once(folder, lambda: _cheap(req, self.point, self.constraints) or
                            _build(req, self, claim_device or _now))


def figures_once(folder: Path, compute) -> dict:
    """The figures of the trial whose folder is `folder`: read back when an earlier run wrote
    them, else `compute()`d (a one-line failure when it raises EdgepackError) and written last,
    atomically, so a killed trial is computed again and a finished one never is."""
    done = folder / FIGURES
    if done.is_file():
        fig = Figures.from_json(json.loads(done.read_text()))
        fig.cached = True
        return fig.to_json()
    try:
        fig = compute()
    except EdgepackError as e:
        fig = Figures("failed", error=first_line(e))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(done, json.dumps(fig.to_json(), indent=1, default=str))
    return fig.to_json()


def request_for(base: CompileRequest, point: dict) -> CompileRequest:
    """The compile request of one point of the search space."""
    from dataclasses import replace

    prune = replace(base.prune, ratio=point.get("prune_ratio") or None, mode=point.get("prune_mode", "uniform"))
    quant = replace(base.quant, precision=point["precision"], keep_float=tuple(point.get("keep_float", ())),
                    **int8_knobs(point, base.quant.budget))
    return base.with_options(backends=(point["backend"],), prune=prune, quant=quant, output_dir=None)


def int8_knobs(point: dict, budget) -> dict:
    """The point's quantizer, calibration and accuracy budget as QuantOptions fields. They shape
    INT8 only, so for other precisions they are dropped: such points are one request (one key,
    computed once), and a compile is never refused for a --quantizer it has no INT8 search for.
    A runtime with its own converter (TFLite) takes no quantizer or calibration: its INT8 is its
    converter's (its budget still holds)."""
    from dataclasses import replace

    from edgepack.backends import backend_class

    if point["precision"] != "int8":
        return {"quantizers": None, "calibration": None}
    fit = {} if point.get("max_drop") is None else {"budget": replace(budget, max_drop=point["max_drop"],
                                                                       relative=False)}
    if not backend_class(point["backend"]).consumes_qdq:
        return {"quantizers": None, "calibration": None, **fit}
    quantizer, calibration = point.get("quantizer", "all"), point.get("calibration", "profile")
    return {"quantizers": None if quantizer == "all" else (quantizer,),
            "calibration": None if calibration == "profile" else calibration, **fit}


def unusable(point: dict, board: "BoardCPU | None" = None) -> str | None:
    """Why no compile can build `point` (None: one may): a precision its runtime does not build,
    BF16 on a CPU without it (the `board` max_p50_ms is timed on, then this host, which builds and
    times every point first), ONNX Runtime's dynamic format on another runtime. Known without a
    compile, so such points are skipped, not spent as failed trials."""
    from edgepack.backends import backend_class
    from edgepack.hostinfo import missing_bf16

    if "backend" not in point:  # a recipe's point: its flow decides what it builds
        return None
    backend, precision = point["backend"], point["precision"]
    if precision not in backend_class(backend).precisions:
        return f"{backend} builds {', '.join(backend_class(backend).precisions)}, not {precision}"
    if precision == "bf16":
        return (board.lacks_bf16() if board else None) or missing_bf16()
    if point.get("quantizer") == "dynamic" and precision == "int8" and backend != "onnxruntime":
        return f"the dynamic INT8 format runs in onnxruntime only, not {backend}"
    return None


class BoardCPU:
    """A search target's board (`name`; None: none), probed once and only when a point asks what
    its CPU computes natively (a bf16 point): most searches never pay the connection."""

    def __init__(self, name: str | None):
        self.name, self._why, self._asked = name, None, False

    def lacks_bf16(self) -> str | None:
        """The board's refusal of a bf16 artifact (devices/compat.py, from its probe), or None:
        it has BF16, or there is no board, or it cannot be probed now (the point is then built
        and its timing there fails in the trial's own record, as any unreachable board's would)."""
        if self.name and not self._asked:
            from edgepack.devices import resolve
            from edgepack.devices.compat import bf16_refusal

            try:
                self._why = bf16_refusal(resolve(self.name).probe(), self.name, "this point's artifact")
            except EdgepackError:
                self._why = None
            self._asked = True
        return self._why


def evaluate(job, claim_device=None) -> dict:
    """Run one trial in whichever process: every kind of job (a model's compile, `Job`; a
    recipe's flow, search.recipe.RecipeJob) knows how to evaluate itself and returns the same
    figures, so executors, the study and the front never ask which kind it was.
    `claim_device(fn)` runs the device timings `fn` once the device is free (Ray: a task that
    holds the board's resource; default: at once), so a trial holds the board only while it
    times on it, never while it compiles or is timed here."""
    return job.evaluate(claim_device)


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


def _now(fn):
    return fn()


def _build(req: CompileRequest, job: Job, claim_device) -> Figures:
    """Compile, read the selected artifact's figures, and time it again when it can be feasible:
    here, then on the named device when it can still reach the front."""
    from edgepack.compiler import compile_request

    report = compile_request(req, timing=job.timing.compile_timing)
    art = report.artifacts[report.selected.index]
    path = Path(report.output_dir) / art.path
    fig = Figures("built", values=from_report(report), report=str(Path(report.output_dir) / "report.json"),
                  artifact=str(path), backend=art.backend, precision=art.precision)
    if job.check:
        from edgepack.search.check import judged_apart

        fig.values = judged_apart(fig.values, req, art.backend, path, job.check, art.threads)
    if "p50_ms" not in fig.values:
        return fig
    calib = req.quant.calib.value if req.quant.calib else None
    return timed(fig, job, art, lambda device: retime(calib, art, path, device), claim_device)


def timed(fig: Figures, job, art, retime_at, claim_device=None) -> Figures:
    """`fig` with its p50 the median of `job.repeats` timings here (one when another constraint
    already misses: only points that can reach the front need the interval) and its 95% CI; with
    a device, the host's figures kept as host_p50_ms and the device's timings, when the point can
    still reach the front (`retime_at(device)`: one more p50 there, None = this host)."""
    others = {k: v for k, v in violations(fig, job.constraints).items() if k != "max_p50_ms"}
    repeats = job.repeats if all(v <= 0 for v in others.values()) else 1
    samples = job.timing.p50s(fig.values["p50_ms"], job.point, fig.values, lambda: retime_at(None), repeats)
    # one timing: the worker's own interval of its median, where it reports one
    _set_p50(fig, samples, float(getattr(art.latency_ms, "ci95_ms", 0) or 0))
    if not job.device:
        return fig
    fig.values["host_p50_ms"] = fig.values.pop("p50_ms")
    fig.host_ci95_ms, fig.host_p50_samples, fig.ci95_ms, fig.p50_samples = fig.ci95_ms, fig.p50_samples, 0.0, []
    fig.device_skipped = skip_device(fig, job, others)
    if fig.device_skipped is None:
        def on_device() -> float:
            return retime_at(job.device)

        def samples() -> list:
            return job.timing.p50s(on_device(), job.point, fig.values, on_device, job.repeats)

        _set_p50(fig, (claim_device or _now)(samples), 0.0)
        fig.device = job.device
    return fig


def _set_p50(fig: Figures, samples: list, single_ci: float) -> None:
    fig.p50_samples = [float(s) for s in samples]
    fig.values["p50_ms"] = statistics.median(fig.p50_samples)
    fig.ci95_ms = ci95_of_median(fig.p50_samples) if len(fig.p50_samples) > 1 else single_ci


def skip_device(fig: Figures, job: Job, others: dict) -> str | None:
    """Why a built point is not worth the device's time (None: time it there): it misses
    another constraint, or a point of the feasible front known so far dominates it beyond the
    noise on this host's figures (host latency stands in for the device's: the device can only
    be judged by timing on it, and a point slower here and no better elsewhere is not expected to
    overtake there)."""
    missed = [k for k, v in others.items() if v > 0]
    if missed:
        return f"not timed on {job.device}: misses {', '.join(missed)}"
    me = Row(-1, job.point, fig.on_host(), {})
    for number, data in job.front:
        other = Figures.from_json(data)
        if "host_p50_ms" in other.values and dominates(Row(number, {}, other.on_host(), {}), me, job.objectives):
            return f"not timed on {job.device}: trial {number} dominates it on this host's figures, beyond the noise"
    return None


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
