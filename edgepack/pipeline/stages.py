"""The four stages. Each takes the model the flow holds and returns what it made; the engine
measures, gates and saves it. No stage knows about files, gates or the report."""

import copy
from dataclasses import dataclass, field

import onnx
from torch import nn

from edgepack.pipeline.measure import canonical, to_onnx
from edgepack.pipeline.recipe import Distill, Prune, Quantize
from edgepack.training.distill import distill
from edgepack.training.loop import TrainConfig
from edgepack.training.prune import PruneSchedule, prune_iteratively
from edgepack.training.qat import quantize_aware


@dataclass
class Output:
    onnx: onnx.ModelProto  # what the next stage (and the table) sees
    module: nn.Module | None = None  # torch stages only: what the next torch stage trains
    details: dict = field(default_factory=dict)
    extra: dict[str, onnx.ModelProto] = field(default_factory=dict)  # side models worth a row


def _part(settings_cls, cfg, **override):
    """The fields of a stage's settings that belong to `settings_cls` (stages extend TrainConfig
    or PruneSchedule with their gate and extras)."""
    return settings_cls(**{**cfg.model_dump(include=set(settings_cls.model_fields)), **override})


def run_distill(flow, cfg: Distill, model: nn.Module) -> Output:
    train_cfg = _part(TrainConfig, cfg)
    student = flow.fresh_student()
    alone = copy.deepcopy(student)  # the baseline starts from the very same weights
    with flow.bar("distilling the student", train_cfg.epochs * flow.batches(train_cfg)) as advance:
        result = distill(flow.teacher, student, flow.train, flow.val, train_cfg, progress=lambda s, _: advance(s),
                         soft_targets=flow.soft_targets)
    out = Output(to_onnx(result.model, flow.example), result.model,
                 {"settings": cfg.model_dump(exclude={"gate"}), "training": result.summary()})
    if cfg.baseline:  # the same student, same settings and seed, labels only
        with flow.bar("training the student without teacher", train_cfg.epochs * flow.batches(train_cfg)) as advance:
            base = distill(None, alone, flow.train, flow.val, train_cfg, progress=lambda s, _: advance(s))
        out.details["baseline_training"] = base.summary()
        out.extra["no teacher"] = to_onnx(base.model, flow.example)
    return out


def run_prune(flow, cfg: Prune, model: nn.Module) -> Output:
    multiple = cfg.channel_multiple or flow.profile.pruning.channel_multiple
    budget = cfg.max_drop if cfg.max_drop is not None else (
        cfg.gate.max_drop if cfg.gate.max_drop is not None else 0.01)
    schedule = _part(PruneSchedule, cfg, channel_multiple=multiple, max_drop=budget)
    per_step = cfg.finetune.epochs * flow.batches(cfg.finetune)
    with flow.bar(f"pruning in {cfg.steps} steps", cfg.steps * per_step) as advance:
        result = prune_iteratively(model, flow.train, flow.val, schedule, cfg.finetune, teacher=flow.teacher,
                                   reference=flow.teacher_val,
                                   progress=lambda i, s, _: advance((i - 1) * per_step + s),
                                   soft_targets=flow.soft_targets)
    return Output(to_onnx(result.model, flow.example), result.model,
                  {"settings": schedule.model_dump(), "finetune": cfg.finetune.model_dump(),
                   "budget_reference": "teacher validation accuracy", **result.summary()})


def run_quantize(flow, cfg: Quantize, model: nn.Module) -> Output:
    if cfg.mode == "ptq":
        return _ptq(flow, cfg, model)
    train_cfg = _part(TrainConfig, cfg)
    with flow.bar("quantization-aware training", max(train_cfg.epochs, 1) * flow.batches(train_cfg)) as advance:
        result = quantize_aware(model, flow.train, flow.val, flow.profile.quantization, train_cfg,
                                teacher=flow.teacher, progress=lambda s, _: advance(s),
                                soft_targets=flow.soft_targets)
    return Output(canonical(result.onnx_model), None, {"mode": "qat", **result.summary()})


def _ptq(flow, cfg: Quantize, model: nn.Module) -> Output:
    """Post-training INT8 with the same machinery as `edgepack compile` (accuracy-aware, measured)."""
    from edgepack.passes.metrics import Evaluator
    from edgepack.passes.precision import Int8Search, quantize_for_target
    from edgepack.passes.quantize import IgnoredScope
    from edgepack.runtime import ort_runner

    float_model = to_onnx(model, flow.example)
    val = flow.dataset(float_model, flow.val)
    run = ort_runner(float_model)
    evaluator = Evaluator.build("top1", val, 1, run)
    score = evaluator.score(run)
    budget = flow.int8_budget(cfg.gate, score, flow.teacher_val)  # the gate counts from the teacher
    # allow_dynamic=False: what ships is the static QDQ graph every backend takes (or FP32 when
    # INT8 measured slower here, which the section says)
    search = Int8Search(flow.profile, (0.01 if budget is None else budget, False), IgnoredScope(),
                        flow.bench.threads, allow_dynamic=False, timing=flow.timing)
    plan = quantize_for_target(float_model, flow.dataset(float_model, flow.calib), evaluator, score, search)
    return Output(plan.model, None, {"mode": "ptq", "precision": plan.precision, **plan.section})
