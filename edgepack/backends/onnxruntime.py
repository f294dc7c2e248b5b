"""ONNX Runtime (CPU execution provider): the artifact is the canonical ONNX graph itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgepack.backends.base import Backend
from edgepack.ir.spec import TensorSpec
from edgepack.runtime import ort_session


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def emit(self, model: onnx.ModelProto, outdir: Path, profile, precision: str = "fp32",
             calib=None) -> Path:
        # ORT applies its own graph optimisations at load time, tuned to the CPU it runs on;
        # baking them in here would tie the artifact to this machine.
        path = outdir / "model.onnx"
        onnx.save(model, str(path))
        return path

    def load(self, artifact: Path, threads: int):
        return ort_session(artifact, threads)

    def run(self, session, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(None, feeds)

    def inputs(self, session) -> list[TensorSpec]:
        return [TensorSpec(i.name, tuple(d if isinstance(d, int) else (d or "?") for d in i.shape),
                           _ORT_TYPES.get(i.type, "float32")) for i in session.get_inputs()]


_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}
