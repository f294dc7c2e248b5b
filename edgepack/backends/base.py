"""The one interface every runtime implements: emit an artifact, load it, run it.

Loading and running live in the runtime's session module (backends/sessions/, numpy + the
runtime only), so the host in-process, the fresh-process worker and the emulated board all run
the same code. A new runtime is one backend module, one session module, an options model
(backends/options.py) and a line in the registry (backends/__init__.py).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from edgepack.backends.options import BackendOptions
from edgepack.backends.sessions import session_file
from edgepack.errors import EdgepackError
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
    # emit_controlled(model, outdir, profile, calib, control): the runtime's own INT8 quantizer
    # with accuracy control, judged in the runtime; one more candidate of its INT8 choice
    controls_int8: ClassVar[bool] = False
    # what emit() builds: a precision the target defaults to but a runtime lacks gets FP32 there
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    # the module in backends/sessions/ that opens and runs this runtime's artifacts
    session_module: ClassVar[str]

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

        precision: "fp32" | "fp16" | "int8" (| "bf16" where `precisions` has it). calib: an edgepack.data.Dataset (only passed for
        INT8 when `consumes_qdq` is False). Failures raise EdgepackError naming op and node.
        """

    def sessions(self):
        """The session module, imported in this process (devices copy its file instead)."""
        return importlib.import_module(f"edgepack.backends.sessions.{self.session_module}")

    def session_file(self) -> Path:
        """The session module's file: what a device or a bundle copies to run the artifact."""
        return session_file(self.session_module)

    def load(self, artifact: Path, threads: int) -> Any:
        """Open the artifact for inference with `threads` intra-op threads."""
        return self.open_session(artifact, threads)

    def open_session(self, artifact: Path, threads: int, **options) -> Any:
        """The session module's open_session, its one-line errors raised as EdgepackError."""
        module = self.sessions()
        try:
            return module.open_session(str(artifact), threads, **options)
        except module.SessionError as e:
            raise EdgepackError(str(e)) from None

    def run(self, session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference: feeds by ONNX input name -> outputs in the ONNX graph's output order."""
        try:
            return session.run(feeds)
        except self.sessions().SessionError as e:  # evaluated only when something was raised
            raise EdgepackError(str(e)) from None

    def inputs(self, session: Any) -> list[TensorSpec]:
        """The loaded artifact's inputs, for making feeds when no data is given."""
        return [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in session.inputs()]

    def cross_compiled(self, artifact: Path) -> bool:
        """True when the artifact is built for another architecture and runs on the emulated board."""
        return False

    def architecture(self, artifact: Path) -> str | None:
        """The CPU architecture the artifact is machine code for (as platform.machine() names it);
        None when it is portable and runs wherever its runtime does (ONNX, IR, flatbuffers)."""
        return None

    def declared_inputs(self, artifact: Path) -> list[TensorSpec] | None:
        """The inputs the artifact's own files declare, readable without loading it (a
        cross-compiled artifact cannot be loaded here); None when they declare none."""
        return None

    def describe(self, artifact: Path) -> dict:
        """Runtime-specific facts for the report (e.g. per-layer execution precision, untuned)."""
        return {}

    def companions(self, artifact: Path) -> list[Path]:
        """Files the runtime loads beside the artifact (weights, sidecars): they count in its size."""
        return []

    def deployment(self, artifact: Path) -> dict:
        """What a device needs to run `artifact` (a bundle's manifest holds it): `arch` ("any" for
        a portable file, else the CPU architecture it was built for), the runtime package's
        `minimum_version` (None: no release older than the tested one was checked) and
        `minimum_reason`, `ops` ({"format", "opsets", "ops", ...}: what a reduced runtime
        build or a delegate has to provide) and, where the file records it, `precision` (a bf16
        one needs a CPU with native BF16: devices/compat.py)."""
        return {"arch": self.architecture(artifact) or "any", "minimum_version": None,
                "minimum_reason": f"no {self.name} release older than the tested one was checked", "ops": {},
                "precision": None}

    def runner(self, artifact: Path, threads: int) -> "ArtifactRunner":
        """A callable feeds -> outputs over a loaded session (for parity checks and choices)."""
        return ArtifactRunner(self, artifact, self.load(artifact, threads))


class ArtifactRunner:
    """feeds -> outputs of one loaded artifact; `artifact` says what it runs (a timing strategy
    may ask, as tests that pin INT8 vs FP32 verdicts do)."""

    def __init__(self, backend: Backend, artifact: Path, session):
        self.backend, self.artifact, self.session = backend, artifact, session

    def __call__(self, feeds):
        return self.backend.run(self.session, feeds)
