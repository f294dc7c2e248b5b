"""`edgepack search`: per target, an Optuna study asks for points, an executor compiles them, the
feasible front and the chosen point are written out.

    OUT/study.journal           every target's study (a killed search resumes from it)
    OUT/trials/KEY/             one compile (or recipe flow) per distinct point (KEY: its content hash)
    OUT/stages/KEY/             a recipe search's stages shared by its trials (KEY: the stage's resume key)
    OUT/TARGET/pareto.md|png    the feasible front (table; plot with the constraints drawn)
    OUT/TARGET/chosen/          the chosen point's compile output (artifact, report)
    OUT/search.json             everything above as data

Each finished trial is emitted as a `stage_done` event whose data carry what a tracking listener
needs (search, target, trial number, the point's key, params, values, feasible, misses, the
trial's report path); a resumed search emits its finished points again (`earlier`), and the final
`report` event names search.json and each target's folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.compiler.request import CompileRequest
from edgepack.errors import EdgepackError
from edgepack.events import Events, silent
from edgepack.fsutil import atomic_write, output_lock
from edgepack.search import study as studies
from edgepack.search.evaluate import BoardCPU, Job, MeasuredLatency, unusable
from edgepack.search.executors import make_executor
from edgepack.search.figures import Figures, describe_miss, label, violations
from edgepack.search.output import write_target
from edgepack.search.pareto import Row, choose, closest, front
from edgepack.search.spec import PATH_FIELDS, SearchSpec, Target, file_of

SPEC_FILE = "search-spec.json"


@dataclass
class TargetResult:
    target: str
    constraints: dict
    rows: list = field(default_factory=list)
    front: list = field(default_factory=list)
    chosen: Row | None = None
    reason: str = ""
    closest: list = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return self.chosen is not None

    def summary(self) -> dict:
        def row(r: Row) -> dict:
            return {"trial": r.number, "point": r.point, "status": r.fig.status, "values": r.fig.values,
                    "ci95_ms": r.fig.ci95_ms, "feasible": r.feasible, "cached": r.fig.cached,
                    "device": r.fig.device, "device_skipped": r.fig.device_skipped,
                    "misses": {k: v for k, v in r.misses.items() if v > 0}, "report": r.fig.report,
                    "error": r.fig.error, **({"stages": r.fig.stages} if r.fig.stages else {})}
        return {"target": self.target, "constraints": self.constraints, "feasible": self.feasible,
                "front": [row(r) for r in self.front], "chosen": row(self.chosen) if self.chosen else None,
                "reason": self.reason, "closest": [row(r) for r in self.closest], "trials": [row(r) for r in self.rows]}


def search(spec: SearchSpec, out: str | Path, executor: str = "local", events: Events | None = None,
           timing=None) -> list[TargetResult]:
    """Run (or resume) the search `spec` into `out`; one result per target."""
    out = Path(out).resolve()
    events = events or silent()
    _check_inputs(spec)
    recipe = None
    if spec.recipe is not None:
        from edgepack.search import recipe as recipes

        recipe = recipes.load(spec.recipe)
        recipes.check_knobs(recipe, spec.space.recipe)  # a bad knob fails now, in one line
    # one search process per folder: a second one opening the study would mark the first one's
    # running trials failed, and both would write the same trial folders
    with output_lock(out):
        _claim(out, spec)
        return _search_targets(spec, out, executor, events, timing, recipe)


def _search_targets(spec: SearchSpec, out: Path, executor: str, events: Events, timing, recipe) -> list[TargetResult]:
    devices = {t.constraints.device for t in spec.target_list() if t.constraints.device}
    for name in devices:
        _device(name)  # a missing device fails now, before any trial
    results = []
    runner = make_executor(executor, spec.workers, devices)
    try:
        for target in spec.target_list():
            jobs = _jobs(spec, target, out, timing or MeasuredLatency(), recipe)
            results.append(_search_target(spec, target, out, runner, events, jobs))
    finally:
        runner.close()
    atomic_write(out / "search.json", json.dumps({"name": spec.name, "executor": executor,
                                                  "targets": [r.summary() for r in results]}, indent=1, default=str))
    events.emit("report", f"search: {out}/search.json", path=str(out / "search.json"), search=spec.name,
                folders={t.name: str(out / _safe(t.name)) for t in spec.target_list()})
    return results


def _check_inputs(spec: SearchSpec) -> None:
    """Files the spec names exist: a typo must fail now, not as every trial's failure."""
    for what in PATH_FIELDS:
        value = getattr(spec, what)
        if not isinstance(value, str):
            continue
        path = file_of(value)
        if path and not Path(path).exists():
            raise EdgepackError(f"{what}: {path[:300]}: no such file or folder")


