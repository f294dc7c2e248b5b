"""The one interface every runtime implements: emit an artifact, load it, run it.

Benchmarking is shared (edgepack.bench runs `load` and `run` in a fresh process), so a new
runtime is one module with these four methods and a line in the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from edgepack.ir.spec import TensorSpec


class Backend(ABC):
    name: ClassVar[str]

    @abstractmethod
    def emit(self, model: onnx.ModelProto, outdir: Path, profile) -> Path:
        """Write the artifact for `model` into `outdir` and return its main file."""

    @abstractmethod
    def load(self, artifact: Path, threads: int) -> Any:
        """Open the artifact for inference with `threads` intra-op threads."""

    @abstractmethod
    def run(self, session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference: feeds by input name -> outputs in graph order."""

    @abstractmethod
    def inputs(self, session: Any) -> list[TensorSpec]:
        """The loaded artifact's inputs, for making feeds when no data is given."""

    def runner(self, artifact: Path, threads: int):
        """A callable feeds -> outputs over a loaded session (for parity checks)."""
        session = self.load(artifact, threads)
        return lambda feeds: self.run(session, feeds)
