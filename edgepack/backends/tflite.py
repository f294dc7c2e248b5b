"""TFLite (LiteRT): ONNX -> .tflite via onnx2tf + the TFLite converter; run with ai_edge_litert.

Artifact: `model.tflite` plus `model.io.json`, the sidecar that maps ONNX I/O to the TFLite
tensors. onnx2tf moves channels last (NCHW -> NHWC) without stray transposes, so the artifact's
I/O is NHWC where the ONNX graph was NCHW, and full-integer models have int8/uint8 I/O. `run()`
hides both: it takes ONNX-layout float feeds keyed by ONNX input names and returns ONNX-layout
float outputs in ONNX order (quantizing and dequantizing with the tensors' scale/zero-point), so
parity compares like with like. That mapping lives in one place, the session module
(backends/sessions/tflite_session.py), which devices copy to run the artifact elsewhere.

INT8 here is the TFLite converter's own post-training quantization (per-channel symmetric int8
weights, asymmetric int8 activations, min/max calibration on the caller's data), not edgepack's
QDQ graph: `consumes_qdq = False`. Conversion runs in a child process in a scratch folder
(`tflite_convert.py`); only model.tflite and model.io.json land in the output folder.

describe() lists the .tflite's ops and reports, against the target's runtime entry (recorded
in the sidecar at emit time, or a profile passed in), the ops its accelerator would not run:
TFLite ops whose ONNX counterparts are missing from `supported_ops`, and on full-integer
targets (integer `io_dtype`) every op that still computes in float.

Install: `pip install 'edgepack[tflite]'`, then `pip install --no-deps onnx2tf==1.29.24` plus
its small dependencies (its metadata pins numpy 1.26 / onnx 1.19 / tensorflow 2.19; see
shared/TFLITE.md). A .tflite without a sidecar (made elsewhere) loads with its own tensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from edgepack.backends.base import Backend
from edgepack.errors import EdgepackError
from edgepack.ir.spec import graph_inputs

SIDECAR_SUFFIX = ".io.json"  # the session module (sessions/tflite_session.py) reads the same name
MAX_CALIB_SAMPLES = 500  # the TFLite docs suggest 100-500 representative samples
CONVERT_TIMEOUT_S = 3600

# TFLite builtin op -> the ONNX op types it comes from (the profile's vocabulary). An op missing
# here has no ONNX counterpart the profile could list, so it is reported as a fallback.
TFLITE_TO_ONNX: dict[str, tuple[str, ...]] = {
    "CONV_2D": ("Conv",), "DEPTHWISE_CONV_2D": ("Conv",), "CONV_3D": ("Conv",),
    "TRANSPOSE_CONV": ("ConvTranspose",), "FULLY_CONNECTED": ("Gemm", "MatMul"),
    "BATCH_MATMUL": ("MatMul",), "ADD": ("Add",), "SUB": ("Sub",), "MUL": ("Mul",), "DIV": ("Div",),
    "RELU": ("Relu",), "RELU6": ("Clip",), "RELU_N1_TO_1": ("Clip",), "RELU_0_TO_1": ("Clip",),
    "PRELU": ("PRelu",), "LEAKY_RELU": ("LeakyRelu",), "LOGISTIC": ("Sigmoid",), "TANH": ("Tanh",),
    "HARD_SWISH": ("HardSwish",), "GELU": ("Gelu",), "ELU": ("Elu",),
    "AVERAGE_POOL_2D": ("AveragePool",), "MAX_POOL_2D": ("MaxPool",),
    "MEAN": ("ReduceMean", "GlobalAveragePool"), "REDUCE_MAX": ("ReduceMax", "GlobalMaxPool"),
    "REDUCE_MIN": ("ReduceMin",), "SUM": ("ReduceSum",), "REDUCE_PROD": ("ReduceProd",),
    "MAXIMUM": ("Max",), "MINIMUM": ("Min",), "CONCATENATION": ("Concat",),
    "RESHAPE": ("Reshape", "Flatten"), "SQUEEZE": ("Squeeze",), "EXPAND_DIMS": ("Unsqueeze",),
    "TRANSPOSE": ("Transpose",), "SOFTMAX": ("Softmax",), "LOG_SOFTMAX": ("LogSoftmax",),
    "RESIZE_BILINEAR": ("Resize",), "RESIZE_NEAREST_NEIGHBOR": ("Resize",),
    "PAD": ("Pad",), "PADV2": ("Pad",), "MIRROR_PAD": ("Pad",),
    "SLICE": ("Slice",), "STRIDED_SLICE": ("Slice",), "SPLIT": ("Split",), "SPLIT_V": ("Split",),
    "DEPTH_TO_SPACE": ("DepthToSpace",), "SPACE_TO_DEPTH": ("SpaceToDepth",),
    "QUANTIZE": ("QuantizeLinear",), "DEQUANTIZE": ("DequantizeLinear",),
    "GATHER": ("Gather",), "GATHER_ND": ("GatherND",), "EXP": ("Exp",), "LOG": ("Log",),
    "POW": ("Pow",), "SQRT": ("Sqrt",), "RSQRT": ("Sqrt", "Div"), "SQUARE": ("Mul",),
    "SQUARED_DIFFERENCE": ("Sub", "Mul"), "ABS": ("Abs",), "NEG": ("Neg",), "CAST": ("Cast",),
    "SHAPE": ("Shape",), "TILE": ("Tile",), "BROADCAST_TO": ("Expand",), "ARG_MAX": ("ArgMax",),
    "ARG_MIN": ("ArgMin",), "FLOOR": ("Floor",), "CEIL": ("Ceil",), "ROUND": ("Round",),
    "SIN": ("Sin",), "COS": ("Cos",), "WHERE": ("Where",), "SELECT": ("Where",),
    "SELECT_V2": ("Where",), "EQUAL": ("Equal",), "LESS": ("Less",), "GREATER": ("Greater",),
    "PACK": ("Concat", "Unsqueeze"), "UNPACK": ("Split", "Squeeze"), "L2_NORMALIZATION": ("LpNormalization",),
    "LOCAL_RESPONSE_NORMALIZATION": ("LRN",), "ERF": ("Erf",), "SIGN": ("Sign",),
}
# Ops that only move or reinterpret int8 data at the model's edges, not float compute.
_IO_CONVERSIONS = {"QUANTIZE", "DEQUANTIZE"}
_ONNX_TO_TFLITE_KEEP_FLOAT = {"Softmax": "SOFTMAX", "LogSoftmax": "LOG_SOFTMAX", "Sigmoid": "LOGISTIC",
                              "Tanh": "TANH", "Gelu": "GELU", "HardSwish": "HARD_SWISH"}


class TfliteBackend(Backend):
    name = "tflite"
    consumes_qdq = False
    session_module = "tflite_session"

    # ----------------------------------------------------------------- emit

    def emit(self, model: onnx.ModelProto, outdir: Path, profile, precision: str = "fp32",
             calib=None) -> Path:
        if precision not in ("fp32", "fp16", "int8"):
            raise EdgepackError(f"tflite: unknown precision {precision!r}; use fp32, fp16 or int8")
        _check_converter_installed()
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        quant = profile.quantization
        specs = graph_inputs(model)
        job = {"precision": precision, "io_dtype": quant.io_dtype, "per_channel": quant.weights.per_channel,
               "keep_float_ops": [], "calib": None}
        notes = []
        if precision == "int8":
            if calib is None:
                raise EdgepackError("tflite: int8 needs calibration data (pass --calib DATA): the TFLite "
                                    "converter calibrates activation ranges on it")
            if quant.activations.dtype != "int8":
                notes.append(f"profile asks for {quant.activations.dtype} activations; TFLite quantizes "
                             "activations to int8 (asymmetric)")
            if quant.io_dtype == "float32":
                present = {n.op_type for n in model.graph.node}
                for op in (o for o in quant.keep_float_op_types if o in present):
                    if op in _ONNX_TO_TFLITE_KEEP_FLOAT:
                        job["keep_float_ops"].append(_ONNX_TO_TFLITE_KEEP_FLOAT[op])
                    else:
                        notes.append(f"keep_float_op_types: {op} has no single TFLite op to keep in "
                                     "float; it is quantized")
        with tempfile.TemporaryDirectory(prefix="edgepack-tflite-") as tmp:
            tmp = Path(tmp)
            work = tmp / "work"
            work.mkdir()
            onnx_path = tmp / "model.onnx"
            onnx.save(model, str(onnx_path))
            if calib is not None:
                data = calib.check_against(specs) if specs else calib
                data = data.take(MAX_CALIB_SAMPLES)
                np.savez(tmp / "calib.npz", **{k: np.ascontiguousarray(v) for k, v in data.inputs.items()})
                job["calib"] = str(tmp / "calib.npz")
            job.update(onnx=str(onnx_path), out=str(tmp))
            (tmp / "job.json").write_text(json.dumps(job))
            log = tmp / "convert.log"
            root = str(Path(__file__).resolve().parents[2])  # edgepack importable even when not installed
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
                   "PYTHONWARNINGS": "ignore",
                   "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
            try:
                with open(log, "w") as logf:
                    proc = subprocess.run([sys.executable, "-m", "edgepack.backends.tflite_convert",
                                           str(tmp / "job.json")], cwd=work, env=env, stdout=logf,
                                          stderr=subprocess.STDOUT, timeout=CONVERT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise EdgepackError(f"tflite: conversion did not finish within {CONVERT_TIMEOUT_S} s") from None
            if proc.returncode != 0 or not (tmp / "model.tflite").is_file():
                raise EdgepackError(_failure_line(tmp, log, model, proc.returncode))
            sidecar = json.loads((tmp / "model.io.json").read_text())
            ops = Counter(n.op_type for n in model.graph.node)
            runtime = _runtime_or_none(profile)
            sidecar.update(
                notes=[*sidecar.get("notes", []), *notes],
                onnx_ops=dict(sorted(ops.items())),
                target={
                    "name": profile.name,
                    "delegate": runtime.delegate if runtime else None,
                    "supported_ops": runtime.supported_ops if runtime else "all",
                    "full_integer": quant.io_dtype != "float32",
                },
            )
            path = outdir / "model.tflite"
            shutil.copyfile(tmp / "model.tflite", path)
            (outdir / f"model{SIDECAR_SUFFIX}").write_text(json.dumps(sidecar, indent=2))
        return path

    # ----------------------------------------------------------------- run

    def companions(self, artifact: Path) -> list[Path]:
        return [Path(artifact).with_name(Path(artifact).stem + SIDECAR_SUFFIX)]

    # ----------------------------------------------------------------- describe

    def deployment(self, artifact: Path) -> dict:
        """The .tflite's ops, the target's delegate and the ops it would hand back to TFLite's
        builtin kernels (fallbacks), as describe() finds them."""
        info = describe_tflite(Path(artifact))
        target = info.get("target") or {}
        return {"arch": "any", "minimum_version": None,
                "minimum_reason": "no ai-edge-litert release older than the tested one was checked against "
                                  "this model's op versions",
                "ops": {"format": "tflite", "ops": info["ops"], "delegate": target.get("delegate"),
                        "delegate_fallbacks": target.get("fallback_ops", {}), "float_ops": info["float_ops"]}}

    def describe(self, artifact: Path, profile=None) -> dict:
        """Ops of the .tflite and what the target's accelerator would not run.

        `profile` defaults to the target recorded at emit time (in model.io.json).
        """
        return describe_tflite(Path(artifact), profile)


# --------------------------------------------------------------------------- helpers


def _check_converter_installed() -> None:
    import importlib.util

    missing = [m for m in ("onnx2tf", "tensorflow", "tf_keras", "onnx_graphsurgeon", "ai_edge_litert")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgepackError(
            f"tflite: the converter is not installed ({', '.join(missing)}): pip install 'edgepack[tflite]' "
            "and then pip install --no-deps onnx2tf==1.29.24 (its metadata pins an old numpy/onnx)")


def _runtime_or_none(profile):
    for r in getattr(profile, "runtimes", []):
        if r.backend == "tflite":
            return r
    return None


def _failure_line(tmp: Path, log: Path, model: onnx.ModelProto, rc: int) -> str:
    """One line naming the ONNX op and node when the converter's output says which."""
    info = {}
    if (tmp / "error.json").is_file():
        info = json.loads((tmp / "error.json").read_text())
    text = log.read_text(errors="replace") if log.is_file() else ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    op, node = info.get("op_type"), info.get("node")
    if not op:
        m = re.search(r"(\w+) OP is not yet implemented", text)
        if m:
            op = m.group(1)
    if not node:
        found = re.findall(r"onnx_op_name: (\S+)", text)
        if found:
            node = re.sub("^wa/", "/", found[-1])
    if node and not op:
        op = next((n.op_type for n in model.graph.node if n.name == node), None)
    if op and not node:
        node = next((n.name for n in model.graph.node if n.op_type == op), None)
    if rc < 0 and not info:
        message = f"the converter process crashed (signal {-rc}); last output: {_last_error_line(text) or 'none'}"
    else:
        message = info.get("message") or _last_error_line(text) or f"converter exited with code {rc}"
    where = f" {op} node {node!r}" if op and node else (f" {op}" if op else "")
    stage = info.get("stage", "onnx2tf")
    if stage == "tflite":
        return f"tflite: the TFLite converter failed on{where or ' the graph'}: {message}"
    if stage == "check":
        near = f" (near{where})" if where else ""
        return f"tflite: the converted model does not run in LiteRT{near}: {message}"
    return f"tflite: onnx2tf cannot convert{where}: {message}"


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^\w*(Error|Exception)\b", ln) or ln.startswith("ERROR:"):
            return ln[:240]
    return lines[-1][:240] if lines else ""


