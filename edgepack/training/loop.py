"""One training loop for every torch stage: plain training, distillation, fine-tuning, QAT.

With a teacher the loss is Hinton's  alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * CE;
without one it is CE. Validation after each epoch, early stopping on `patience`, and the best
epoch's weights are what comes back (not the last epoch's).
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from edgepack.frontends.torch_module import state_digest

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "sgd": lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr, momentum=0.9,
                                                                       weight_decay=weight_decay, nesterov=True)}


class TrainConfig(BaseModel):
    """How to train; a recipe stage sets any of these fields (unknown ones are an error)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(5, ge=0)
    lr: float = Field(3e-3, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    patience: int | None = Field(None, ge=1)  # epochs without a better validation score before stopping
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)  # share of the soft (teacher) term; unused without a teacher
    seed: int = 0


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)  # per epoch: loss, val accuracy, seconds
    best_epoch: int = 0  # 0 = the weights as given were never beaten
    best_val: float = float("nan")
    stopped_early: bool = False
    start_val: float = float("nan")  # validation accuracy of the weights as given

    def summary(self) -> dict:
        return {"epochs_run": len(self.history), "best_epoch": self.best_epoch, "best_val": self.best_val,
                "stopped_early": self.stopped_early, "history": self.history}


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """T^2 keeps the soft term's gradients on the hard term's scale as T grows (Hinton et al.)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    reduction="batchmean", log_target=True) * t * t
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student, labels)


@torch.no_grad()
def accuracy(model: nn.Module, loader, set_eval: Callable | None = None) -> float:
    """Top-1 on a loader of (x, y)."""
    (set_eval or nn.Module.eval)(model)
    hit = total = 0
    for x, y in loader:
        hit += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return hit / max(total, 1)


def train(model: nn.Module, train_loader, val_loader, cfg: TrainConfig, teacher: nn.Module | None = None,
          progress: Callable[[int, int], None] | None = None, modes: tuple[Callable, Callable] | None = None,
          soft_targets: "SoftTargets | None" = None) -> TrainResult:
    """Train `model` in place and return it holding its best validation epoch's weights.

    `modes` = (set_train, set_eval) switch modes for models where .train()/.eval() do not (an
    exported QAT graph); `progress(step, total)` is called per batch; `soft_targets` reuses the
    teacher's logits across calls (None: computed once for this call). Whatever draws on torch's
    default generator (dropout) is seeded with `cfg.seed` for this call only: the caller's random
    state is the same after as before.
    """
    set_train, set_eval = modes or (nn.Module.train, nn.Module.eval)
    with seeded(cfg.seed):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = max(cfg.epochs * len(train_loader), 1)
        sched = _schedule(opt, cfg, steps)
        train_loader = _with_soft_targets(train_loader, teacher, soft_targets)
        best_val = accuracy(model, val_loader, set_eval)
        best_state, best_epoch, stale = copy.deepcopy(model.state_dict()), 0, 0
        result = TrainResult(model, start_val=best_val)
        tick = _ticker(progress, steps)
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            set_train(model)
            total_loss = _epoch(model, train_loader, teacher, cfg, (opt, sched), tick)
            val = accuracy(model, val_loader, set_eval)
            result.history.append({"epoch": epoch, "loss": total_loss / len(train_loader.dataset),
                                   "val_accuracy": val, "seconds": round(time.perf_counter() - t0, 2)})
            stale = 0 if val > best_val else stale + 1
            if val >= best_val:  # on a tie the later (longer-trained) weights win
                best_val, best_epoch = val, epoch
                best_state = copy.deepcopy(model.state_dict())
            if cfg.patience is not None and stale >= cfg.patience:
                result.stopped_early = True
                break
    model.load_state_dict(best_state)
    set_eval(model)
    result.best_epoch, result.best_val = best_epoch, best_val
    return result


@contextmanager
def seeded(seed: int):
    """torch's default generator seeded for the block and restored after, so a caller's (or a
    neighbour's) random state is not left changed. Dropout cannot take a generator of its own, so
    models with dropout trained in two threads at once still share draws; the data order (the
    loaders' own generators) and models without dropout are unaffected."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _ticker(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None]:
    """Counts batches across epochs and reports them to `progress`."""
    step = 0

    def tick():
        nonlocal step
        step += 1
        if progress:
            progress(step, total)

    return tick


def _epoch(model: nn.Module, loader, teacher: nn.Module | None, cfg: TrainConfig, optim: tuple,
           tick: Callable[[], None]) -> float:
    """One pass over `loader`; returns the summed loss (per sample)."""
    opt, sched = optim
    total_loss = 0.0
    for x, y, *soft in loader:
        logits = model(x)
        if teacher is not None:
            if not soft:
                with torch.no_grad():
                    soft = [teacher(x)]
            loss = distillation_loss(logits, soft[0], y, cfg.temperature, cfg.alpha)
        else:
            loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        total_loss += loss.item() * len(y)
        tick()
    return total_loss


def _with_soft_targets(loader, teacher: nn.Module | None, cache: "SoftTargets | None"):
    """Arrays given (no augmentation): run the teacher once over them and serve its logits with
    each batch, instead of once per batch per epoch. A frozen teacher gives the same logits every
    time, and it is usually the bigger network, so this is most of distillation's cost."""
    if teacher is None:
        return loader
    teacher.eval()
    dataset = loader.dataset
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
        return loader  # a user DataLoader may augment: the teacher must see each batch as drawn
    x = dataset.tensors[0]
    soft = cache.logits(teacher, x) if cache is not None else teacher_logits(teacher, x)
    return DataLoader(TensorDataset(*dataset.tensors, soft), batch_size=loader.batch_size,
                      shuffle=isinstance(loader.sampler, RandomSampler), generator=loader.generator)


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher's logits on `x`, in eval mode, 256 rows at a time."""
    teacher.eval()
    return torch.cat([teacher(b) for b in x.split(256)])


class SoftTargets:
    """A teacher's logits, computed once per (teacher weights, inputs) and reused.

    A flow calls train() with the same frozen teacher and training set for distillation, every
    pruning step and QAT (reusing them took the demo's two-step prune stage from 10.1 to 5.5 s on
    2 cores). The flow creates one and passes it down, so flows running side by side in one
    process never share, evict or race on each other's entries; it holds each teacher weakly.
    """

    def __init__(self):
        # teacher -> (its weights' digest, inputs, logits)
        self._entries: "weakref.WeakKeyDictionary[nn.Module, tuple[str, torch.Tensor, torch.Tensor]]" = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def logits(self, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits on `x` (in eval mode), from the cache when weights and inputs match."""
        with self._lock:
            teacher.eval()
            digest, cached = state_digest(teacher), self._entries.get(teacher)
            if cached and cached[0] == digest and cached[1].shape == x.shape and torch.equal(cached[1], x):
                return cached[2]
            soft = teacher_logits(teacher, x)
            self._entries[teacher] = (digest, x.clone(), soft)  # a copy: the caller may change x in place
            return soft


def _schedule(opt, cfg: TrainConfig, steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return None
