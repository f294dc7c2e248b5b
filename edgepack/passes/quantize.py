"""Static INT8 (QDQ) with onnxruntime.quantization, parameterised entirely by the target profile.

edgepack adds only what ORT lacks: a profile -> quantizer-settings mapping, an ignored scope
users can extend by name, pattern or layer kind, and a calibration cache so the accuracy and
speed searches re-quantize without re-calibrating.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgepack.data import Dataset
from edgepack.errors import EdgepackError, close_names, first_line
from edgepack.ir.stats import model_stats
from edgepack.logutil import quiet
from edgepack.passes.ladder import RUNGS, Ladder

# layer kinds beyond ONNX op types, so scopes and measurements can tell depthwise from dense conv
DEPTHWISE = "DepthwiseConv"
# a calibrated |range| beyond this cannot be represented usefully in 8 bits
OUTLIER_RANGE = 1e4


def layer_kind(node: onnx.NodeProto, shapes: dict[str, list]) -> str:
    """The op type, refined to DepthwiseConv for grouped convs with one input channel per group."""
    if node.op_type == "Conv":
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = shapes.get(node.input[1])
        if group > 1 and w is not None and len(w) > 1 and w[1] == 1:
            return DEPTHWISE
    return node.op_type


def initializer_shapes(model: onnx.ModelProto) -> dict[str, list]:
    return {t.name: list(t.dims) for t in model.graph.initializer}


@dataclass
class IgnoredScope:
    """Nodes to keep in float: exact names, regular expressions over names, or layer kinds."""

    names: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # ONNX op types or DepthwiseConv

    @classmethod
    def parse(cls, items: list[str] | None) -> "IgnoredScope":
        """CLI form: `name:conv1`, `pattern:features\\.1[0-9]`, `type:DepthwiseConv` (bare = name)."""
        scope = cls()
        for item in items or []:
            kind, sep, value = item.partition(":")
            if not sep:
                kind, value = "name", item
            bucket = {"name": scope.names, "pattern": scope.patterns, "type": scope.kinds}.get(kind)
            if bucket is None or not value:
                raise EdgepackError(f"--keep-float {item!r}: expected name:NODE, pattern:REGEX or type:OP")
            bucket.append(value)
        return scope

    def resolve(self, model: onnx.ModelProto, strict: bool = True) -> list[str]:
        """Node names the scope selects. strict (a user's scope): a name, pattern or kind that
        selects nothing is an error, since it is most likely misspelt; a profile's float op
        types need not occur in every model."""
        nodes = list(model.graph.node)
        all_names = {n.name for n in nodes}
        for name in self.names:
            if name not in all_names:
                raise EdgepackError(f"keep-float node {name!r} is not in the graph{close_names(name, all_names)}")
        selected = set(self.names)
        for pattern in self.patterns:
            try:
                rx = re.compile(pattern)
            except re.error as e:
                raise EdgepackError(f"keep-float pattern {pattern!r}: {e}")
            hits = {n.name for n in nodes if rx.search(n.name)}
            if not hits:
                raise EdgepackError(f"keep-float pattern {pattern!r} matches no node")
            selected |= hits
        if self.kinds:
            shapes = initializer_shapes(model)
            kind_of = {n.name: {layer_kind(n, shapes), n.op_type} for n in nodes}
            for kind in self.kinds:
                hits = {name for name, kinds in kind_of.items() if kind in kinds}
                if strict and not hits:
                    present = set().union(*kind_of.values())
                    raise EdgepackError(f"keep-float type {kind!r} matches no node{close_names(kind, present)}")
                selected |= hits
        return sorted(selected)


def _quiet():
    """ORT's quantizers warn (through the root logger's functions) about pre-processing that
    canonicalize already did: those records only, not the root logger, are silenced."""
    return quiet("onnxruntime.quantization")


class CalibrationReader:
    """onnxruntime CalibrationDataReader over an edgepack Dataset (batches of the graph's size)."""

    def __init__(self, data: Dataset, batch: int):
        self.data, self.batch = data, batch
        self.rewind()

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.data.batches(self.batch))

    def __len__(self):
        return len(self.data) // self.batch


