"""RECIPE.yaml: which teacher, which student, which data, and the stages with their gates.

    target: host
    teacher: {model: nets.py:teacher, weights: teacher.pt}     # or train: {epochs: 4}
    student: {model: nets.py:student}
    data: {train: train.npz, val: val.npz, test: test.npz}
    stages:
      - distill: {epochs: 6, temperature: 4, alpha: 0.7, gate: {max_drop: 0.01}}
      - prune: {ratio: 0.5, steps: 3, finetune: {epochs: 2, lr: 0.001}, gate: {max_drop: 0.01}}
      - quantize: {mode: qat, epochs: 1, gate: {max_drop: 0.01}}
      - emit: {backends: [onnxruntime], gate: {max_p50_ms: 1.0}}

Relative paths are read from the recipe's folder. From Python, `model` may also be an nn.Module
(or a zero-argument callable returning one) and data may be arrays or DataLoaders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgepack.frontends import is_factory
from edgepack.schema import read_yaml_mapping, validate
from edgepack.training.loop import TrainConfig
from edgepack.training.prune import PruneSchedule

STAGE_ORDER = ("distill", "prune", "quantize", "emit")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Gate(_Strict):
    """What a stage's output must reach for the flow to go on. Accuracy is top-1 on the test
    split; drop is in absolute points (0.01 = one point) below the teacher's."""

    max_drop: float | None = Field(None, ge=0)
    min_accuracy: float | None = Field(None, ge=0, le=1)
    max_params: int | None = Field(None, ge=1)
    max_macs: int | None = Field(None, ge=1)
    max_size_mb: float | None = Field(None, gt=0)
    max_p50_ms: float | None = Field(None, gt=0)

    def check(self, row: dict, teacher_accuracy: float) -> list[str]:
        """The failed conditions, each as a sentence (empty: passed)."""
        fails = []
        acc = row.get("accuracy")
        if self.max_drop is not None and acc is not None and teacher_accuracy - acc > self.max_drop + 1e-9:
            fails.append(f"accuracy {100 * acc:.2f}% is {100 * (teacher_accuracy - acc):.2f} points below the "
                         f"teacher's {100 * teacher_accuracy:.2f}% (max_drop {100 * self.max_drop:.2f})")
        if self.min_accuracy is not None and acc is not None and acc < self.min_accuracy:
            fails.append(f"accuracy {100 * acc:.2f}% < min_accuracy {100 * self.min_accuracy:.2f}%")
        limits = (("params", self.max_params, 1, ""), ("macs", self.max_macs, 1, ""),
                  ("size_bytes", self.max_size_mb, 1e6, " MB"), ("p50_ms", self.max_p50_ms, 1, " ms"))
        for key, limit, scale, unit in limits:
            value = row.get(key)
            if limit is not None and value is not None and value / scale > limit:
                fails.append(f"{key.replace('_bytes', '').replace('_ms', '')} {value / scale:g}{unit} > {limit:g}{unit}")
        return fails


class Distill(TrainConfig):
    baseline: bool = False  # also train the student without the teacher, to show what distillation adds
    gate: Gate = Gate()


class Prune(PruneSchedule):
    channel_multiple: int | None = Field(None, ge=1)  # None: the target profile's
    max_drop: float | None = Field(None, ge=0)  # None: the gate's max_drop (validation split), else 0.01
    finetune: TrainConfig = TrainConfig(epochs=1, lr=1e-3)
    gate: Gate = Gate()


class Quantize(TrainConfig):
    """INT8 in the target profile's scheme: QAT (fine-tuned with fake-quant) or PTQ (calibrated)."""

    mode: Literal["qat", "ptq"] = "qat"
    epochs: int = Field(1, ge=0)
    lr: float = Field(1e-4, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "sgd"
    schedule: Literal["onecycle", "cosine", "constant"] = "cosine"
    gate: Gate = Gate()


class Emit(_Strict):
    backends: list[str] | None = None  # default: the target's runtimes built by default
    # auto: an INT8 model ships only where it runs faster than the float graph before it;
    # int8: INT8 ships regardless (the report's verdict then says what it cost)
    precision: Literal["auto", "int8"] = "auto"
    gate: Gate = Gate()


class ModelRef(_Strict):
    model: Any  # "file.py:factory", a TorchScript file, an nn.Module or a callable returning one
    weights: str | None = None  # state_dict for a file.py:factory model
    # keyword arguments of a file.py:factory (or callable) model, e.g. {width: 16}: a recipe search
    # varies them as knobs (`student.args.width`) without a factory per size
    args: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig | None = None  # train it first (labels only): for a teacher without weights


class DataRef(_Strict):
    train: Any
    val: Any
    test: Any = None  # held-out split the table and gates report; default: val
    calib: Any = None  # PTQ calibration; default: the first 300 training samples


class Measure(_Strict):
    runs: int = Field(100, ge=1)
    warmup: int = Field(10, ge=0)
    threads: int | None = Field(None, ge=1)  # default: the target's


KINDS = {"distill": Distill, "prune": Prune, "quantize": Quantize, "emit": Emit}


class Recipe(_Strict):
    name: str = "flow"
    target: str = "host"
    teacher: ModelRef
    student: ModelRef | None = None
    data: DataRef
    input_shape: list[int] | None = None  # default: one sample of the training data
    measure: Measure = Measure()
    stages: list[dict[Literal["distill", "prune", "quantize", "emit"], Any]] = Field(min_length=1)
    base_dir: Path = Path(".")  # where relative paths are read from (the recipe's folder)

    @model_validator(mode="after")
    def _stages_in_order(self):
        if any(len(s) != 1 for s in self.stages):
            raise ValueError("each stage is one mapping `kind: {settings}`")
        kinds = [self.kind(s) for s in self.stages]
        order = [STAGE_ORDER.index(k) for k in kinds]
        if order != sorted(order) or len(set(kinds)) != len(kinds):
            raise ValueError(f"stages must run in the order {' -> '.join(STAGE_ORDER)}, each at most once "
                             f"(got {' -> '.join(kinds)})")
        if "distill" in kinds and self.student is None:
            raise ValueError("a distill stage needs a `student`")
        return self

    @staticmethod
    def kind(stage: dict) -> str:
        return next(iter(stage))

    def stage(self, i: int):
        kind = self.kind(self.stages[i])
        return kind, KINDS[kind].model_validate(self.stages[i][kind] or {})

    def resolve(self, value):
        """Relative paths in the recipe (files, `file.py:factory`) are read from its folder."""
        if not isinstance(value, str):
            return value
        if is_factory(value):
            file, _, attr = value.rpartition(":")
            return f"{self._join(file)}:{attr}"
        return self._join(value)

    def _join(self, path: str) -> str:
        return path if Path(path).is_absolute() else str(self.base_dir / path)


def load_recipe(source) -> Recipe:
    """A Recipe from a YAML path, a dict or a Recipe; every stage's settings are checked up
    front, so a typo in the last stage fails in a second, not after an hour of training."""
    if isinstance(source, Recipe):
        return source
    if isinstance(source, dict):
        where, data = "recipe", source
    else:
        where, data = str(source), read_yaml_mapping(Path(source), "recipe")
        data.setdefault("base_dir", str(Path(source).resolve().parent))
    recipe = validate(Recipe, data, where, "recipe")
    for i, stage in enumerate(recipe.stages):
        kind = recipe.kind(stage)
        validate(KINDS[kind], stage[kind] or {}, f"{where}: stages[{i}].{kind}", "stage settings")
    return recipe
