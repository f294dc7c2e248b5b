"""OpenVINO (CPU plugin) session: `model.xml` + `model.bin`. Imports nothing from edgepack.

The settings a session needs travel inside the IR as rt_info under "edgepack" (written by
edgepack.backends.openvino at emit): the inference precision hint, runtime options from the
target profile, and the ONNX graph's input names and output order, so `run()` takes ONNX names
and returns ONNX order wherever the artifact is copied.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

DEVICE = "CPU"
RT_KEY = "edgepack"


class SessionError(Exception):
    """A failure the user can fix (bad file, wrong inputs), in one line."""


@functools.cache
def core() -> ov.Core:
    return ov.Core()


def reason(text: str) -> str:
    """The most specific line of an OpenVINO error: the last informative one before 'Summary'."""
    body = text.split("Summary:")[0]
    skip = ("Check '", "While validating", "FrontEnd API failed", "Model wasn't fully converted",
            "[ONNX Frontend]", "-- ", "Exception from src")
    lines = [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return (lines[-1] if lines else _first_line(Exception(text)))[:300]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def as_str(v) -> str:
    try:
        return v.astype(str)
    except Exception:
        return str(v)


def artifact_meta(ov_model: ov.Model) -> dict:
    """rt_info["edgepack"] of a read IR ({} for an IR made elsewhere)."""
    if not ov_model.has_rt_info([RT_KEY]):
        return {}
    try:
        return {k: as_str(v) for k, v in ov_model.get_rt_info([RT_KEY]).astype(dict).items()}
    except Exception:
        return {}


@dataclass
class Session:
    """A compiled model with its one InferRequest (reused across calls: no per-call setup)."""

    compiled: Any
    request: Any
    names: list  # [(ONNX input name, numpy dtype)] in the compiled model's input order
    outputs: list  # compiled-model output ports, in the ONNX graph's output order
    config: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # rt_info["edgepack"] of the artifact

    artifact: str = ""

    def _inputs(self, feeds: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
        inputs = {}
        for i, (name, dtype) in enumerate(self.names):
            if name not in feeds:
                raise SessionError(f"openvino: no value for input {name!r}; got {', '.join(feeds) or 'nothing'}")
            inputs[i] = np.ascontiguousarray(feeds[name], dtype=dtype)
        return inputs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(self._inputs(feeds), share_inputs=True)
        return [result[port] for port in self.outputs]  # copies (share_outputs=False)

    def op_profile(self, feeds: list[dict[str, np.ndarray]], runs: int) -> list[dict]:
        """Per-layer times from OpenVINO's performance counters: the same IR compiled a second
        time with PERF_COUNT on (the timed model stays without it), one untimed inference, then
        `runs` inferences whose counters (the last inference's, read after each) are summed.
        Layers fused away (status NOT_RUN / OPTIMIZED_OUT) are left out; `exec_type` names the
        kernel that ran (e.g. jit_avx512_FP32), which tells which precision really executed."""
        compiled = core().compile_model(core().read_model(self.artifact), DEVICE, {**self.config, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        request.infer(self._inputs(feeds[0]))
        ops: dict[str, dict] = {}
        for i in range(runs):
            request.infer(self._inputs(feeds[i % len(feeds)]))
            for info in request.profiling_info:
                if info.status != info.Status.EXECUTED:
                    continue
                op = ops.setdefault(info.node_name, {"type": info.node_type, "exec_type": info.exec_type,
                                                     "us": 0.0, "calls": 0})
                op["us"] += info.real_time.total_seconds() * 1e6
                op["calls"] += 1
        n = max(1, runs)
        return [{"op": name, "type": v["type"], "exec_type": v["exec_type"], "ms": v["us"] / 1e3 / n,
                 "calls": v["calls"] / n} for name, v in ops.items()]

    def inputs(self) -> list[dict]:
        return [{"name": name, "shape": [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()],
                 "dtype": dtype.name} for port, (name, dtype) in zip(self.compiled.inputs, self.names)]


def _config(meta: dict, threads: int, perf_count: bool) -> dict:
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if meta.get("inference_precision_hint"):
        config["INFERENCE_PRECISION_HINT"] = meta["inference_precision_hint"]
    if meta.get("runtime_options"):
        config.update(json.loads(meta["runtime_options"]))
    if perf_count:
        config["PERF_COUNT"] = True
    return config


def _np_dtype(ov_type) -> np.dtype:
    try:
        return np.dtype(ov_type.to_dtype())
    except Exception:
        return np.dtype(np.float32)


def _ports(compiled, meta: dict, path: str) -> tuple[list, list]:
    """(input names and dtypes, output ports) in the ONNX graph's terms and order."""
    outputs = list(compiled.outputs)
    order = json.loads(meta["onnx_outputs"]) if meta.get("onnx_outputs") else []
    if order:
        by_name = {n: port for port in compiled.outputs for n in port.get_names()}
        missing = [n for n in order if n not in by_name]
        if missing:
            raise SessionError(f"{path}: outputs {missing} of the ONNX graph are not in the IR")
        outputs = [by_name[n] for n in order]
    onnx_inputs = set(json.loads(meta["onnx_inputs"])) if meta.get("onnx_inputs") else set()
    names = []
    for port in compiled.inputs:
        found = sorted(port.get_names() & onnx_inputs) or [port.get_any_name()]
        names.append((found[0], _np_dtype(port.get_element_type())))
    return names, outputs


def open_session(artifact: str, threads: int, perf_count: bool = False) -> Session:
    """perf_count: collect per-layer profiling (describe() reads what really executed)."""
    if not Path(artifact).is_file():
        raise SessionError(f"{artifact}: no such file")
    if threads < 1:
        raise SessionError(f"openvino: threads must be >= 1, got {threads}")
    try:
        ov_model = core().read_model(str(artifact))
    except Exception as e:
        raise SessionError(f"{artifact}: OpenVINO cannot read it: {_first_line(e)}") from None
    meta = artifact_meta(ov_model)
    config = _config(meta, threads, perf_count)
    try:
        compiled = core().compile_model(ov_model, DEVICE, config)
    except Exception as e:
        raise SessionError(f"{artifact}: OpenVINO cannot compile it for {DEVICE}: {reason(str(e))}") from None
    names, outputs = _ports(compiled, meta, artifact)
    return Session(compiled, compiled.create_infer_request(), names, outputs, config, meta, str(artifact))
