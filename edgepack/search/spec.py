"""SEARCH.yaml: the model, the targets, what each target must meet, what to optimise, and over what.

    name: mnist
    model: mnist.onnx                 # compile's model options: input_shape, weights
    calib: calib.npz
    eval: eval.npz                    # labelled: each compile spends its accuracy budget on it
    check: check.npz                  # optional, apart from eval: accuracy, drop, fidelity judged here
    targets: [host]                   # or [{name: host, constraints: {max_p50_ms: 2}}]
    constraints: {max_drop: 0.01, max_p50_ms: 5}     # every target's, unless it names its own
    objectives: {accuracy: max, p50_ms: min, size_mb: min}
    space:
      backend: [onnxruntime, openvino]
      precision: [fp32, fp16, int8]
      prune_ratio: {low: 0.0, high: 0.5, step: 0.125}
      prune_mode: [uniform]
      keep_float: [[], ["type:Gemm"]]
      quantizer: [all, nncf]          # INT8 points: the search's candidates (all, onnxruntime, nncf, dynamic)
      calibration: [profile, entropy] # INT8 points: the target's method, minmax, entropy or percentile
    trials: 20
    choose: fastest                   # or knee

A recipe search names a recipe instead of a model, and searches over the recipe's own knobs
(dotted paths: a stage kind then its setting, or `student.args.NAME` for the student factory's
keyword arguments); each trial runs the whole flow (search/recipe.py):

    recipe: recipe.yaml
    targets: [host]
    objectives: {accuracy: max, p50_ms: min, size_mb: min}
    space:
      recipe:
        student.args.width: [16, 24, 32]
        distill.temperature: [2, 4, 8]
        quantize.mode: [qat, ptq]
        prune.ratio: {low: 0.25, high: 0.625, step: 0.125}

Relative paths are read from the spec's folder. The same spec can be built from Python
(`SearchSpec(...)`) or from the short form of the command line (`from_args`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgepack.compiler.request import CALIBRATIONS, PRECISIONS, QUANTIZERS
from edgepack.errors import EdgepackError
from edgepack.schema import read_yaml_mapping, validate

# name -> (the figure it bounds, "max" or "min"): a constraint is data, checked in one place (figures.py)
CONSTRAINTS = {
    "max_drop": ("drop", "max"), "min_accuracy": ("accuracy", "min"), "max_p50_ms": ("p50_ms", "max"),
    "max_size_mb": ("size_mb", "max"), "max_macs": ("macs", "max"), "max_peak_mb": ("peak_mb", "max"),
    "min_agreement_non_near_ties": ("agreement_non_near_ties", "min"), "min_cosine": ("cosine", "min"),
}
# figures an objective may name; accuracy-like ones need labelled or judged data (spec.eval)
OBJECTIVES = ("accuracy", "drop", "p50_ms", "size_mb", "macs", "params", "peak_mb", "agreement_non_near_ties", "cosine")
# what a recipe trial measures: its flow report's final row
RECIPE_FIGURES = ("accuracy", "drop", "p50_ms", "size_mb", "macs", "params")
NEEDS_EVAL = {"accuracy", "drop", "agreement_non_near_ties", "cosine"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Constraints(_Strict):
    """What a target's chosen point must meet; every bound optional. `device` names the board
    (devices.yaml) that max_p50_ms is measured on; without it, this host."""

    max_drop: float | None = Field(None, ge=0, le=1)
    min_accuracy: float | None = Field(None, ge=0, le=1)
    max_p50_ms: float | None = Field(None, gt=0)
    device: str | None = None
    max_size_mb: float | None = Field(None, gt=0)
    max_macs: int | None = Field(None, ge=1)
    max_peak_mb: float | None = Field(None, gt=0)
    min_agreement_non_near_ties: float | None = Field(None, ge=0, le=1)
    min_cosine: float | None = Field(None, ge=-1, le=1)

    def bounds(self) -> dict[str, float]:
        """{constraint name: bound} for the bounds given."""
        return {k: getattr(self, k) for k in CONSTRAINTS if getattr(self, k) is not None}

    def merged(self, override: Constraints | None) -> Constraints:
        return self if override is None else Constraints(**(self.model_dump() | override.model_dump(exclude_none=True)))


class Target(_Strict):
    name: str
    constraints: Constraints | None = None  # replaces the spec's defaults field by field


class Range(_Strict):
    low: float = Field(ge=0, lt=1)
    high: float = Field(ge=0, lt=1)
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        return self


class KnobRange(_Strict):
    """A numeric recipe knob: integers when low, high and step are all integers, else floats."""

    low: float | int
    high: float | int
    step: float | int | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))


class Space(_Strict):
    """The knobs a trial picks from. One value = fixed; a list = a categorical choice. A recipe
    search's knobs are under `recipe` (dotted path -> values), the others are a model search's."""

    backend: list[str] = Field(default_factory=lambda: ["onnxruntime"], min_length=1)
    precision: list[Literal[PRECISIONS]] = Field(default_factory=lambda: ["fp32", "int8"], min_length=1)  # type: ignore[valid-type]
    prune_ratio: Range | list[float] = Field(default_factory=lambda: [0.0])
    prune_mode: list[Literal["uniform", "global"]] = Field(default_factory=lambda: ["uniform"], min_length=1)
    keep_float: list[list[str]] = Field(default_factory=lambda: [[]], min_length=1)
    # INT8 knobs (other precisions ignore them): "all" = every candidate of the INT8 search,
    # "profile" = the target profile's calibration method
    quantizer: list[Literal[("all", *QUANTIZERS)]] = Field(default_factory=lambda: ["all"], min_length=1)  # type: ignore[valid-type]
    calibration: list[Literal[("profile", *CALIBRATIONS)]] = Field(default_factory=lambda: ["profile"], min_length=1)  # type: ignore[valid-type]
    # INT8 points: the compile's accuracy budget (absolute), in place of the one the search
    # derives from its constraints (run.compile_budget): how tightly each compile fits its data,
    # so a check set can tell which fit holds beyond it. None: the derived budget only
    max_drop: list[float] | None = Field(None, min_length=1)
    recipe: dict[str, list[bool | int | float | str] | KnobRange] | None = Field(None, min_length=1)

    @field_validator("recipe")
    @classmethod
    def _knob_lists(cls, v):
        for path, values in (v or {}).items():
            if isinstance(values, list) and not values:
                raise ValueError(f"{path}: give at least one value")
        return v

    @field_validator("max_drop")
    @classmethod
    def _budgets(cls, v):
        if v is not None and any(not 0 <= d < 1 for d in v):
            raise ValueError("max_drop values must be in [0, 1) (absolute drops of the compile's metric)")
        return v

    @field_validator("prune_ratio")
    @classmethod
    def _ratios(cls, v):
        if isinstance(v, list) and (not v or any(not 0 <= r < 1 for r in v)):
            raise ValueError("prune_ratio values must be in [0, 1), at least one")
        return v

    @field_validator("backend")
    @classmethod
    def _backends(cls, v):
        from edgepack.backends import REGISTRY

        for name in v:
            if name not in REGISTRY:
                from edgepack.errors import close_names

                raise ValueError(f"unknown backend {name!r}{close_names(name, REGISTRY)}")
        return v


class SearchSpec(_Strict):
    name: str = Field("search", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    model: str | None = None
    recipe: str | dict | None = None  # RECIPE.yaml, or (from Python) a dict or a Recipe
    input_shape: list[str] | None = None
    weights: str | None = None
    calib: str | None = None
    eval: str | None = None
    # inputs no compile fits to (search/check.py): the judged figures are measured on them
    check: str | None = None
    metric: str | None = None
    targets: list[str | Target] = Field(default_factory=lambda: ["host"], min_length=1)
    constraints: Constraints = Constraints()
    # default: accuracy max, p50_ms min, size_mb min (without eval data: p50_ms and size_mb)
    objectives: dict[str, Literal["min", "max"]] | None = Field(None, min_length=1)
    space: Space = Space()
    trials: int = Field(20, ge=1, le=10_000)  # distinct points per target (a repeat proposal is not counted)
    workers: int = Field(1, ge=1, le=256)
    choose: Literal["fastest", "knee"] = "fastest"
    repeats: int = Field(3, ge=1, le=50)  # timings per point: the p50 is their median, with a 95% CI
    runs: int | None = Field(None, ge=1, le=100_000)
    warmup: int | None = Field(None, ge=0, le=100_000)
    threads: int | None = Field(None, ge=1, le=4096)
    seed: int = 0

    @field_validator("recipe", mode="before")
    @classmethod
    def _recipe_as_data(cls, v):
        return v.model_dump() if hasattr(v, "model_dump") else v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v):
        for name in v or ():
            if name not in OBJECTIVES:
                from edgepack.errors import close_names

                raise ValueError(f"unknown objective {name!r}{close_names(name, OBJECTIVES)}; use {', '.join(OBJECTIVES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.objectives is None:
            default = {"accuracy": "max", "p50_ms": "min", "size_mb": "min"}
            # a recipe scores every trial on its own test split
            labelled = self.eval or self.recipe is not None
            object.__setattr__(self, "objectives", default if labelled else {"p50_ms": "min", "size_mb": "min"})
        if (self.model is None) == (self.recipe is None):
            raise ValueError("give exactly one of model or recipe")
        if self.recipe is not None:
            return self._recipe_search()
        if self.space.recipe is not None:
            raise ValueError("space.recipe: recipe knobs need a recipe (give recipe: RECIPE.yaml instead of model)")
        needs = {n for n in self.objectives if n in NEEDS_EVAL} | {
            CONSTRAINTS[c][0] for t in self.target_list() for c in t.constraints.bounds() if CONSTRAINTS[c][0] in NEEDS_EVAL}
        if self.check is not None and self.eval is None:
            raise ValueError("check: judges points apart from eval, the data each compile fits its accuracy budget "
                             "on: give eval (--eval DATA) too")
        if needs and self.eval is None:
            raise ValueError(f"{', '.join(sorted(needs))} need{'s' if len(needs) == 1 else ''} evaluation data: "
                             "give eval (--eval DATA)")
        return self

    def key(self) -> str:
        """What makes two runs the same search (a resume): everything but how many trials and
        workers; the output folder holds it, and tracking finds the search's run by it."""
        import json

        # fields added later are left out while unset, so searches begun before them still resume
        exclude: dict = {"trials": True, "workers": True}
        if self.check is None:
            exclude["check"] = True
        if self.space.max_drop is None:
            exclude["space"] = {"max_drop": True}
        return json.dumps(self.model_dump(exclude=exclude), sort_keys=True, default=str)

    def _recipe_search(self):
        """A recipe search varies the recipe's knobs only; its data, model and weights are the recipe's."""
        if not self.space.recipe:
            raise ValueError("a recipe search needs space.recipe: {KNOB.PATH: [values]}, e.g. "
                             "{distill.temperature: [2, 4, 8]}")
        unmeasured = sorted({n for n in self.objectives if n not in RECIPE_FIGURES} | {
            c for t in self.target_list() for c in t.constraints.bounds() if CONSTRAINTS[c][0] not in RECIPE_FIGURES})
        if unmeasured:
            raise ValueError(f"{', '.join(unmeasured)}: a recipe trial reports {', '.join(RECIPE_FIGURES)} "
                             "(its flow's final row), not this")
        model_knobs = sorted(self.space.model_fields_set - {"recipe"})
        own = [k for k in ("input_shape", "weights", "calib", "eval", "check", "metric") if getattr(self, k) is not None]
        if model_knobs or own:
            raise ValueError(f"{', '.join(f'space.{k}' for k in model_knobs) or ', '.join(own)}: a recipe search "
                             "takes its model and data from the recipe; vary the recipe's knobs under space.recipe")
        return self

    def target_list(self) -> list[Target]:
        """Every target with its constraints resolved (its own over the spec's defaults)."""
        out = []
        for t in self.targets:
            t = Target(name=t) if isinstance(t, str) else t
            out.append(Target(name=t.name, constraints=self.constraints.merged(t.constraints)))
        return out


