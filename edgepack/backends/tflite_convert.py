"""ONNX -> TFLite, run as a child process by `TfliteBackend.emit` (never imported by the parent).

    python -m edgepack.backends.tflite_convert JOB.json      (cwd: a scratch folder)

Why a child process in a scratch folder: onnx2tf writes working files into the current folder,
reads `calibration_image_sample_data_20x128x128x3_float32.npy` from it (and downloads that file
when it is missing), calls `sys.exit` on some errors, and TensorFlow keeps gigabytes resident.
None of that may touch the user's process or folders.

The route (evidence in shared/TFLITE.md): onnx2tf 1.29.24 (installed with --no-deps beside
TensorFlow 2.21) turns the ONNX graph into a Keras graph in NHWC without stray transposes; its
own simplifier and saving are off (the graph is already canonical; `disable_model_save` makes it
return the model instead of serialising it three times, which took ~85 s for MobileNetV2). The
precision is then made by one `TFLiteConverter.from_concrete_functions` call: fp32, fp16 weights,
or full-integer INT8 (per-channel weights, calibrated on the caller's data, int8/uint8/float I/O).

Inputs of the job (JSON): onnx (path), precision, io_dtype, per_channel, calib (npz keyed by ONNX
input name, ONNX layout, or null), keep_float_ops (TFLite op names to leave in float; only for
float I/O), out (folder). Results: OUT/model.tflite, OUT/model.io.json, or OUT/error.json with
{"stage", "op_type", "node", "message"} when the conversion fails.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
from pathlib import Path

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _write_json(path: Path, data: dict) -> None:
    from edgepack.fsutil import atomic_write

    atomic_write(path, json.dumps(data, indent=2))


def _sanitize(name: str) -> str:
    """How onnx2tf renames ONNX node/tensor names (colons are not allowed in TF names)."""
    return re.sub("^/", "wa/", name.replace(":", "__"))


def _node_of(onnx_model, name: str | None):
    """(op_type, node name) of the ONNX node onnx2tf called `name` (possibly sanitised)."""
    if not name:
        return None, None
    plain = re.sub("^wa/", "/", name)
    for node in onnx_model.graph.node:
        if name in (node.name, _sanitize(node.name)) or plain == node.name:
            return node.op_type, node.name
    return None, plain


def _ops_named_in(onnx_model, text: str):
    """The first ONNX node whose (sanitised) name appears in a converter message."""
    for node in onnx_model.graph.node:
        for cand in {node.name, _sanitize(node.name)}:
            if cand and len(cand) > 2 and cand in text:
                return node.op_type, node.name
    return None, None


def _first_line(text: str, limit: int = 240) -> str:
    for line in str(text).splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if line:
            return line[:limit]
    return ""


def _channel_last(rank: int) -> list[int]:
    return [0, *range(2, rank), 1]


def _inverse(perm: list[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def _input_perm(onnx_shape: list[int], tf_shape: list[int]) -> list[int]:
    """Permutation taking an ONNX-layout input to the converted model's layout."""
    rank = len(onnx_shape)
    ident = list(range(rank))
    cl = _channel_last(rank) if rank >= 3 else ident
    matches_cl = [onnx_shape[p] for p in cl] == tf_shape
    if matches_cl:  # onnx2tf moves channels last for 3-5 D inputs: prefer that when both fit
        return cl
    if onnx_shape == tf_shape:
        return ident
    raise ValueError(f"input shape {onnx_shape} became {tf_shape}: no known layout mapping")


def _norm_err(ref, got) -> float:
    import numpy as np

    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return float("inf")
    return float(np.abs(ref - got).max() / (np.abs(ref).max() + 1e-12))


