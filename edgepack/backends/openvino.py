"""OpenVINO (CPU plugin): the artifact is an OpenVINO IR (`model.xml` + `model.bin`).

Precisions and what really runs on the CPU (see `describe()` for a given artifact):

* fp32: weights in FP32. OpenVINO's CPU plugin computes in BF16 by default wherever the CPU
  has AMX-BF16/AVX512-BF16 (Sapphire Rapids and later), which moved MobileNetV2's logits by up
  to 1.9 (top-1 changed on 4 of 60 photos) on such a Xeon; an fp32 artifact therefore records
  INFERENCE_PRECISION_HINT=f32 and `load()` applies it, so fp32 means FP32 arithmetic.
* fp16: weights stored in FP16 (half the size). The CPU decompresses them and computes in the
  device's default precision: BF16 on AMX/AVX512-BF16 CPUs, FP32 elsewhere.
* bf16: weights in FP32, computed in BF16 (INFERENCE_PRECISION_HINT=bf16): AVX512-BF16/AMX
  kernels, about half the memory traffic of FP32 on activations. edgepack builds it only where
  the CPU has those instructions (compiler.precision.check_bf16).
* int8: the QDQ ONNX graph (QuantizeLinear/DequantizeLinear) becomes FakeQuantize, which the CPU
  plugin runs as INT8 kernels (u8 activations x i8 weights; VNNI/AMX where present). Layers the
  quantizer left float run in FP32 (hint f32), as the profile's `keep_float_op_types` intend.
  `emit_nncf()` is the other INT8 route: NNCF post-training quantization (defaults) of the float
  graph on calibration data.

The settings `load()` needs (precision hint, ONNX output order, the CPU plugin properties of the
backend's OpenVinoOptions, i.e. a profile's `runtimes[].options`) travel inside the IR as rt_info
under "edgepack", so an artifact is self-describing wherever it is copied; loading and running
are backends/sessions/openvino_session.py.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from edgepack import interrupt
from edgepack.backends.base import Backend
from edgepack.backends.options import OpenVinoOptions
from edgepack.errors import EdgepackError, close_names, first_line
from edgepack.ir.spec import fixed_batch, graph_inputs
from edgepack.logutil import quiet

ARTIFACT = "model.xml"
DEVICE = "CPU"
RT_KEY = "edgepack"  # the session module (sessions/openvino_session.py) reads this rt_info section
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Inference precision each artifact precision asks for ("" = the device's default).
PRECISION_HINTS = {"fp32": "f32", "fp16": "", "bf16": "bf16", "int8": "f32"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_PROTOBUF_LIMIT = 2**31 - 1  # a serialized ModelProto cannot be larger

# runtimePrecision of a layer in the compiled (runtime) model -> the class it is counted in.
_PRECISION_CLASS = {"u8": "int8", "i8": "int8", "u4": "int4", "i4": "int4", "f32": "fp32",
                    "bf16": "bf16", "f16": "fp16", "i32": "int32", "i64": "int64"}
# Runtime-model layer types that are not computation (never counted).
_NOT_COMPUTE = {"Const", "Input", "Output", "Parameter", "Result"}


class OpenVinoBackend(Backend):
    name = "openvino"
    consumes_qdq = True
    times_int8_choice = True  # NNCF's QDQ graph, slow in ONNX Runtime, can be the fastest here
    controls_int8 = True  # emit_controlled: its own accuracy-controlled INT8 competes in its choice
    precisions = PRECISIONS
    options: OpenVinoOptions
    session_module = "openvino_session"

    # ------------------------------------------------------------------ emit

    def emit(self, model: onnx.ModelProto, outdir: Path, profile, precision: str = "fp32",
             calib=None) -> Path:
        """IR for `model` in `outdir`. int8 expects a QDQ graph; given a float graph and `calib`
        it quantizes with NNCF instead (see `emit_nncf`)."""
        if precision not in PRECISIONS:
            raise EdgepackError(f"openvino: unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        has_qdq = any(n.op_type in QDQ_OPS for n in model.graph.node)
        if precision == "int8" and not has_qdq:
            if calib is None:
                raise EdgepackError("openvino: int8 needs a QDQ graph (QuantizeLinear/DequantizeLinear) "
                                    "or calibration data for NNCF; the model has neither")
            return self.emit_nncf(model, outdir, profile, calib)
        ov_model = _convert(model)
        _annotate(ov_model, model, precision, int8_route="qdq" if has_qdq else "", profile=profile,
                  plugin_config=self._plugin_config())
        return _save(ov_model, Path(outdir), compress_to_fp16=(precision == "fp16"))

    def emit_nncf(self, model: onnx.ModelProto, outdir: Path, profile, calib,
                  subset_size: int = 300, **nncf_options) -> Path:
        """INT8 IR by NNCF post-training quantization of the float `model` (NNCF defaults:
        MinMax ranges on `subset_size` samples, per-channel symmetric weights, fast bias
        correction). `calib` is an edgepack Dataset or a list of feed dicts."""
        import nncf

        if any(n.op_type in QDQ_OPS for n in model.graph.node):
            raise EdgepackError("openvino: emit_nncf needs the float graph; this one is already quantized (QDQ)")

        def run(ov_model, feeds, subset):
            return nncf.quantize(ov_model, nncf.Dataset(feeds), subset_size=subset, **nncf_options)

        return self._nncf_int8(model, outdir, profile, calib, subset_size, "nncf", "NNCF quantization", run)

    def emit_controlled(self, model: onnx.ModelProto, outdir: Path, profile, calib, control) -> Path:
        """INT8 IR by NNCF's accuracy-controlled quantization of the float `model` in OpenVINO
        itself (nncf.quantize_with_accuracy_control): layers go back to float, most harmful
        first as NNCF ranks them on OpenVINO's own outputs, until the compile's metric is within
        its budget. It keeps OpenVINO's own quantization scheme (fast) and judges where the
        artifact runs, which edgepack's QDQ graphs, judged in ONNX Runtime, cannot. `control`:
        an Int8Control (the metric of a run callable, the judged feeds, the budget)."""
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        def validate(compiled, items) -> float:
            # the compile's metric on the judged batches NNCF asks for (it scores single ones to rank)
            return control.score(lambda feed: [compiled(feed)[o] for o in compiled.outputs], items)

        def run(ov_model, feeds, subset):
            drop_type = nncf.DropType.RELATIVE if control.relative else nncf.DropType.ABSOLUTE
            # one ranking worker: NNCF's parallel ranking compiles and runs OpenVINO models in a
            # thread pool whose idle threads outlive the call, holding models the compile is done with
            restorer = AdvancedAccuracyRestorerParameters(num_ranking_workers=1)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    return nncf.quantize_with_accuracy_control(
                        ov_model, nncf.Dataset(feeds), nncf.Dataset(range(len(control.feeds)), control.feeds.__getitem__),
                        validation_fn=validate, max_drop=control.max_drop, drop_type=drop_type,
                        subset_size=subset, advanced_accuracy_restorer_parameters=restorer)
            finally:
                gc.collect()  # the compiled models NNCF made are released here, in this thread

        return self._nncf_int8(model, outdir, profile, calib, 300, "nncf-accuracy-control",
                               "NNCF accuracy-controlled quantization", run)

    def _nncf_int8(self, model: onnx.ModelProto, outdir: Path, profile, calib, subset_size: int, route: str,
                   what: str, run) -> Path:
        """What both NNCF routes share: calibration feeds, the OpenVINO model, `run(ov_model,
        feeds, subset)` quietly, any failure as one line naming `what`, the IR annotated with
        `route` and saved."""
        import nncf

        feeds = _calibration_feeds(calib, model)
        if not feeds:
            raise EdgepackError("openvino: NNCF quantization needs at least one calibration sample")
        subset, ov_model = min(subset_size, len(feeds)), _convert(model)
        try:
            with quiet("nncf"):
                quantized = run(ov_model, feeds, subset)
        except Exception as e:
            interrupt.check()
            raise EdgepackError(f"openvino: {what} failed: {first_line(e)}") from None
        interrupt.check()  # NNCF runs OpenVINO and its own code, either may have swallowed a signal
        _annotate(quantized, model, "int8", int8_route=route, profile=profile, plugin_config=self._plugin_config(),
                  extra={"nncf_version": nncf.__version__, "calibration_samples": str(subset)})
        return _save(quantized, Path(outdir), compress_to_fp16=False)

    def _plugin_config(self) -> dict:
        """The CPU plugin properties this backend's options ask for, checked against the plugin
        now: a wrong name fails the compile, not every later load of the artifact."""
        props = self.options.properties
        known = {k for k, mode in _core().get_property(DEVICE, "SUPPORTED_PROPERTIES").items()
                 if "W" in str(mode)} if props else set()
        for key in props:
            if key not in known:
                raise EdgepackError(f"openvino option properties.{key}: not a property the {DEVICE} plugin "
                                    f"accepts{close_names(key, known)}")
        return self.options.plugin_config()

    # ------------------------------------------------------------------ run

    def companions(self, artifact: Path) -> list[Path]:
        return [Path(artifact).with_suffix(".bin")]

    # ------------------------------------------------------------------ report

    def deployment(self, artifact: Path) -> dict:
        """The IR's layer types and the OpenVINO opsets they come from, and its precision as
        edgepack recorded it (rt_info; None for an IR made elsewhere), read from model.xml."""
        import xml.etree.ElementTree as ET  # our own emitted IR, not untrusted input

        root = ET.parse(str(artifact)).getroot()
        kinds = [(layer.get("type", "?"), layer.get("version", "?")) for layer in root.iter("layer")]
        ops = Counter(t for t, _ in kinds if t not in ("Parameter", "Result", "Const"))
        opsets = Counter(v for t, v in kinds if t not in ("Parameter", "Result", "Const"))
        recorded = root.find(f"rt_info/{RT_KEY}/precision")
        precision = None if recorded is None else recorded.get("value")
        return {"arch": "any", "minimum_version": None, "precision": precision,
                "minimum_reason": "an IR is read by the OpenVINO release that wrote it and later ones",
                "ops": {"format": "openvino-ir", "opsets": dict(sorted(opsets.items())),
                        "ops": dict(sorted(ops.items()))}}

    def describe(self, artifact: Path) -> dict:
        """What the CPU really runs: per layer type, how many layers executed in which precision
        (from the compiled runtime model after one profiled inference on zeros)."""
        import openvino as ov

        session = self.open_session(artifact, 1, perf_count=True)
        zeros = {spec.name: np.zeros(tuple(d if isinstance(d, int) else 1 for d in spec.shape), spec.dtype)
                 for spec in self.inputs(session)}
        self.run(session, zeros)
        executed = {p.node_name for p in session.request.get_profiling_info()
                    if str(p.status).endswith(".EXECUTED")}
        per_type: dict[str, Counter] = {}
        totals: Counter = Counter()
        for op in session.compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            layer = _rt_str(info, "layerType")
            if layer in _NOT_COMPUTE or (executed and op.get_friendly_name() not in executed):
                continue
            prec = _rt_str(info, "runtimePrecision")
            per_type.setdefault(layer, Counter())[prec] += 1
            totals[_PRECISION_CLASS.get(prec, prec)] += 1
        meta = session.meta
        hint = str(session.compiled.get_property("INFERENCE_PRECISION_HINT"))
        # The profile's plugin properties, where it set any: they change what the latency means.
        options = {"runtime_options": json.loads(meta["runtime_options"])} if meta.get("runtime_options") else {}
        return {
            "ov_version": ov.get_version(),
            "device": _core().get_property(DEVICE, "FULL_DEVICE_NAME"),
            "precision": meta.get("precision", "unknown"),
            "int8_route": meta.get("int8_route") or None,
            "inference_precision_hint": _short_type(hint),
            "inference_precision_requested": meta.get("inference_precision_hint") or "device default",
            "execution_precision": {k: dict(sorted(v.items())) for k, v in sorted(per_type.items())},
            "layers_by_precision": dict(sorted(totals.items())),
            "int8_layers": totals.get("int8", 0),
            "fp32_layers": totals.get("fp32", 0),
            **options,
            "notes": _notes(meta.get("precision"), _short_type(hint)),
        }


# ---------------------------------------------------------------------- conversion


def _core():
    from edgepack.backends.sessions.openvino_session import core

    return core()  # one Core per process, shared with the sessions


def _convert(model: onnx.ModelProto):
    """onnx.ModelProto -> ov.Model; failures become one line naming the op and node. The
    converter's bare `except:` clauses can eat the KeyboardInterrupt of a SIGTERM, so a signal
    that arrived meanwhile is raised again here (interrupt.check)."""
    import openvino as ov

    try:
        if model.ByteSize() < _PROTOBUF_LIMIT:
            converted = ov.convert_model(io.BytesIO(model.SerializeToString()))
        else:
            tmp = Path(tempfile.mkdtemp(prefix="edgepack-ov-"))  # > 2 GiB: weights as external data
            try:
                path = tmp / "model.onnx"
                onnx.save(model, str(path), save_as_external_data=True, location="model.onnx.data")
                converted = ov.convert_model(str(path))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except Exception as e:
        interrupt.check()  # a swallowed signal can surface as a conversion error
        raise EdgepackError(conversion_error(e, model)) from None
    interrupt.check()
    return converted


def conversion_error(e: BaseException, model: onnx.ModelProto | None = None) -> str:
    """OpenVINO's multi-page conversion report -> one line naming the op, node and reason."""
    text = str(e)
    nodes = list(model.graph.node) if model is not None else []
    missing = re.search(r"No conversion rule found for operations?:\s*(.+)", text)
    if missing:
        where = []
        for op in (o.strip() for o in missing.group(1).split(",") if o.strip()):
            domain, _, op_type = op.rpartition(".")  # "com.example.FancyOp" / "FancyOp"
            names = [n.name or n.output[0] for n in nodes if n.op_type == op_type
                     and (n.domain or "ai.onnx") == (domain or "ai.onnx")]
            shown = ", ".join(repr(x) for x in names[:3]) + (", ..." if len(names) > 3 else "")
            where.append(f"{op} (node {shown})" if names else op)
        return f"openvino cannot convert op {'; '.join(where)}: OpenVINO has no conversion rule for it"
    failed = re.search(r"<Node\((\w+)\):\s*([^>]*)>", text)
    if failed:
        op_type, out_name = failed.group(1), failed.group(2).strip()
        node = next((n for n in nodes if out_name in n.output or n.name == out_name), None)
        name = (node.name or out_name) if node is not None else out_name
        return f"openvino cannot convert node {name!r} ({op_type}): {_reason(text)}"
    summary = re.search(r"Conversion is failed for:\s*(.+)", text)
    if summary:
        return f"openvino cannot convert {summary.group(1).strip()}: {_reason(text)}"
    return f"openvino cannot convert the model: {_reason(text)}"


