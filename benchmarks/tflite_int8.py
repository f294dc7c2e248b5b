"""What TFLite full-integer INT8 costs and buys on this CPU, next to ONNX Runtime FP32.

For MobileNetV2 (real ImageNet weights, edgepack.models.mobilenet_v2) and a ResNet18 in
torchvision's layout (edgepack.models.resnet, random init: fine for latency, its top-1 agreement
says little), this measures p50 latency (batch 1, --threads threads, each artifact timed in a
fresh process by edgepack.devices.LocalDevice.time, through the backends' `run`, so TFLite times
include the NCHW->NHWC transpose and the int8 (de)quantization of I/O) and top-1 agreement /
cosine with ONNX Runtime FP32 on the bundled real photos, for:

  ORT fp32 | TFLite fp32 | TFLite full-int8

The INT8 model follows the --target profile (default mobile-npu: per-channel int8 weights, int8
activations, int8 I/O), made by the TFLite converter calibrated on the same photos it is scored
on. TFLite runs with ai_edge_litert's default XNNPACK delegate.

    python benchmarks/tflite_int8.py [--out benchmarks/results/tflite_int8.md] [--runs 100]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (Artifacts, add_model_args, add_timing_args, cosine, host,  # noqa: E402
                               measure, run_models, summary, table_head, table_row, timing_note,
                               timing_rows, write_report)
from edgepack.backends import get_backend  # noqa: E402
from edgepack.data import Dataset  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402

COLUMNS = [
    ("ort_fp32", "ORT fp32"),
    ("tflite_fp32", "TFLite fp32"),
    ("tflite_int8", "TFLite full-int8"),
]


# --------------------------------------------------------------------------- building


def build(name: str, model: onnx.ModelProto, photos: np.ndarray, profile, workdir: Path) -> tuple[dict, dict]:
    """({column: (backend, artifact path)}, {column: emit seconds}) for one model."""
    ort, tfl = get_backend("onnxruntime"), get_backend("tflite")
    arts = Artifacts(name, workdir, profile)
    arts.emit("ort_fp32", ort, model)
    arts.emit("tflite_fp32", tfl, model)
    arts.emit("tflite_int8", tfl, model, "int8", calib=Dataset({"input": photos}, source="bundled photos"))
    return arts, arts.secs


# --------------------------------------------------------------------------- measuring


def measure_model(arts: dict, photos: np.ndarray, threads: int, warmup: int, runs: int, repeats: int) -> dict:
    """benchmarks.common.measure plus cosine / max abs diff to ORT FP32, the artifacts' size, and
    the TFLite ops, I/O dtypes and float ops."""
    rows, ref, outs = measure(arts, photos, threads, warmup, runs, repeats)
    for key, (backend, path) in arts.items():
        out = outs[key]
        rows[key].update(cosine=float(cosine(out, ref).mean()), max_abs=float(np.abs(out - ref).max()),
                         size_mb=path.stat().st_size / 1e6)
        if backend == "tflite":
            info = get_backend("tflite").describe(path)
            rows[key]["ops"] = info["op_count"]
            rows[key]["io"] = "/".join(sorted({t["dtype"] for t in info["inputs"] + info["outputs"]}))
            rows[key]["float_ops"] = sum(info["float_ops"].values()) if info["precision"] == "int8" else None
        print(f"{summary(key, rows[key])}, cosine {rows[key]['cosine']:.4f}", flush=True)
    return rows


# --------------------------------------------------------------------------- report


def table(results: dict, n_photos: int) -> str:
    lines = table_head(COLUMNS)

    def row(label, fmt):
        return table_row(label, COLUMNS, fmt)

    for model, (rows, secs) in results.items():
        lines += timing_rows(model, rows, COLUMNS, n_photos) + [
            row(f"{model} mean cosine / max abs diff",
                lambda k: f"{rows[k]['cosine']:.4f} / {rows[k]['max_abs']:.2g}"),
            row(f"{model} size MB", lambda k: f"{rows[k]['size_mb']:.1f}"),
            row(f"{model} TFLite ops, I/O dtype, float ops",
                lambda k: "-" if "ops" not in rows[k] else
                f"{rows[k]['ops']}, {rows[k]['io']}, {'-' if rows[k]['float_ops'] is None else rows[k]['float_ops']}"),
            row(f"{model} emit s", lambda k: f"{secs[k]:.1f}"),
        ]
    return "\n".join(lines)


def verdict(results: dict) -> list[str]:
    out = []
    for model, (rows, _) in results.items():
        o, f, q = rows["ort_fp32"], rows["tflite_fp32"], rows["tflite_int8"]
        speed = "faster" if q["p50"] < f["p50"] else "slower"
        conf = "no confident photos" if q["agree_confident"] is None else \
            f"{q['agree_confident']:.2f} on the {q['n_confident']} confident photos"
        out.append(f"- {model}: TFLite int8 {q['p50']:.2f} ms vs TFLite fp32 {f['p50']:.2f} ms (int8 {speed}, "
                   f"x{f['p50'] / q['p50']:.2f}) vs ORT fp32 {o['p50']:.2f} ms; int8 top-1 agreement "
                   f"{q['agree']:.2f} ({conf}), size {q['size_mb']:.1f} MB vs {f['size_mb']:.1f} MB.")
    return out


def environment(threads: int) -> str:
    import ai_edge_litert
    import onnxruntime
    import tensorflow as tf

    try:
        import onnx2tf

        o2t = onnx2tf.__version__
    except Exception:  # noqa: BLE001
        o2t = "?"
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001
        litert = getattr(ai_edge_litert, "__version__", "?")
    return (f"{host(threads)}; onnxruntime {onnxruntime.__version__}, ai-edge-litert {litert}, onnx2tf {o2t}, "
            f"tensorflow {tf.__version__}, torch {torch.__version__}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(ap, "tflite_int8.md")
    add_model_args(ap, "mobile-npu", "profile whose INT8 scheme the TFLite model follows")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)

    profile = load_profile(args.target)

    def step(name, model, photos, work):
        arts, secs = build(name, model, photos, profile, work)
        return measure_model(arts, photos, args.threads, args.warmup, args.runs, args.repeats), secs

    results, photos, load_before, load_after = run_models(args, "edgepack-tflbench-", step)

    intro = (f"Measured by `benchmarks/tflite_int8.py` on {environment(args.threads)}; "
             f"{timing_note(args, load_before, load_after)}: other work shared the CPU). "
             f"TFLite runs with XNNPACK (ai_edge_litert's default) and its times include edgepack's "
             f"NCHW->NHWC transpose and int8 I/O (de)quantization. Top-1 agreement and cosine are with "
             f"ORT FP32 on the {len(photos)} bundled real photos; the INT8 model (target {profile.name}: "
             f"per-channel int8 weights, int8 activations, {profile.quantization.io_dtype} I/O) is "
             f"calibrated by the TFLite converter on those same photos. ResNet18 has random weights: its "
             f"latency is real, its agreement is not a quality measure.")
    write_report(args.out, "# TFLite full-integer INT8 vs FP32", intro, table(results, len(photos)), verdict(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
