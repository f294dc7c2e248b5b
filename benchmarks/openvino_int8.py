"""Which INT8 route pays on OpenVINO: the QDQ graph from onnxruntime.quantization, or NNCF?

For MobileNetV2 (real ImageNet weights, edgepack.models.mobilenet_v2) and a ResNet18 in
torchvision's layout (edgepack.models.resnet, random init: fine for latency, its top-1 agreement
says little), this measures p50 latency (batch 1, --threads threads, each artifact timed in a
fresh process by edgepack.devices.LocalDevice.time) and top-1 agreement with ONNX Runtime FP32 on
the bundled real photos, for:

  ORT fp32 | ORT int8 (QDQ) | OpenVINO fp32 | OpenVINO fp16 weights | OpenVINO int8 (QDQ) |
  OpenVINO int8 (NNCF defaults) | OpenVINO artifact of `edgepack compile` (default budget)

The QDQ graph is edgepack's own INT8 pass (edgepack.passes.quantize.Quantizer) for the --target
profile (default x86-vnni: per-channel symmetric s8 weights, u8 asymmetric activations, MinMax),
calibrated on the photos; NNCF calibrates on the same photos.

    python benchmarks/openvino_int8.py [--out benchmarks/results/openvino_int8.md] [--runs 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (Artifacts, add_model_args, add_timing_args, host, measure,  # noqa: E402
                               run_models, summary, table_head, table_row, timing_note, timing_rows,
                               write_report)
import edgepack  # noqa: E402
from edgepack.backends import get_backend  # noqa: E402
from edgepack.fsutil import artifact_identity  # noqa: E402
from edgepack.data import Dataset  # noqa: E402
from edgepack.passes.quantize import Quantizer  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402

COLUMNS = [
    ("ort_fp32", "ORT fp32"),
    ("ort_int8", "ORT int8 (QDQ)"),
    ("ov_fp32", "OpenVINO fp32"),
    ("ov_fp16", "OpenVINO fp16 weights"),
    ("ov_int8_qdq", "OpenVINO int8 (QDQ)"),
    ("ov_int8_nncf", "OpenVINO int8 (NNCF)"),
    ("ov_edgepack", "OpenVINO (edgepack compile)"),
]


# --------------------------------------------------------------------------- building


def build(name: str, model: onnx.ModelProto, photos, profile, workdir: Path, threads: int) -> dict:
    """{column: (backend, artifact path)} for one model."""
    ort, ov = get_backend("onnxruntime"), get_backend("openvino")
    calib = Dataset({"input": photos})
    qdq = Quantizer(model, calib, profile).quantize()  # the profile's scheme, as edgepack compiles INT8
    onnx.save(qdq, str(workdir / "qdq.onnx"))
    arts = Artifacts(name, workdir, profile)
    arts.emit("ort_fp32", ort, model)
    arts.emit("ort_int8", ort, qdq)
    arts.emit("ov_fp32", ov, model)
    arts.emit("ov_fp16", ov, model, "fp16")
    arts.emit("ov_int8_qdq", ov, qdq, "int8")
    arts.emit("ov_int8_nncf", ov, model, "int8", calib=calib)
    arts.choices = {"ov_edgepack": compile_for_openvino(model, photos, profile, workdir, threads)}
    arts["ov_edgepack"] = ("openvino", arts.choices["ov_edgepack"]["path"])
    return arts


def compile_for_openvino(model: onnx.ModelProto, photos, profile, workdir: Path, threads: int) -> dict:
    """What `edgepack compile --backend openvino --calib photos` ships at the default accuracy
    budget: OpenVINO times FP32 and every static INT8 graph within the budget (edgepack's QDQ,
    NNCF's) and keeps its fastest. Returns the artifact path and the choice."""
    onnx.save(model, str(workdir / "float.onnx"))
    np.savez(workdir / "photos.npz", input=photos)
    out = workdir / "edgepack"
    rep = edgepack.compile(workdir / "float.onnx", target=profile, backends=["openvino"],
                           calib=workdir / "photos.npz", output_dir=out, runs=5, warmup=1, threads=threads,
                           progress=False)
    choice = rep["quantization"].get("per_backend", {}).get("openvino", {})
    print(f"  edgepack compile for openvino chose {choice.get('chosen', rep['precision'])}: "
          f"{choice.get('timings')}", flush=True)
    return {"path": out / rep["artifacts"][0]["path"], "chosen": choice.get("chosen", rep["precision"]),
            "timings": choice.get("timings", [])}


# --------------------------------------------------------------------------- measuring


def cpu_busy(interval: float = 0.5) -> float:
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat; 0 where unreadable)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return v[3] + v[4], sum(v)
    try:
        idle0, tot0 = sample()
        time.sleep(interval)
        idle1, tot1 = sample()
    except OSError:
        return 0.0
    return 1.0 - (idle1 - idle0) / max(1, tot1 - tot0)


def wait_quiet(max_wait: float, threshold: float = 0.3) -> None:
    """Start a timing when other processes leave the CPUs mostly idle (waits at most max_wait s).

    Contention inflates long inferences more than short ones (a 2 ms run fits in one scheduler
    slice, a 60 ms run never does), so a busy machine would bias the comparison, not just add noise.
    """
    end = time.monotonic() + max_wait
    while time.monotonic() < end and cpu_busy() > threshold:
        pass


