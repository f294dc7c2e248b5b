"""ONNX Runtime session (CPU execution provider). Imports nothing from edgepack.

`session_options` is the one definition of how edgepack opens ONNX Runtime: the shipped
artifact, the search loops that chose it (edgepack.runtime.ort_session) and every device run
under the same options (sequential, one inter-op thread, CPU provider, ORT_ENABLE_ALL).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

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
    def __init__(self, session: ort.InferenceSession, source: str | bytes | None = None, threads: int = 0):
        self.session, self.source, self.threads = session, source, threads

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)

    def inputs(self) -> list[dict]:
        return [{"name": i.name, "shape": [d if isinstance(d, int) else (d or "?") for d in i.shape],
                 "dtype": _TYPES.get(i.type, "float32")} for i in self.session.get_inputs()]


    def op_profile(self, feeds: list[dict[str, np.ndarray]], runs: int) -> list[dict]:
        """Per-node times from ONNX Runtime's own profiler: a second session with profiling on
        (profiling is a session option, and the timed session must stay unprofiled), one untimed
        run, then `runs` profiled ones; its JSON trace is parsed and removed.
        [{op: node name, type: op type, ms: per inference, calls: per inference}]."""
        if self.source is None:
            raise SessionError("onnxruntime: no model source to profile")
        folder = tempfile.mkdtemp(prefix="edgepack-ort-profile-")
        try:
            opts = session_options(self.threads)
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(folder, "ort")
            profiled = ort.InferenceSession(self.source, opts, providers=PROVIDERS)
            for i in range(runs + 1):
                profiled.run(None, feeds[i % len(feeds)])
            with open(profiled.end_profiling()) as f:
                return trace_ops(json.load(f), runs)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def trace_ops(events: list[dict], runs: int) -> list[dict]:
    """Node events of an ONNX Runtime trace after its first model_run (a warm-up), summed per node."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    since = starts[1] if len(starts) > 1 else 0
    ops: dict[str, dict] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or e.get("ts", 0) < since:
            continue
        op = ops.setdefault(name[: -len("_kernel_time")], {"type": e.get("args", {}).get("op_name", "?"),
                                                          "us": 0, "calls": 0})
        op["us"] += e.get("dur", 0)
        op["calls"] += 1
    n = max(1, runs)
    return [{"op": name, "type": v["type"], "ms": v["us"] / 1e3 / n, "calls": v["calls"] / n}
            for name, v in ops.items()]


def open_session(artifact: str, threads: int) -> Session:
    return Session(inference_session(str(artifact), threads), str(artifact), threads)