def _claim(out: Path, spec: SearchSpec) -> None:
    """`out` is new, or holds this same search (resume); never someone else's folder."""
    key = spec.key()
    marker = out / SPEC_FILE
    if out.exists() and any(out.iterdir()):
        if not marker.is_file():
            raise EdgepackError(f"{out} exists and is not a search folder: give another -o")
        if json.loads(marker.read_text()).get("spec") != key:
            raise EdgepackError(f"{out} holds a different search (its spec changed): give another -o to start over")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, json.dumps({"spec": key}))


def _device(name: str):
    try:
        from edgepack.devices import resolve  # the named devices (devices.yaml)
    except ImportError:
        raise EdgepackError(f"max_p50_ms on device {name!r} needs named devices (devices.yaml), "
                            "which this edgepack does not have yet") from None
    return resolve(name)


def base_request(spec: SearchSpec, target: str) -> CompileRequest:
    """The compile request every point of `target` starts from (absolute paths: Ray workers run
    in folders of their own)."""
    from edgepack.ir.spec import parse_input_shapes

    def absolute(p):
        if p is None:
            return None
        path, sep, factory = p.partition(".py:")
        return str(Path(path).resolve()) + (sep + factory if sep else "") if sep else str(Path(p).resolve())

    metric, max_drop = compile_budget(spec, target)
    return CompileRequest.from_kwargs(
        absolute(spec.model), target=target, input_shapes=parse_input_shapes(spec.input_shape) or None,
        weights=absolute(spec.weights), calib=absolute(spec.calib), eval_data=absolute(spec.eval), metric=metric,
        max_drop=max_drop, runs=spec.runs, warmup=spec.warmup, threads=spec.threads)


# fidelity constraint -> the compile metric that scores it (FP32 scores 1 against itself)
FIDELITY_METRICS = {"min_agreement_non_near_ties": "agreement_non_near_ties", "min_cosine": "cosine"}


def compile_budget(spec: SearchSpec, target: str) -> tuple[str | None, float | None]:
    """(metric, max_drop) for every compile of `target`: the INT8 accuracy control inside a compile
    spends the same budget the search's constraint allows. A max_drop constraint is the budget on
    the spec's metric; without accuracy in the constraints or objectives, a fidelity bound
    (agreement >= 0.99) becomes the metric with max_drop 1 - bound. Else the compile's defaults."""
    bounds = next(t for t in spec.target_list() if t.name == target).constraints.bounds()
    if "max_drop" in bounds:
        return spec.metric, bounds["max_drop"]
    judged = {"min_accuracy"} & set(bounds) or {"accuracy", "drop"} & set(spec.objectives)
    fidelity = next((c for c in FIDELITY_METRICS if c in bounds), None)
    if spec.metric is None and fidelity and not judged:
        return FIDELITY_METRICS[fidelity], round(1.0 - bounds[fidelity], 12)
    return spec.metric, None


def _jobs(spec: SearchSpec, target: Target, out: Path, timing, recipe: dict | None):
    """point -> the job that evaluates it: a compile of the model, or a run of the recipe."""
    if recipe is not None:
        from edgepack.search.recipe import RecipeJob

        return lambda point, front: RecipeJob(recipe, point, target.constraints, str(out / "trials"),
                                              str(out / "stages"), target.name, spec.repeats, timing,
                                              spec.objectives, front)
    base = base_request(spec, target.name)
    check = str(Path(spec.check).resolve()) if spec.check else None  # workers run in folders of their own
    return lambda point, front: Job(base, point, target.constraints, str(out / "trials"), spec.repeats, timing,
                                    spec.objectives, front, check)


def _search_target(spec: SearchSpec, target: Target, out: Path, runner, events: Events, jobs) -> TargetResult:
    """Ask, run and tell until the target's study holds `spec.trials` distinct points. A point the
    sampler proposes again is told the figures it already has (no compile, not counted); asks are
    capped, so a space smaller than `trials` ends the search instead of looping. A recipe search's
    first trial runs alone: the stages trials share (the teacher) are then cached before others start."""
    study = studies.open_study(out, f"{spec.name}-{target.name}", spec.objectives, spec.seed)
    known = {_key(t.user_attrs["point"]): Figures.from_json(t.user_attrs["figures"]) for t in studies.finished(study)}
    told = set()
    for row in _rows(study, target):  # told again: a tracking listener records the points it has not yet
        if _key(row.point) not in told:
            told.add(_key(row.point))
            _emit_trial(events, spec, target, row, earlier=True)
    todo, asks = spec.trials - len(known), 4 * spec.trials
    in_flight: dict = {}  # point key -> [(trial, point), ...]: the first is computing, the rest wait on it
    board = BoardCPU(target.constraints.device if target.constraints.max_p50_ms is not None else None)
    while (todo > 0 and asks > 0) or in_flight:
        while todo > 0 and asks > 0 and len(in_flight) < (spec.workers if known or not spec.recipe else 1):
            trial, point = studies.ask(study, spec.space)
            asks, key = asks - 1, _key(point)
            why = unusable(point, board)
            if why:  # not a trial: nothing to build
                studies.skip(study, trial, why, spec.objectives, violations(Figures("failed"), target.constraints))
                events.step(f"skipped {label(point)}: {why}")
            elif key in known:
                _tell(study, spec, target, events, trial, point, _cached(known[key]))
            elif key in in_flight:
                in_flight[key].append((trial, point))
            else:
                in_flight[key] = [(trial, point)]
                runner.submit(trial.number, jobs(point, _front_known(study, spec, target)))
                todo -= 1
        if not in_flight:  # every ask was a point already known: the space is used up
            break
        number, data = runner.next_done()
        key = next(k for k, waiting in in_flight.items() if waiting[0][0].number == number)
        known[key] = Figures.from_json(data)
        for i, (trial, point) in enumerate(in_flight.pop(key)):
            _tell(study, spec, target, events, trial, point, known[key] if i == 0 else _cached(known[key]))
    return _result(spec, target, study, out)


