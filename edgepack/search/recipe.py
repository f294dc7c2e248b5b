"""Recipe searches: a trial is the recipe with the point's knob values written into it, run by
the pipeline engine into the trial's own folder; its figures are the flow report's final row.

A knob is a dotted path: a stage kind then its setting (`distill.temperature`,
`prune.finetune.epochs`, `quantize.mode`), or a model reference's (`student.args.width`: a
keyword argument of the student's file.py:factory; `teacher.train.epochs`). Every path and value
is checked before any trial starts, one line naming the path and what was meant.

Stages shared by trials are computed once: the engine keys each stage by everything it depends
on (the teacher by the teacher, data and target; a stage by the key before it and its own
settings), and every trial runs with `cache=OUT/stages`: a stage whose key is there is copied into
the trial's folder instead of trained, and each stage a trial computes is added there. So the
teacher is trained by the first trial only, and trials that differ only in, say, the quantize
mode share their distilled and pruned students. The search runs its first trial alone so the
teacher is in the cache before trials run side by side.
"""

from __future__ import annotations

import copy
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from edgepack.errors import EdgepackError, close_names, first_line
from edgepack.search.evaluate import MeasuredLatency, TimedOnDevice, figures_once, retime, timed
from edgepack.search.figures import MB, Figures
from edgepack.search.spec import Constraints

MODEL_REFS = ("teacher", "student")


def load(source) -> dict:
    """The spec's recipe (a path or a dict) as a dict with an absolute base_dir (trials run in
    worker processes, Ray workers in folders of their own)."""
    from edgepack.pipeline.recipe import load_recipe

    recipe = load_recipe(source).model_dump()
    recipe["base_dir"] = str(Path(recipe["base_dir"]).resolve())
    return recipe


def check_knobs(recipe: dict, knobs: dict) -> None:
    """Every knob path names a setting the recipe has, and each of its values makes a valid
    recipe; else one line (with what the path probably meant)."""
    from edgepack.pipeline.recipe import load_recipe

    for path, values in knobs.items():
        _check_path(recipe, path)
        for value in _probe_values(values):
            try:
                load_recipe(apply(recipe, {path: value}))
            except EdgepackError as e:
                raise EdgepackError(f"space.recipe {path!r} = {value!r}: {first_line(e)}") from None


def _probe_values(values) -> list:
    return list(values) if isinstance(values, list) else [values.low, values.high]


def _check_path(recipe: dict, path: str) -> None:
    from edgepack.pipeline.recipe import KINDS, ModelRef, Recipe

    head, *rest = path.split(".")
    kinds = [Recipe.kind(s) for s in recipe["stages"]]
    heads = kinds + [r for r in MODEL_REFS if recipe.get(r)] + ["measure"]
    if head in heads and not rest:
        raise EdgepackError(f"space.recipe {path!r}: name one of its settings ({head}.SETTING)")
    if head not in heads:
        raise EdgepackError(f"space.recipe {path!r}: the recipe has no {head!r}{close_names(head, heads)}; "
                            f"knobs are STAGE.SETTING or teacher/student.args.NAME over {', '.join(heads)}")
    model = KINDS.get(head) or (ModelRef if head in MODEL_REFS else Recipe.model_fields["measure"].annotation)
    for i, part in enumerate(rest):
        fields = model.model_fields
        if part not in fields:
            raise EdgepackError(f"space.recipe {path!r}: {'.'.join([head, *rest[:i]])} has no setting {part!r}"
                                f"{close_names(part, fields)}")
        if head in MODEL_REFS and part == "args":
            return _check_args(recipe, head, path, rest[i + 1:])
        model = _submodel(fields[part].annotation)
        if model is None and i < len(rest) - 1:
            raise EdgepackError(f"space.recipe {path!r}: {'.'.join([head, *rest[:i + 1]])} is a value, not a group")


def _submodel(annotation):
    """The pydantic model inside an annotation (`TrainConfig | None` -> TrainConfig), else None."""
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _check_args(recipe: dict, ref: str, path: str, rest: list[str]) -> None:
    """`student.args.NAME`: NAME is a keyword the factory takes (unless it takes **kwargs)."""
    import inspect

    if len(rest) != 1:
        raise EdgepackError(f"space.recipe {path!r}: expected {ref}.args.NAME (one keyword argument)")
    factory = _factory(recipe, recipe[ref]["model"])
    if factory is None:
        raise EdgepackError(f"space.recipe {path!r}: {ref}.model is not a file.py:factory or callable, "
                            "so it takes no arguments")
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()) or rest[0] in params:
        return
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    raise EdgepackError(f"space.recipe {path!r}: {recipe[ref]['model']} takes no argument {rest[0]!r}"
                        f"{close_names(rest[0], names)}; it takes: {', '.join(names) or 'none'}")


