"""The one interface every runtime implements: emit an artifact, load it, run it.

Benchmarking is shared (edgepack.bench runs `load` and `run` in a fresh process), so a new
runtime is one module with these methods, an options model (backends/options.py) and a line in
the registry (backends/__init__.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from edgepack.backends.options import BackendOptions
from edgepack.ir.spec import TensorSpec


class Backend(ABC):
    name: ClassVar[str]
    # True: for INT8, emit() receives the QDQ ONNX graph made by edgepack's quantize pass.
    # False: emit() receives the float graph plus calibration data and quantizes its own way.
    consumes_qdq: ClassVar[bool] = True
    # True: building is quick, so after the INT8 search every static INT8 graph within the budget
    # and the FP32 graph are built and timed in this runtime, and the fastest ships (runtimes fuse
    # QDQ patterns differently; INT8 slower than FP32 in ONNX Runtime can be faster here).
    times_int8_choice: ClassVar[bool] = False
    # what emit() builds: a precision the target defaults to but a runtime lacks gets FP32 there
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")

    def __init__(self, options: BackendOptions | Mapping | None = None):
        """`options`: this backend's settings (its model in backends/options.py, or a mapping
        validated by it); defaults when None. Held, not global, so that backends built with
        different settings can work side by side in one process."""
        from edgepack.backends import validate_options

        self.options = validate_options(self.name, options)

    @abstractmethod
    def emit(self, model: onnx.ModelProto, outdir: Path, profile, precision: str = "fp32",
             calib=None) -> Path:
        """Write the artifact for `model` into `outdir` and return its main file.

        precision: "fp32" | "fp16" | "int8". calib: an edgepack.data.Dataset (only passed for
        INT8 when `consumes_qdq` is False). Failures raise EdgepackError naming op and node.
        """

    @abstractmethod
    def load(self, artifact: Path, threads: int) -> Any:
        """Open the artifact for inference with `threads` intra-op threads."""

    @abstractmethod
    def run(self, session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference: feeds by ONNX input name -> outputs in the ONNX graph's output order."""

    @abstractmethod
    def inputs(self, session: Any) -> list[TensorSpec]:
        """The loaded artifact's inputs, for making feeds when no data is given."""

    def describe(self, artifact: Path) -> dict:
        """Runtime-specific facts for the report (e.g. per-layer execution precision, untuned)."""
        return {}

    def companions(self, artifact: Path) -> list[Path]:
        """Files the runtime loads beside the artifact (weights, sidecars): they count in its size."""
        return []

    def runner(self, artifact: Path, threads: int):
        """A callable feeds -> outputs over a loaded session (for parity checks)."""
        session = self.load(artifact, threads)
        return lambda feeds: self.run(session, feeds)
