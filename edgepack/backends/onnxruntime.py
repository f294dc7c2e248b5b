"""ONNX Runtime (CPU execution provider): the artifact is the canonical ONNX graph itself.

Loading and running: backends/sessions/onnxruntime_session.py (edgepack's one set of ONNX Runtime
session options)."""

from __future__ import annotations

from pathlib import Path

import onnx

from edgepack.backends.base import Backend


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    session_module = "onnxruntime_session"

    def emit(self, model: onnx.ModelProto, outdir: Path, profile, precision: str = "fp32",
             calib=None) -> Path:
        # ORT applies its own graph optimisations at load time, tuned to the CPU it runs on;
        # baking them in here would tie the artifact to this machine.
        path = outdir / "model.onnx"
        onnx.save(model, str(path))
        return path