def ort_settings(profile) -> dict:
    """The target profile's quantization scheme in onnxruntime.quantization's terms."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    q = profile.quantization
    if q.activations.dtype == "int8" and q.weights.dtype == "uint8":
        raise EdgepackError(f"target {profile.name} asks for int8 activations with uint8 weights: "
                            "ONNX Runtime has no kernels for that scheme (use int8 or uint8 weights with uint8 "
                            "activations, or int8 for both)")
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    return {
        "quant_format": {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[q.format],
        "per_channel": q.weights.per_channel,
        "reduce_range": q.reduce_range,
        "weight_type": qtype[q.weights.dtype],
        "activation_type": qtype[q.activations.dtype],
        "calibrate_method": {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                             "percentile": CalibrationMethod.Percentile}[q.calibration],
        "op_types_to_quantize": list(q.op_types),
        "extra_options": {"WeightSymmetric": q.weights.symmetric,
                          "ActivationSymmetric": q.activations.symmetric},
    }


class Quantizer:
    """Quantizes one float model many times (different float scopes) from one calibration."""

    def __init__(self, model: onnx.ModelProto, calib: Dataset, profile, batch: int = 1, rungs=RUNGS):
        if calib is None or len(calib) == 0:
            raise EdgepackError("INT8 needs calibration data: pass --calib DATA (a few hundred samples)")
        if len(calib) < batch:
            raise EdgepackError(f"{calib.source}: {len(calib)} samples, fewer than one batch of {batch}")
        self.model, self.calib, self.profile, self.batch = model, calib, profile, batch
        self.settings = ort_settings(profile)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgepack-quant-")
        self._cache = Path(self._tmp.name) / "calibration.json"
        # quantize_static rewrites a ModelProto it is given (moves weights to external data),
        # so it always gets this file instead
        self._float_path = Path(self._tmp.name) / "model.fp32.onnx"
        onnx.save(model, str(self._float_path))
        self.base_scope = IgnoredScope(kinds=list(profile.quantization.keep_float_op_types))
        self.ladder = Ladder(self.settings, self.quantizable, rungs)

    def close(self) -> None:
        """Remove the temporary folder now (a finalizer would, but only when collected)."""
        self._tmp.cleanup()

    def __enter__(self) -> "Quantizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def quantize(self, keep_float: list[str] = ()) -> onnx.ModelProto:
        """QDQ model with the nodes in `keep_float` (plus the profile's float op types) left in float.
        Where onnxruntime's quantizer raises, the fallback ladder (passes.ladder) finds another way;
        `self.ladder` says which rung made the graph and why the ones before it failed."""
        return self.ladder.quantize(self._static, list(keep_float))

    def _static(self, settings: dict, keep_float: list[str]) -> onnx.ModelProto:
        """One quantize_static run. Every file it writes is in this quantizer's temporary folder or
        in onnxruntime's own (tempfile, removed as it returns or raises). onnxruntime's one writer
        into the current folder is symbolic shape inference (onnxruntime.tools.symbolic_shape_infer
        saves `sym_shape_infer_temp.onnx` + `<uuid>.data` to a relative path when inference is
        incomplete), reached through quant_pre_process: edgepack never calls it, and a test keeps
        it that way, since only os.chdir (process-global) could redirect it."""
        from onnxruntime.quantization import quantize_static

        out = Path(self._tmp.name) / "model.int8.onnx"
        try:
            with _quiet():
                quantize_static(str(self._float_path), str(out), CalibrationReader(self.calib, self.batch),
                                nodes_to_exclude=self.excluded(keep_float),
                                calibration_cache_path=str(self._cache), **settings)
        except EdgepackError:
            raise
        except Exception as e:
            raise EdgepackError(f"INT8 quantization failed: {type(e).__name__}: {first_line(e)}")
        return onnx.load(str(out))

    def quantizable(self, keep_float: list[str]) -> list[str]:
        """Named nodes, in graph order, that the quantizer would take with `keep_float` float."""
        skip, ops = set(self.excluded(keep_float)), set(self.settings["op_types_to_quantize"])
        return [n.name for n in self.model.graph.node if n.name and n.name not in skip and n.op_type in ops]

    def excluded(self, keep_float) -> list[str]:
        """`keep_float` plus the nodes of the profile's float op types."""
        return sorted(set(keep_float) | set(self.base_scope.resolve(self.model, strict=False)))

    def quantize_dynamic(self, keep_float: list[str] = ()) -> onnx.ModelProto | None:
        """Weights INT8 ahead of time, activations quantized per inference (ORT's
        DynamicQuantizeLinear + MatMulInteger): the format transformers keep accuracy with,
        since their activation ranges vary per input. None unless MatMul/Gemm do most MACs.
        `keep_float` as for `quantize`."""
        from onnxruntime.quantization import quantize_dynamic

        ops = [t for t in ("MatMul", "Gemm") if t in self.settings["op_types_to_quantize"]]
        by_op = model_stats(self.model)["macs_by_op"]
        if sum(by_op.get(t, 0) for t in ops) < 0.5 * max(sum(by_op.values()), 1):
            return None  # convolution nets: dynamic would leave most of the work in float
        out = Path(self._tmp.name) / "model.dynamic.onnx"
        try:
            with _quiet():
                quantize_dynamic(str(self._float_path), str(out), op_types_to_quantize=ops,
                                 # its dynamic path rewrites Gemm X into MatMul "X_MatMul" + Add
                                 # before it reads nodes_to_exclude (onnxruntime 1.32), so a Gemm
                                 # is excluded under both names
                                 nodes_to_exclude=[m for n in self.excluded(keep_float) for m in (n, f"{n}_MatMul")],
                                 per_channel=self.settings["per_channel"],
                                 reduce_range=self.settings["reduce_range"], weight_type=self.settings["weight_type"])
        except Exception as e:
            raise EdgepackError(f"dynamic INT8 quantization failed: {type(e).__name__}: {first_line(e)}")
        return onnx.load(str(out))

    def outlier_nodes(self, limit: float = OUTLIER_RANGE) -> dict[str, str]:
        """Nodes touching a tensor whose calibrated range no 8-bit grid can hold (e.g. attention
        masks filled with -1e9 or finfo.min): {node: reason}. Needs one calibration run."""
        from onnxruntime.quantization.calibrate import load_tensors_data

        if not self._cache.exists():
            self.quantize()
        wide = {}
        for name, data in load_tensors_data(self._cache).data.items():
            lo, hi = float(np.min(data.range_value[0])), float(np.max(data.range_value[1]))
            if max(abs(lo), abs(hi)) > limit:
                wide[name] = (lo, hi)
        out = {}
        for n in self.model.graph.node:
            for t in [*n.input, *n.output]:
                if t in wide and n.op_type in self.settings["op_types_to_quantize"]:
                    out[n.name] = f"range: tensor {t} spans [{wide[t][0]:.3g}, {wide[t][1]:.3g}]"
        return out



def quantized_nodes(qmodel: onnx.ModelProto) -> set[str]:
    """Nodes whose weight or activation inputs come through DequantizeLinear (i.e. run in INT8)."""
    dq_outputs = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in qmodel.graph.node
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_outputs for i in n.input)}


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and compute with float32 I/O (ORT's converter keeps I/O types stable)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        return convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:
        raise EdgepackError(f"FP16 conversion failed: {first_line(e)}")