def _attr(node, name, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _explicit_maxpool_pads(onnx_model, calib: dict | None, batch: int):
    """Padded MaxPool -> Pad(constant = the input's calibrated minimum) + unpadded MaxPool.

    onnx2tf pads a MaxPool TensorFlow cannot pad itself with the dtype's lowest value
    (-3.4e38); the calibrator then records that as the tensor's range and the INT8 model gets
    a scale of ~1e36 (LiteRT 2.3 aborts on it). In INT8 the lowest value the tensor can hold is
    its calibrated minimum, so padding with that keeps MaxPool exact on the calibrated range.
    """
    import onnx

    pools = [n for n in onnx_model.graph.node if n.op_type == "MaxPool"
             and _attr(n, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and any(_attr(n, "pads", []))]
    if not pools:
        return onnx_model, []
    model = onnx.ModelProto.FromString(onnx_model.SerializeToString())
    lows = _calibrated_minima(model, {n.input[0] for n in pools}, calib, batch) if calib is not None else {}
    notes = []
    nodes = list(model.graph.node)
    del model.graph.node[:]
    for node in nodes:
        if node not in pools:
            model.graph.node.append(node)
            continue
        low = lows.get(node.input[0], 0.0)
        _append_padded_pool(model, node, low)
        notes.append(f"MaxPool {node.name!r}: padded explicitly with {low:.4g} (its calibrated minimum)")
    return model, notes


def _calibrated_minima(model, tensors: set, calib: dict, batch: int) -> dict:
    """The smallest value each of `tensors` takes over the calibration batches (ONNX Runtime)."""
    import numpy as np
    import onnx
    from onnx import helper

    from edgepack.backends.sessions.onnxruntime_session import inference_session

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    for name in tensors:
        probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    sess = inference_session(probe.SerializeToString(), optimize=False)
    names = [o.name for o in sess.get_outputs()]
    lows = {}
    for i in range(len(next(iter(calib.values()))) // batch):
        outs = sess.run(None, {k: v[i * batch:(i + 1) * batch] for k, v in calib.items()})
        for name, v in zip(names, outs):
            lows[name] = min(lows.get(name, np.inf), float(np.min(v)))
    return lows


def _append_padded_pool(model, node, low: float) -> None:
    """Append Pad(constant `low`) and a copy of MaxPool `node` without pads to `model`."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    pads = list(_attr(node, "pads", []))
    rank = len(pads) // 2 + 2
    full = [0, 0, *pads[:rank - 2], 0, 0, *pads[rank - 2:]]
    base = f"{node.name or node.output[0]}__pad"
    model.graph.initializer.extend([numpy_helper.from_array(np.asarray(full, np.int64), base + "_pads"),
                                    numpy_helper.from_array(np.asarray(low, np.float32), base + "_value")])
    model.graph.node.append(helper.make_node("Pad", [node.input[0], base + "_pads", base + "_value"],
                                             [base + "_out"], name=base, mode="constant"))
    new = onnx.NodeProto()
    new.CopyFrom(node)
    new.input[0] = base + "_out"
    for a in new.attribute:
        if a.name == "pads":
            del a.ints[:]
            a.ints.extend([0] * len(pads))
    model.graph.node.append(new)


class _Run:
    """One conversion: the job, the ONNX model errors are reported against, notes for the report,
    and `stage`, the step a failure is reported in ("onnx2tf", "check", "tflite")."""

    def __init__(self, job: dict, source):
        self.job = job
        self.precision = job["precision"]
        self.out = Path(job["out"])
        self.source = source
        self.stage = "onnx2tf"
        self.notes: list[str] = []


class _Feeds:
    """Sample batches in ONNX layout (the calibration data, else seeded normal data) and the same
    batches in the converted model's layout."""

    def __init__(self, in_specs: list, inputs: list, calib: dict | None):
        import numpy as np

        self.specs, self.inputs, self.calib = in_specs, inputs, calib
        self.batch = int(in_specs[0].shape[0]) if in_specs and in_specs[0].shape else 1
        self._rng = np.random.default_rng(0)

    def count(self) -> int:
        """Whole calibration batches available."""
        return len(next(iter(self.calib.values()))) // self.batch

    def onnx_batch(self, i: int) -> dict:
        if self.calib is not None:
            return {s.name: self.calib[s.name][i * self.batch:(i + 1) * self.batch] for s in self.specs}
        return {s.name: self._rng.standard_normal(s.shape).astype(s.dtype) for s in self.specs}

    def to_tf(self, feed: dict) -> list:
        import numpy as np

        return [np.ascontiguousarray(np.transpose(feed[i["name"]], i["perm"])) for i in self.inputs]


def convert(job: dict) -> dict:
    """Run the stages in order; any failure becomes a ConversionError naming the stage it happened in."""
    import numpy as np
    import onnx

    run = _Run(job, onnx.load(job["onnx"]))
    # Offline: onnx2tf would download this file for 3-channel 4-D inputs; it only feeds its own
    # checks (our calibration data is passed to the converter directly).
    if not Path(SAMPLE_FILE).is_file():
        np.save(SAMPLE_FILE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    try:
        return _stages(run)
    except Exception as e:  # noqa: BLE001 - turned into one line for the parent
        traceback.print_exc()
        raise _conversion_error(e, run.stage, run.source) from e


def _stages(run: _Run) -> dict:
    t0 = time.perf_counter()
    run.stage = "onnx2tf"
    calib = _load_calib(run.job)
    onnx_model, model = _to_keras(run, calib)
    graph_s = time.perf_counter() - t0

    run.stage = "check"
    feeds = _Feeds(*_match_inputs(onnx_model, model), calib)
    sample = feeds.onnx_batch(0)
    outputs, keras_out = _match_outputs(onnx_model, model, feeds, sample)

    run.stage = "tflite"
    t1 = time.perf_counter()
    flat, calib_used = _float_or_int8(run, model, feeds)
    tflite_path = run.out / "model.tflite"
    tflite_path.write_bytes(flat)
    convert_s = time.perf_counter() - t1

    run.stage = "check"
    io_map = _map_io(tflite_path, feeds.inputs, outputs, feeds.to_tf(sample), keras_out)
    return _result(run, io_map, calib_used, {"graph": round(graph_s, 2), "convert": round(convert_s, 2)})


def _load_calib(job: dict) -> dict | None:
    import numpy as np

    if not job.get("calib"):
        return None
    with np.load(job["calib"]) as z:
        return {k: z[k] for k in z.files}


def _to_keras(run: _Run, calib: dict | None):
    """(the ONNX model converted, the Keras model onnx2tf made of it)."""
    import onnx

    onnx_model = run.source
    if run.precision == "int8":
        from edgepack.ir.spec import graph_inputs

        ins = graph_inputs(onnx_model)
        b = int(ins[0].shape[0]) if ins and ins[0].shape else 1
        onnx_model, pad_notes = _explicit_maxpool_pads(onnx_model, calib, b)
        run.notes += pad_notes
    import onnx2tf

    try:
        # output_integer_quantized_tflite only changes MaxPool padding (0 instead of -3.4e38,
        # for what _explicit_maxpool_pads did not cover, e.g. ceil_mode's extra end pad);
        # onnx2tf gets a copy: it edits the graph it is given
        model = onnx2tf.convert(onnx_graph=onnx.ModelProto.FromString(onnx_model.SerializeToString()),
                                output_folder_path=str(Path.cwd() / "saved_model"),
                                not_use_onnxsim=True, disable_model_save=True, verbosity="error",
                                output_integer_quantized_tflite=run.precision == "int8")
    except SystemExit as e:  # onnx2tf exits on some input problems after logging them
        raise RuntimeError(f"onnx2tf exited ({e.code}); see its log") from None
    return onnx_model, model


def _match_inputs(onnx_model, model) -> tuple[list, list]:
    """(ONNX input specs, per input: its Keras tensor, shapes and the permutation into its layout)."""
    from edgepack.ir.spec import graph_inputs

    in_specs = graph_inputs(onnx_model)
    keras_in = {_sanitize(t.name): t for t in model.inputs}
    keras_in.update({t.name: t for t in model.inputs})
    inputs = []
    for k, spec in enumerate(in_specs):
        tf_t = keras_in.get(spec.name)
        if tf_t is None:
            tf_t = keras_in.get(_sanitize(spec.name))
        if tf_t is None:
            tf_t = model.inputs[k]
        tf_shape = [int(d) for d in tf_t.shape]
        inputs.append({"name": spec.name, "onnx_shape": list(spec.shape), "onnx_dtype": spec.dtype,
                       "keras_name": tf_t.name, "tf_shape": tf_shape,
                       "perm": _input_perm(list(spec.shape), tf_shape)})
    return in_specs, inputs


def _match_outputs(onnx_model, model, feeds: _Feeds, sample: dict) -> tuple[list, list]:
    """Run ONNX Runtime and the Keras model on `sample`; per output, the permutation that takes the
    Keras output back to the ONNX layout (the one that agrees best). Returns (outputs, Keras outputs)."""
    import numpy as np

    from edgepack.ir.spec import graph_outputs
    from edgepack.backends.sessions.onnxruntime_session import inference_session

    ref = inference_session(onnx_model.SerializeToString()).run(None, sample)
    keras_out = model(feeds.to_tf(sample))
    keras_out = [np.asarray(t) for t in (keras_out if isinstance(keras_out, (list, tuple)) else [keras_out])]
    layouts = getattr(model, "onnx_output_layouts", {}) or {}
    outputs = []
    for k, spec in enumerate(graph_outputs(onnx_model)):
        r = np.asarray(ref[k])
        tf_arr = keras_out[k]
        rank = r.ndim
        cands = [list(range(rank))] + ([_inverse(_channel_last(rank))] if rank >= 3 else [])
        if layouts.get(spec.name) and rank >= 3:
            cands.reverse()
        # perm takes the converted model's output back to the ONNX layout
        errs = [_norm_err(r, np.transpose(tf_arr, p)) if len(p) == tf_arr.ndim else float("inf")
                for p in cands]
        best = int(np.argmin(errs))
        if not np.isfinite(errs[best]):
            raise ValueError(f"output {spec.name!r}: shape {list(r.shape)} became {list(tf_arr.shape)}")
        outputs.append({"name": spec.name, "onnx_shape": list(r.shape), "onnx_dtype": spec.dtype,
                        "tf_shape": list(tf_arr.shape), "perm": cands[best], "graph_rel_err": errs[best]})
    return outputs, keras_out


def _float_or_int8(run: _Run, model, feeds: _Feeds) -> tuple[bytes, int]:
    """One TFLiteConverter call at the job's precision: (the flatbuffer, calibration samples used)."""
    import tensorflow as tf

    fn = tf.function(lambda *xs: model(xs),
                     input_signature=[tf.TensorSpec(t.shape, t.dtype, t.name) for t in model.inputs])
    holder = tf.Module()  # not the Keras model: tracking its layers costs ~15 s per conversion
    holder.fn = fn
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], holder)
    if run.precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif run.precision == "int8":
        return _int8(run, converter, feeds)
    return converter.convert(), 0


def _int8(run: _Run, converter, feeds: _Feeds) -> tuple[bytes, int]:
    """Full-integer INT8 calibrated on the job's data, or selective (named ops left in float)."""
    import numpy as np
    import tensorflow as tf

    if feeds.calib is None:
        raise ValueError("int8 needs calibration data")
    n = feeds.count()

    def representative():
        for i in range(n):
            yield [x.astype(np.float32) for x in feeds.to_tf(feeds.onnx_batch(i))]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter._experimental_disable_per_channel = not run.job.get("per_channel", True)
    io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[run.job["io_dtype"]]
    keep = list(run.job.get("keep_float_ops") or [])
    if keep and io == tf.float32:
        # selective quantization: the named ops stay float (they run on the CPU)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=keep))
        flat = debugger.get_nondebug_quantized_model()
        run.notes.append(f"kept in float: {', '.join(keep)}")
        return flat, n * feeds.batch
    # full integer: conversion fails rather than leave an op in float
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = io
    converter.inference_output_type = io
    return converter.convert(), n * feeds.batch


def _result(run: _Run, io_map: dict, calib_used: int, seconds: dict) -> dict:
    import onnx2tf
    import tensorflow as tf

    int8 = run.precision == "int8"
    return {
        "format": 1,
        "precision": run.precision,
        "converter": f"onnx2tf {onnx2tf.__version__} + TFLiteConverter (tensorflow {tf.__version__})",
        "io_dtype": run.job["io_dtype"] if int8 else "float32",
        "weights_per_channel": bool(run.job.get("per_channel", True)) if int8 else None,
        "calibration_samples": calib_used,
        "inputs": io_map["inputs"],
        "outputs": io_map["outputs"],
        "sample_check": io_map["check"],
        "notes": run.notes,
        "seconds": seconds,
    }


def _conversion_error(e: Exception, stage: str, onnx_model) -> "ConversionError":
    """One line for the parent: the stage, and the ONNX op/node the failure names where it can be found."""
    op_type, node = _node_of(onnx_model, getattr(e, "onnx_op_name", None))
    text = str(e)
    m = re.search(r"No module named 'onnx2tf\.ops\.(\w+)'", text)
    if m:
        op_type = m.group(1)
        text = f"{op_type} is not implemented by onnx2tf"
        if node is None:
            node = next((n.name for n in onnx_model.graph.node if n.op_type == op_type), None)
    if op_type is None:
        op_type, node = _ops_named_in(onnx_model, text)
    return ConversionError({"stage": stage, "op_type": op_type, "node": node,
                            "message": _first_line(text) or type(e).__name__})


class ConversionError(Exception):
    def __init__(self, info: dict):
        super().__init__(info["message"])
        self.info = info


def _map_io(tflite_path: Path, inputs: list, outputs: list, tf_sample: list, keras_out: list) -> dict:
    """Match the .tflite's tensors to ONNX inputs/outputs; record layouts and quantization."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.backends.sessions.tflite_session import dequantize, quant_of as quant, quantize

    it = Interpreter(model_path=str(tflite_path), num_threads=1)
    it.allocate_tensors()
    tin, tout = it.get_input_details(), it.get_output_details()
    if len(tin) != len(inputs) or len(tout) != len(outputs):
        raise ValueError(f"the .tflite has {len(tin)} inputs / {len(tout)} outputs, the ONNX graph "
                         f"{len(inputs)} / {len(outputs)}")
    remaining = list(tin)
    res_in = []
    for k, spec in enumerate(inputs):
        names = (spec["keras_name"], _sanitize(spec["name"]), spec["name"])
        d = next((d for d in remaining if any(d["name"] in (n, f"serving_default_{n}:0") for n in names)), None)
        d = d or remaining[0]
        remaining.remove(d)
        res_in.append({**{k2: spec[k2] for k2 in ("name", "onnx_shape", "onnx_dtype", "perm")},
                       "tflite_name": d["name"], "tflite_shape": [int(x) for x in d["shape"]],
                       "tflite_dtype": np.dtype(d["dtype"]).name, "quant": quant(d)})
        q = res_in[-1]["quant"]
        x = quantize(tf_sample[k], q, d["dtype"]) if q else tf_sample[k]
        it.set_tensor(d["index"], x.astype(d["dtype"]))
    it.invoke()
    got = []
    for d in tout:
        q = quant(d)
        y = it.get_tensor(d["index"])
        got.append((d, dequantize(y, q) if q else y.astype(np.float32)))
    res_out, worst = [], 0.0
    free = list(range(len(got)))
    for k, spec in enumerate(outputs):
        errs = [_norm_err(keras_out[k], got[j][1]) if j in free else float("inf") for j in range(len(got))]
        j = int(np.argmin(errs))
        if not np.isfinite(errs[j]):
            raise ValueError(f"no .tflite output matches ONNX output {spec['name']!r} {spec['tf_shape']}")
        free.remove(j)
        d = got[j][0]
        worst = max(worst, errs[j])
        res_out.append({**{k2: spec[k2] for k2 in ("name", "onnx_shape", "onnx_dtype", "perm")},
                        "tflite_name": d["name"], "tflite_shape": [int(x) for x in d["shape"]],
                        "tflite_dtype": np.dtype(d["dtype"]).name, "quant": quant(d)})
    return {"inputs": res_in, "outputs": res_out,
            "check": {"max_rel_err_vs_float_graph": worst,
                      "float_graph_rel_err_vs_onnx": max((o["graph_rel_err"] for o in outputs), default=0.0)}}


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    out = Path(job["out"])
    try:
        result = convert(job)
    except ConversionError as e:
        _write_json(out / "error.json", e.info)
        return 2
    _write_json(out / "model.io.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