def _key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def point_key(target: str, point: dict) -> str:
    """'TARGET#DIGEST': a point of a target, the same in every process and every run of the
    search (tracking keys a trial run by it; `edgepack reproduce` finds the chosen point's run by it)."""
    import hashlib

    return f"{target}#{hashlib.sha256(_key(point).encode()).hexdigest()[:16]}"


def _cached(fig: Figures) -> Figures:
    return Figures.from_json(fig.to_json() | {"cached": True})


def _tell(study, spec: SearchSpec, target: Target, events: Events, trial, point: dict, fig: Figures) -> None:
    misses = violations(fig, target.constraints)
    studies.tell(study, trial, fig, spec.objectives, misses)
    _emit_trial(events, spec, target, Row(trial.number, point, fig, misses))


def _emit_trial(events: Events, spec: SearchSpec, target: Target, row: Row, earlier: bool = False) -> None:
    """One `stage_done` per trial; `earlier`: a trial a previous run of this search finished,
    told again on resume. `key` names the target's point (a repeat proposal of a point is a
    cached trial with the same key), so a tracking listener records each point once."""
    values = ", ".join(f"{k} {v:.4g}" for k, v in row.fig.values.items())
    verdict = "feasible" if row.feasible else "misses " + ", ".join(k for k, v in row.misses.items() if v > 0) \
        if row.fig.status != "failed" else f"failed: {row.fig.error}"
    events.emit("stage_done", f"trial {row.number} [{target.name}] {label(row.point)}: {values or '-'} "
                f"({verdict}{', cached' if row.fig.cached else ''}{', from an earlier run' if earlier else ''})",
                search=spec.name, target=target.name, trial=row.number, key=point_key(target.name, row.point),
                params=row.point, values=row.fig.values, ci95_ms=row.fig.ci95_ms,
                host_ci95_ms=row.fig.host_ci95_ms, device=row.fig.device, device_skipped=row.fig.device_skipped,
                feasible=row.feasible, status=row.fig.status, misses={k: v for k, v in row.misses.items() if v > 0},
                report=row.fig.report, cached=row.fig.cached, earlier=earlier)


def _result(spec: SearchSpec, target: Target, study, out: Path) -> TargetResult:
    """The target's rows, front, chosen point (or closest misses), written under OUT/TARGET."""
    rows = _rows(study, target)
    res = TargetResult(target.name, target.constraints.model_dump(exclude_none=True), rows)
    res.front = front(rows, spec.objectives)
    if res.front:
        res.chosen, res.reason = choose(res.front, spec.objectives, spec.choose)
    else:
        res.closest = closest(rows)
    write_target(out / _safe(target.name), res, spec, target.constraints)
    return res


def _rows(study, target: Target) -> list[Row]:
    """The target's finished trials, each with what it misses."""
    figs = [(t, Figures.from_json(t.user_attrs["figures"])) for t in studies.finished(study)]
    return [Row(t.number, t.user_attrs["point"], fig, violations(fig, target.constraints)) for t, fig in figs]


def _front_known(study, spec: SearchSpec, target: Target) -> tuple:
    """The feasible front so far, as (trial number, figures) pairs a worker can take: what a
    point must not be dominated by to be timed on the device (empty without device timing)."""
    if target.constraints.device is None or target.constraints.max_p50_ms is None:
        return ()
    return tuple((r.number, r.fig.to_json()) for r in front(_rows(study, target), spec.objectives))


def _safe(name: str) -> str:
    from edgepack.fsutil import slug

    return slug(Path(name).stem if name.endswith((".yaml", ".yml")) else name)


def misses_line(row: Row, target: Target) -> str:
    """'trial 3 (onnxruntime int8): max_p50_ms: p50_ms 7.2 > 5; ...' for an infeasible report."""
    missed = [describe_miss(k, row.fig, target.constraints) for k, v in row.misses.items() if v > 0]
    if row.fig.status == "failed":
        missed = [f"failed: {row.fig.error}"]
    return f"trial {row.number} ({label(row.point)}): {'; '.join(missed) or 'not built'}"