# the spec's fields that name files (read from the spec's folder; checked before any trial)
PATH_FIELDS = ("model", "recipe", "weights", "calib", "eval", "check")


def file_of(value: str) -> str:
    """The file a path field names: `file.py:factory` is its file.py."""
    return value.partition(".py:")[0] + ".py" if ".py:" in value else value


def load_spec(path: str | Path) -> SearchSpec:
    """A SEARCH.yaml, with relative paths read from its folder."""
    path = Path(path)
    data = read_yaml_mapping(path, "search spec")
    for key in PATH_FIELDS:
        value = data.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            model_path, sep, factory = value.partition(".py:")  # file.py:factory keeps its factory
            data[key] = str(path.parent / model_path) + (sep + factory if sep else "")
    return validate(SearchSpec, data, str(path), "search spec")


def parse_constraints(items: list[str] | None) -> dict:
    """`--constraint max_drop=0.01` items -> {"max_drop": "0.01"} (pydantic converts the values)."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise EdgepackError(f"--constraint {item[:80]!r}: expected NAME=VALUE, e.g. max_drop=0.01")
        if name not in CONSTRAINTS and name != "device":
            from edgepack.errors import close_names

            raise EdgepackError(f"--constraint {name[:80]!r}: unknown constraint{close_names(name, CONSTRAINTS)}; "
                                f"use one of {', '.join(CONSTRAINTS)}")
        out[name] = value
    return out


def from_args(fields: dict) -> SearchSpec:
    """The short form's spec: `fields` are the command line's (None = the default)."""
    return validate(SearchSpec, {k: v for k, v in fields.items() if v is not None}, "search", "search options")
