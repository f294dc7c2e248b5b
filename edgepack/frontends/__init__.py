"""Frontends: whatever the user hands us -> an ONNX graph plus a way to run the original.

Keeping a runnable reference of the *source* model (not of our own export) is what lets every
later stage report parity against what the user actually trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edgepack.errors import EdgepackError

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")


@dataclass
class Source:
    """A model as it entered edgepack."""

    model: onnx.ModelProto  # exported/loaded graph, not yet canonical
    kind: str  # "onnx" | "torch" | "torchscript"
    name: str
    sha256: str
    run: Runner  # the source model itself, for parity checks
    path: str | None = None
    notes: list[str] = field(default_factory=list)


def load_source(model, input_shapes: dict | None = None, weights: str | None = None) -> Source:
    """Dispatch on what `model` is: nn.Module, `.onnx` file, `file.py:factory`, TorchScript file."""
    from edgepack.frontends import onnx_file, torch_module

    if not isinstance(model, (str, Path)):
        import torch

        if isinstance(model, torch.nn.Module):
            return torch_module.from_module(model, input_shapes, name=type(model).__name__)
        if isinstance(model, onnx.ModelProto):
            return onnx_file.from_proto(model)
        raise EdgepackError(f"cannot compile a {type(model).__name__}: pass an nn.Module, ONNX model or a path")
    text = str(model)
    if weights and not is_factory(text):
        raise EdgepackError("--weights applies to a `file.py:factory` model only")
    if is_factory(text):
        return torch_module.from_factory(text, input_shapes, weights)
    path = Path(text)
    if not path.exists():
        raise EdgepackError(f"{text}: no such file")
    if path.is_dir():
        raise EdgepackError(f"{text}: is a folder, expected a model file (.onnx, .pt, file.py:factory)")
    if path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
        return torch_module.from_torchscript(path, input_shapes)
    return onnx_file.from_file(path)


def is_factory(text: str) -> bool:
    """`file.py:factory` (a Python file and a function in it), as opposed to a model file."""
    head, sep, attr = text.rpartition(":")
    return bool(sep) and head.endswith(".py") and attr.isidentifier()