def measure_model(arts: dict, photos, threads: int, warmup: int, runs: int, repeats: int,
                  quiet_wait: float = 0.0) -> dict:
    """benchmarks.common.measure, each timing started when the CPUs are quiet, plus the artifacts'
    size and the precisions OpenVINO ran their layers in."""
    rows, _, _ = measure(arts, photos, threads, warmup, runs, repeats, before=lambda: wait_quiet(quiet_wait))
    for key, choice in arts.choices.items():
        rows[key]["chosen"] = choice["chosen"]
    for key, (backend, path) in arts.items():
        rows[key]["size_mb"] = artifact_identity(path, get_backend(backend).companions(path))["size_bytes"] / 1e6
        if backend == "openvino":
            info = get_backend("openvino").describe(path)
            rows[key]["ran_in"] = ", ".join(f"{k} {v}" for k, v in info["layers_by_precision"].items())
        print(summary(key, rows[key]), flush=True)
    return rows


# --------------------------------------------------------------------------- report


def table(results: dict, n_photos: int) -> str:
    lines = table_head(COLUMNS)
    for model, rows in results.items():
        lines += timing_rows(model, rows, COLUMNS, n_photos)
        lines.append(table_row(f"{model} size MB", COLUMNS, lambda k: f"{rows[k]['size_mb']:.1f}"))
        lines.append(table_row(f"{model} OpenVINO layers ran in", COLUMNS, lambda k: rows[k].get("ran_in", "-")))
    return "\n".join(lines)


def verdict(results: dict) -> list[str]:
    out = []
    for model, rows in results.items():
        q, n = rows["ov_int8_qdq"], rows["ov_int8_nncf"]
        faster = "NNCF" if n["p50"] < q["p50"] else "QDQ"
        closer = "NNCF" if n["agree"] > q["agree"] else ("QDQ" if q["agree"] > n["agree"] else "neither")
        out.append(f"- {model}: OpenVINO int8 via QDQ {q['p50']:.2f} ms vs NNCF {n['p50']:.2f} ms "
                   f"({faster} faster, {abs(q['p50'] - n['p50']) / max(q['p50'], n['p50']) * 100:.0f}%); "
                   f"top-1 agreement QDQ {q['agree']:.2f} vs NNCF {n['agree']:.2f} ({closer} closer to FP32); "
                   f"OpenVINO fp32 {rows['ov_fp32']['p50']:.2f} ms, ORT fp32 {rows['ort_fp32']['p50']:.2f} ms, "
                   f"ORT int8 {rows['ort_int8']['p50']:.2f} ms.")
        e = rows["ov_edgepack"]
        out.append(f"- {model}: `edgepack compile --backend openvino` at the default budget shipped "
                   f"'{e['chosen']}' (OpenVINO's own timing chose it): {e['p50']:.2f} ms vs OpenVINO + NNCF "
                   f"defaults {n['p50']:.2f} ms ({(e['p50'] / n['p50'] - 1) * 100:+.0f}%), top-1 agreement "
                   f"{e['agree']:.2f} vs {n['agree']:.2f}.")
    return out


def environment(threads: int) -> str:
    import nncf
    import onnxruntime
    import openvino

    return (f"{host(threads)}; onnxruntime {onnxruntime.__version__}, openvino "
            f"{openvino.get_version().split('-')[0]}, nncf {nncf.__version__}, torch {torch.__version__}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(ap, "openvino_int8.md")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each timing, wait up to this many seconds for the CPUs to be < 30%% busy")
    ap.add_argument("--nice", type=int, default=0,
                    help="change this process's (and its timing workers') niceness, e.g. -10 on a shared "
                         "machine (negative values need root)")
    add_model_args(ap, "x86-vnni", "profile whose INT8 scheme the QDQ graph follows")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    if args.nice:
        os.nice(args.nice)

    profile = load_profile(args.target)

    def step(name, model, photos, work):
        arts = build(name, model, photos, profile, work, args.threads)
        return measure_model(arts, photos, args.threads, args.warmup, args.runs, args.repeats, args.quiet_wait)

    results, photos, load_before, load_after = run_models(args, "edgepack-ovbench-", step)

    intro = (f"Measured by `benchmarks/openvino_int8.py` on {environment(args.threads)}; "
             f"{timing_note(args, load_before, load_after)}; each timing waited up to "
             f"{args.quiet_wait:.0f} s for the CPUs to be < 30% busy; niceness {os.nice(0)}). "
             f"Top-1 agreement is with ORT FP32 on the {len(photos)} bundled real photos; QDQ (target "
             f"{profile.name}'s scheme) and NNCF (defaults) both calibrate on those photos. OpenVINO fp32 "
             "runs with INFERENCE_PRECISION_HINT=f32; its fp16-weights artifact computes in the CPU's "
             "default precision (BF16 with AMX). ResNet18 has random weights: its latency is real, its "
             "agreement is not a quality measure.")
    write_report(args.out, "# OpenVINO INT8: QDQ graph vs NNCF", intro, table(results, len(photos)), verdict(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
