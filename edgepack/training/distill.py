"""Knowledge distillation: a small student learns from a trained teacher's softened outputs."""

from __future__ import annotations

import torch
from torch import nn

from edgepack.errors import EdgepackError
from edgepack.training.data import as_loader, example_input
from edgepack.training.loop import SoftTargets, TrainConfig, TrainResult, train


def distill(teacher: nn.Module | None, student: nn.Module, train_data, val_data,
            cfg: TrainConfig | None = None, progress=None, soft_targets: SoftTargets | None = None) -> TrainResult:
    """Train `student` on `train_data` against `teacher` (None: labels only, the baseline to beat).

    Data: DataLoaders, (x, y) arrays or labelled .npz files. Returns the best validation epoch.
    `soft_targets`: the flow's cache of the teacher's logits (None: computed for this call).
    """
    cfg = cfg or TrainConfig()
    train_loader = as_loader(train_data, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_loader = as_loader(val_data, 256)
    if teacher is not None:
        _check_compatible(teacher, student, example_input(val_loader))
    return train(student, train_loader, val_loader, cfg, teacher=teacher, progress=progress,
                 soft_targets=soft_targets)


@torch.no_grad()
def _check_compatible(teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> None:
    t, s = teacher.eval()(x), student.eval()(x)
    if t.shape != s.shape:
        raise EdgepackError(f"teacher and student outputs differ in shape: {tuple(t.shape)} vs {tuple(s.shape)}")
