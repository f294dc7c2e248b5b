"""Iterative structured pruning with fine-tuning, on torch-pruning's dependency graph (DepGraph).

Each step removes a share of channels (widths rounded to the target's channel multiple), then
fine-tunes (with the teacher's soft labels when there is one). A step whose validation drop
exceeds the budget is undone and pruning stops: the last good model comes back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch_pruning as tp
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from edgepack.errors import EdgepackError
from edgepack.training.data import as_loader, example_input
from edgepack.training.loop import SoftTargets, TrainConfig, accuracy, train

IMPORTANCE = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
    "bn": lambda: tp.importance.BNScaleImportance(),
}


class PruneSchedule(BaseModel):
    """How far and how fast to prune; a recipe's prune stage sets these fields."""

    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(0.5, gt=0, lt=1)  # share of channels removed once every step has run
    steps: int = Field(3, ge=1)
    importance: Literal["l1", "l2", "taylor", "bn"] = "l2"
    channel_multiple: int = Field(1, ge=1)  # from the target profile
    max_drop: float = Field(0.01, ge=0)  # validation accuracy drop allowed against `reference`
    global_pruning: bool = False


@dataclass
class PruneResult:
    model: nn.Module
    steps: list[dict] = field(default_factory=list)
    stopped: str = ""  # why pruning ended before `ratio`, if it did

    def summary(self) -> dict:
        return {"steps": self.steps, "stopped": self.stopped or None}


def prune_iteratively(model: nn.Module, train_data, val_data, schedule: PruneSchedule,
                      finetune: TrainConfig | None = None, teacher: nn.Module | None = None,
                      reference: float | None = None, progress=None,
                      soft_targets: SoftTargets | None = None) -> PruneResult:
    """Prune `model` in `schedule.steps` steps up to `schedule.ratio`, fine-tuning after each.

    `reference`: the accuracy the budget is measured against (the teacher's, in a flow);
    defaults to the model's own validation accuracy before pruning. `soft_targets`: the flow's
    cache of the teacher's logits, shared by every step's fine-tuning (None: computed per step).
    """
    finetune = finetune or TrainConfig(epochs=1)
    train_loader = as_loader(train_data, finetune.batch_size, shuffle=True, seed=finetune.seed)
    val_loader = as_loader(val_data, 256)
    example = example_input(val_loader)
    reference = accuracy(model, val_loader) if reference is None else reference
    pruner = _pruner(model, example, schedule, train_loader)
    result = PruneResult(model)
    good = copy.deepcopy(model)
    base_macs, _ = tp.utils.count_ops_and_params(model, example)
    for i in range(1, schedule.steps + 1):
        model.train()
        if schedule.importance == "taylor":
            _accumulate_gradients(model, train_loader)
        pruner.step()
        model.zero_grad(set_to_none=True)
        tuned = train(model, train_loader, val_loader, finetune, teacher=teacher,
                      progress=(lambda s, n, i=i: progress(i, s, n)) if progress else None,
                      soft_targets=soft_targets)
        macs, params = tp.utils.count_ops_and_params(model, example)
        row = {"step": i, "macs": int(macs), "params": int(params), "macs_ratio": macs / base_macs,
               "val_after_prune": tuned.start_val, "val_after_finetune": tuned.best_val,
               "drop": reference - tuned.best_val}
        result.steps.append(row)
        if reference - tuned.best_val > schedule.max_drop:
            row["kept"] = False
            result.stopped = (f"step {i} dropped validation accuracy by {100 * row['drop']:.2f} points "
                              f"(budget {100 * schedule.max_drop:.2f}); kept step {i - 1}")
            result.model = good
            return result
        row["kept"] = True
        good = copy.deepcopy(model)
    result.model = model
    return result


def _pruner(model: nn.Module, example: torch.Tensor, schedule: PruneSchedule, train_loader):
    """MetaPruner over every Conv/Linear except the layer that produces the output (its width is
    the number of classes)."""
    return tp.pruner.MetaPruner(
        model, example, importance=IMPORTANCE[schedule.importance](),
        pruning_ratio=schedule.ratio, iterative_steps=schedule.steps,
        round_to=schedule.channel_multiple if schedule.channel_multiple > 1 else None,
        ignored_layers=[_output_layer(model, example)], global_pruning=schedule.global_pruning)


def _output_layer(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last Conv/Linear that runs: pruning its outputs would change what the model predicts."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d))]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise EdgepackError("the model has no Conv or Linear layer to prune")
    return order[-1]


def _accumulate_gradients(model: nn.Module, loader, batches: int = 8) -> None:
    """Taylor importance reads .grad: a few batches of loss gradients."""
    model.zero_grad()
    for j, (x, y) in enumerate(loader):
        if j == batches:
            break
        nn.functional.cross_entropy(model(x), y).backward()