def _factory(recipe: dict, model):
    """The callable a model reference builds from (a file.py:factory's attribute), or None."""
    import importlib.util

    from edgepack.frontends import is_factory

    if not isinstance(model, str):
        return model if callable(model) and not isinstance(model, __import__("torch").nn.Module) else None
    text = model if Path(model).is_absolute() else str(Path(recipe["base_dir"]) / model)
    if not is_factory(text):
        return None
    file, _, attr = text.rpartition(":")
    if not Path(file).is_file():
        raise EdgepackError(f"{file}: no such file")
    spec = importlib.util.spec_from_file_location(f"edgepack_knobs_{Path(file).stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # user code
        raise EdgepackError(f"{file} raised {type(e).__name__}: {first_line(e)}") from None
    return getattr(module, attr, None)


def apply(recipe: dict, point: dict) -> dict:
    """A copy of `recipe` with each knob's value written at its dotted path."""
    out = copy.deepcopy(recipe)
    for path, value in point.items():
        head, *rest = path.split(".")
        if head in MODEL_REFS or head == "measure":
            node = out.setdefault(head, {})
        else:
            stage = next(s for s in out["stages"] if next(iter(s)) == head)
            node = stage[head] = dict(stage[head] or {})
        for part in rest[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[rest[-1]] = value
    return out


@dataclass(frozen=True)
class RecipeJob(TimedOnDevice):
    """One recipe trial, picklable for pool workers and Ray tasks: the recipe (a dict), the
    point, the target's constraints, where trials and the shared stages live; for device timing,
    the objectives and the front known when it was sent (as evaluate.Job)."""

    recipe: dict
    point: dict
    constraints: Constraints
    trials_dir: str
    stages_dir: str
    target: str = "host"
    repeats: int = 3
    timing: object = field(default_factory=MeasuredLatency)
    objectives: dict = field(default_factory=dict)
    front: tuple = ()

    def evaluate(self, claim_device=None) -> dict:
        """The point's figures (JSON-safe), computed or read back from an earlier run of it."""
        from edgepack.pipeline.engine import _fingerprint
        from edgepack.pipeline.recipe import load_recipe

        recipe = load_recipe(apply(self.recipe, self.point) | {"target": self.target})
        # the trial's content key: its settings and the contents of the files it names (not the
        # recipe's folder, which may hold anything)
        seen = json.dumps({k: _fingerprint(getattr(recipe, k), recipe.resolve) for k in type(recipe).model_fields
                           if k != "base_dir"}, sort_keys=True, default=str)
        folder = Path(self.trials_dir) / hashlib.sha256(seen.encode()).hexdigest()[:16]
        return figures_once(folder, lambda: self._run(recipe, folder / "run", claim_device))

    def _run(self, recipe, out: Path, claim_device=None) -> Figures:
        """Run the flow (resuming what a killed trial saved, reusing shared stages) and read the
        final row; a flow stopped by one of the recipe's own gates is a failed point."""
        from edgepack.events import Events
        from edgepack.pipeline.engine import GateFailed, run

        stages: dict = {}

        def note(event) -> None:
            if event.kind == "stage_done" and "reused" in event.data:
                stages[event.data["stage"]] = "reused" if event.data["reused"] else "computed"

        try:
            report = run(recipe, out, resume=True, events=Events(note), timing=self.timing.compile_timing,
                         cache=self.stages_dir)
        except GateFailed as e:
            return Figures("failed", values=_row_values(e.report.rows[-1]), error=first_line(e), stages=stages,
                           report=str(out / "report.json"))
        fig = Figures("built", values=_row_values(report.rows[-1]), report=str(out / "report.json"), stages=stages)
        emit = next(out.glob("*-emit/report.json"), None)
        return self._retimed(fig, emit, claim_device) if emit is not None and "p50_ms" in fig.values else fig

    def _retimed(self, fig: Figures, emit: Path, claim_device=None) -> Figures:
        """The shipped artifact timed `repeats` times in all (when it can be feasible), as a model
        search's points are: the front compares p50s with their intervals."""
        from edgepack.report.schema import CompileReport

        compiled = CompileReport.model_validate_json(emit.read_text())
        art = compiled.shipped()
        path = emit.parent / art.path
        fig.artifact, fig.backend, fig.precision = str(path), art.backend, art.precision
        return timed(fig, self, art, lambda device: retime(None, art, path, device), claim_device)


def _row_values(row) -> dict:
    """A flow report row's figures under the search's names."""
    data = row.model_dump() if hasattr(row, "model_dump") else dict(row)
    values = {k: data[k] for k in ("accuracy", "drop", "p50_ms", "params", "macs") if data.get(k) is not None}
    if data.get("size_bytes") is not None:
        values["size_mb"] = data["size_bytes"] / MB
    return values
