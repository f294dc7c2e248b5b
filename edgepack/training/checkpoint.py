"""Saving models whose layer widths changed (pruned) so they reload safely.

torch-pruning's own `tp.state_dict` pickles each module's __dict__, which needs an unsafe load.
Here a checkpoint is the state_dict plus each layer's width attributes (plain ints), so it loads
with `torch.load(weights_only=True)` into a fresh instance of the original architecture.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgepack.errors import EdgepackError, first_line

WIDTH_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
               "normalized_shape", "num_groups", "embed_dim", "num_heads")


def save(model: nn.Module, path: Path) -> None:
    widths = {}
    for name, module in model.named_modules():
        attrs = {a: getattr(module, a) for a in WIDTH_ATTRS if isinstance(getattr(module, a, None), (int, tuple))}
        if attrs:
            widths[name] = attrs
    torch.save({"state_dict": model.state_dict(), "widths": widths}, path)


def load(model: nn.Module, path: Path) -> nn.Module:
    """Resize `model` (a fresh instance of the saved architecture) to the checkpoint and load it."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state, widths = ckpt["state_dict"], ckpt["widths"]
    except Exception as e:
        raise EdgepackError(f"{path}: not an edgepack checkpoint: {first_line(e)}")
    modules = dict(model.named_modules())
    for name, attrs in widths.items():
        if name not in modules:
            raise EdgepackError(f"{path}: layer {name!r} is not in the model it is loaded into")
        for attr, value in attrs.items():
            setattr(modules[name], attr, value)
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            raise EdgepackError(f"{path}: {key} does not belong to this model")
        current = getattr(module, leaf, None)
        if isinstance(current, nn.Parameter):
            setattr(module, leaf, nn.Parameter(tensor.clone(), requires_grad=current.requires_grad))
        elif isinstance(current, torch.Tensor):
            module.register_buffer(leaf, tensor.clone())
    return model.eval()