def _read_sidecar(artifact: Path) -> dict:
    from edgepack.backends.sessions.tflite_session import read_io

    return read_io(artifact)


def describe_tflite(artifact: Path, profile=None) -> dict:
    """Op histogram, I/O dtypes, float ops left in an integer model, and the accelerator's fallbacks."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    artifact = Path(artifact)
    io = _read_sidecar(artifact)
    # Without the default XNNPACK delegate: list the model's own ops, not a delegated plan.
    it = Interpreter(model_path=str(artifact),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()
    hist = Counter(o["op_name"] for o in ops)

    integer_model = io.get("precision") == "int8"
    float_ops: Counter = Counter()
    per_channel = None
    for o in ops:
        name = o["op_name"]
        types = [np.dtype(t) for t in list(o.get("operand_types", [])) + list(o.get("result_types", []))]
        if integer_model and name not in _IO_CONVERSIONS and any(t.kind == "f" for t in types):
            float_ops[name] += 1
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(o["inputs"]) > 1:
            w = tensors.get(int(o["inputs"][1]))
            if w is not None and np.dtype(w["dtype"]).kind == "i":
                scales = w["quantization_parameters"]["scales"]
                per_channel = (per_channel is not False) and len(scales) > 1
    # QUANTIZE/DEQUANTIZE between float and int inside the graph mean float islands too
    inner_q = sum(1 for o in ops if o["op_name"] in _IO_CONVERSIONS
                  and not _touches_io(o, it))
    target = _target_info(io, profile)
    fallback, reasons = {}, {}
    if target is not None:
        supported = target["supported_ops"]
        for op, count in sorted(hist.items()):
            onnx_names = TFLITE_TO_ONNX.get(op)
            if supported != "all":
                if not onnx_names:
                    fallback[op], reasons[op] = count, "no ONNX counterpart in the profile's op list"
                    continue
                if not any(n in supported for n in onnx_names):
                    fallback[op] = count
                    reasons[op] = f"{'/'.join(onnx_names)} not in the profile's supported_ops"
                    continue
            if target["full_integer"]:
                n_float = float_ops.get(op, 0) if integer_model else (
                    0 if op in _IO_CONVERSIONS else count)
                if n_float:
                    fallback[op] = n_float
                    reasons[op] = "computes in float; the accelerator runs integer only"
    onnx_ops = io.get("onnx_ops") or {}
    result = {
        "converter": io.get("converter"),
        "precision": io.get("precision"),
        "size_bytes": artifact.stat().st_size,
        "op_count": len(ops),
        "ops": dict(sorted(hist.items())),
        "inputs": [_io_entry(i) for i in io["inputs"]],
        "outputs": [_io_entry(o) for o in io["outputs"]],
        "weights_per_channel": per_channel,
        "float_ops": dict(sorted(float_ops.items())),
        "inner_quantize_ops": inner_q,
        "notes": list(io.get("notes", [])),
    }
    if target is not None:
        unsupported_onnx = ([] if target["supported_ops"] == "all"
                            else sorted(set(onnx_ops) - set(target["supported_ops"])))
        result["target"] = {
            "name": target["name"],
            "delegate": target["delegate"],
            "full_integer": target["full_integer"],
            "unsupported_onnx_ops": unsupported_onnx,
            "fallback_ops": fallback,
            "fallback_reasons": reasons,
            "fallback_op_count": sum(fallback.values()),
            "runs_all_on_delegate": not fallback and not unsupported_onnx,
        }
        if integer_model and float_ops:
            result["notes"].append(f"float ops left in the integer model: "
                                   f"{', '.join(f'{k} x{v}' for k, v in sorted(float_ops.items()))}")
    return result


def _touches_io(op: dict, it) -> bool:
    io_idx = {d["index"] for d in it.get_input_details()} | {d["index"] for d in it.get_output_details()}
    return bool(set(int(i) for i in op["inputs"]) & io_idx or set(int(i) for i in op["outputs"]) & io_idx)


def _target_info(io: dict, profile) -> dict | None:
    if profile is not None:
        runtime = _runtime_or_none(profile)
        return {"name": profile.name, "delegate": runtime.delegate if runtime else None,
                "supported_ops": runtime.supported_ops if runtime else "all",
                "full_integer": profile.quantization.io_dtype != "float32"}
    return io.get("target")


def _io_entry(e: dict) -> dict:
    return {"name": e["name"], "onnx_shape": e["onnx_shape"], "tflite_name": e["tflite_name"],
            "tflite_shape": e["tflite_shape"], "dtype": e["tflite_dtype"], "perm": e["perm"],
            **({"scale": e["quant"]["scale"], "zero_point": e["quant"]["zero_point"]} if e.get("quant") else {})}
