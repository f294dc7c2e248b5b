"""TFLite (LiteRT) session. Imports nothing from edgepack.

The one place that maps ONNX I/O to the .tflite's tensors: the `model.io.json` sidecar beside
the artifact names each ONNX input/output's TFLite tensor, the permutation between the ONNX
layout (NCHW) and the artifact's (NHWC), and the scale/zero-point of integer I/O. `run()` takes
ONNX-layout float feeds keyed by ONNX input names and returns ONNX-layout float outputs in ONNX
order, so parity compares like with like wherever the artifact runs. A .tflite without a
sidecar (made elsewhere) runs with its own tensors. The converter (tflite_convert._map_io)
uses `quantize`/`dequantize` from here too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

SIDECAR_SUFFIX = ".io.json"
# LiteRT's Python Interpreter (ai-edge-litert 2.3) has no op profiler: its per-op times come from
# the benchmark_model binary (--enable_op_profiling=true), which edgepack.bench.benchmark_model parses
OP_PROFILE_NOTE = ("LiteRT's Python interpreter offers no per-op profiler; run LiteRT's benchmark_model "
                   "with --enable_op_profiling=true for per-op times")


class SessionError(Exception):
    """A failure the user can fix (bad file, wrong inputs), in one line."""


def quantize(x: np.ndarray, q: dict, dtype) -> np.ndarray:
    """Float -> the integer tensor type with scale/zero-point `q` (rounded half to even, clipped)."""
    info = np.iinfo(np.dtype(dtype))
    x = np.rint(np.asarray(x).astype(np.float32) / np.float32(q["scale"])) + q["zero_point"]
    return np.clip(x, info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, q: dict) -> np.ndarray:
    return (np.asarray(y).astype(np.float32) - np.float32(q["zero_point"])) * np.float32(q["scale"])


def quant_of(detail: dict) -> dict | None:
    """An interpreter tensor's scale/zero-point when its values are quantized integers."""
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return {"scale": float(scale), "zero_point": int(zero_point)}
    return None


def read_io(artifact: str | Path) -> dict:
    """The artifact's ONNX <-> TFLite I/O map: its sidecar, or the .tflite's own tensors."""
    artifact = Path(artifact)
    side = artifact.with_name(artifact.stem + SIDECAR_SUFFIX)
    if side.is_file():
        return json.loads(side.read_text())
    return _identity_io(artifact)


def _identity_io(artifact: Path) -> dict:
    """A .tflite without a sidecar (not made by edgepack): its own tensors, no layout change."""
    it = Interpreter(model_path=str(artifact))

    def entry(d):
        q = quant_of(d)
        shape = [int(x) for x in d["shape"]]
        return {"name": d["name"], "onnx_shape": shape, "tflite_name": d["name"], "tflite_shape": shape,
                "onnx_dtype": "float32" if q else np.dtype(d["dtype"]).name,
                "tflite_dtype": np.dtype(d["dtype"]).name, "perm": list(range(len(shape))), "quant": q}

    return {"format": 1, "precision": "unknown", "inputs": [entry(d) for d in it.get_input_details()],
            "outputs": [entry(d) for d in it.get_output_details()], "notes": ["no model.io.json sidecar"]}


class Session:
    """An interpreter plus the ONNX <-> TFLite I/O mapping."""

    def __init__(self, interp: Interpreter, io: dict, artifact: str):
        self.interp, self.io, self.artifact = interp, io, artifact
        ins = self._details(interp.get_input_details(), io["inputs"], "input")
        outs = self._details(interp.get_output_details(), io["outputs"], "output")
        self._in = [(spec["name"], d["index"], np.dtype(d["dtype"]), spec["perm"], spec.get("quant"),
                     tuple(int(x) for x in d["shape"])) for spec, d in ins]
        self._out = [(d["index"], spec["perm"], spec.get("quant")) for spec, d in outs]

    def _details(self, details: list[dict], specs: list[dict], kind: str) -> list[tuple[dict, dict]]:
        """(sidecar spec, interpreter tensor details) for each tensor the sidecar names, in its order."""
        by_name = {d["name"]: d for d in details}
        missing = [s["tflite_name"] for s in specs if s["tflite_name"] not in by_name]
        if missing:
            raise SessionError(f"{self.artifact}: {kind} tensor {missing[0]!r} named in the sidecar is not "
                               "in the model")
        return [(spec, by_name[spec["tflite_name"]]) for spec in specs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, index, dtype, perm, q, shape in self._in:
            if name not in feeds:
                raise SessionError(f"missing input {name!r}; the model takes {[i[0] for i in self._in]}")
            x = np.asarray(feeds[name])
            if x.ndim == len(perm):
                x = np.transpose(x, perm)
            if q:
                x = quantize(x, q, dtype)
            x = np.ascontiguousarray(x, dtype=dtype)
            self.interp.set_tensor(index, x if x.shape == shape else x.reshape(shape))
        self.interp.invoke()
        outs = []
        for index, perm, q in self._out:
            y = self.interp.get_tensor(index)
            if q:
                y = dequantize(y, q)
            if y.ndim == len(perm):
                y = np.transpose(y, perm)
            outs.append(np.ascontiguousarray(y))
        return outs

    def inputs(self) -> list[dict]:
        return [{"name": i["name"], "shape": list(i["onnx_shape"]), "dtype": i.get("onnx_dtype", "float32")}
                for i in self.io["inputs"]]


def open_session(artifact: str, threads: int) -> Session:
    interp = Interpreter(model_path=str(artifact), num_threads=max(1, int(threads)))
    interp.allocate_tensors()
    return Session(interp, read_io(artifact), str(artifact))