def _reason(text: str) -> str:
    from edgepack.backends.sessions.openvino_session import reason

    return reason(text)


def _annotate(ov_model, source: onnx.ModelProto, precision: str, int8_route: str, profile,
              plugin_config: dict, extra: dict | None = None) -> None:
    """Record what load() and describe() need inside the IR (rt_info["edgepack"]), with the
    options' CPU plugin properties that load() applies after edgepack's own."""
    from edgepack import __version__

    meta = {
        "precision": precision,
        "int8_route": int8_route,
        "inference_precision_hint": PRECISION_HINTS[precision],
        # OpenVINO keeps ONNX tensor names but a port may carry several (a fused Cast adds its
        # own); the graph's own names and output order are kept so run() depends on neither.
        "onnx_inputs": json.dumps([i.name for i in graph_inputs(source)]),
        "onnx_outputs": json.dumps([o.name for o in source.graph.output]),
        "edgepack_version": __version__,
        "target": getattr(profile, "name", "") or "",
        **(extra or {}),
    }
    if plugin_config:  # absent for default options: their artifacts are as they always were
        meta["runtime_options"] = json.dumps(plugin_config)
    for key, value in meta.items():
        ov_model.set_rt_info(str(value), [RT_KEY, key])


def _save(ov_model, outdir: Path, compress_to_fp16: bool) -> Path:
    """Write model.xml + model.bin; the .xml appears last, so its presence means complete."""
    import openvino as ov

    outdir.mkdir(parents=True, exist_ok=True)
    final = outdir / ARTIFACT
    tmp = outdir / f".{final.stem}.tmp-{os.getpid()}.xml"
    try:
        ov.save_model(ov_model, str(tmp), compress_to_fp16=compress_to_fp16)
        interrupt.check()  # before the artifact appears: a signal during the save wins
        os.replace(tmp.with_suffix(".bin"), final.with_suffix(".bin"))
        os.replace(tmp, final)
    except BaseException as e:
        for p in (tmp, tmp.with_suffix(".bin")):
            p.unlink(missing_ok=True)
        if not isinstance(e, Exception):
            raise
        raise EdgepackError(f"openvino: cannot write {final}: {first_line(e)}") from None
    return final


