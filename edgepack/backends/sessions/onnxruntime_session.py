"""ONNX Runtime session (CPU execution provider). Imports nothing from edgepack.

`session_options` is the one definition of how edgepack opens ONNX Runtime: the shipped
artifact, the search loops that chose it (edgepack.runtime.ort_session) and every device run
under the same options (sequential, one inter-op thread, CPU provider, ORT_ENABLE_ALL).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

PROVIDERS = ["CPUExecutionProvider"]
_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


class SessionError(Exception):
    """A failure the user can fix (bad file, wrong inputs), in one line."""


def session_options(threads: int = 0, optimize: bool = True) -> ort.SessionOptions:
    """threads 0 = ONNX Runtime's default intra-op count."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def inference_session(source: str | bytes, threads: int = 0, optimize: bool = True) -> ort.InferenceSession:
    """A raw InferenceSession of a model file or serialized model, under edgepack's options."""
    return ort.InferenceSession(source, session_options(threads, optimize), providers=PROVIDERS)


class Session:
    def __init__(self, session: ort.InferenceSession):
        self.session = session

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)

    def inputs(self) -> list[dict]:
        return [{"name": i.name, "shape": [d if isinstance(d, int) else (d or "?") for d in i.shape],
                 "dtype": _TYPES.get(i.type, "float32")} for i in self.session.get_inputs()]


def open_session(artifact: str, threads: int) -> Session:
    return Session(inference_session(str(artifact), threads))