def _calibration_feeds(calib, model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    """Full batches shaped like the model's inputs, from a Dataset or a list of feed dicts."""
    if isinstance(calib, (list, tuple)):
        return list(calib)
    batch = fixed_batch(graph_inputs(model))
    return [f for f in calib.batches(batch) if len(next(iter(f.values()))) == batch]




def _rt_str(info, key: str) -> str:
    from edgepack.backends.sessions.openvino_session import as_str

    return as_str(info[key]) if key in info else "?"


def _short_type(t: str) -> str:
    """'<Type: 'bfloat16'>' / 'bf16' -> 'bf16'."""
    names = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "undefined": "undefined"}
    m = re.search(r"'(\w+)'", t)
    t = m.group(1) if m else t
    return names.get(t, t)


def _notes(precision: str | None, hint: str) -> list[str]:
    notes = []
    if precision == "fp16":
        notes.append("weights are stored in FP16; OpenVINO CPU decompresses them and computes in the "
                     f"inference precision ({hint}), not in FP16, unless INFERENCE_PRECISION_HINT says f16")
    if precision == "fp32":
        notes.append("INFERENCE_PRECISION_HINT=f32 is set: OpenVINO CPU would otherwise compute in BF16 "
                     "on CPUs with AMX/AVX512-BF16")
    if precision == "bf16":
        notes.append(f"weights are stored in FP32 and computed in {hint} (INFERENCE_PRECISION_HINT=bf16); "
                     "layers without BF16 kernels run in FP32")
    if precision == "int8":
        notes.append("FakeQuantize layers are fused into INT8 kernels; layers left float run in "
                     f"{hint}")
    return notes
