"""Does BF16 pay on this CPU? OpenVINO FP32 against OpenVINO BF16 (FP32 weights computed in BF16,
`--precision bf16`), with OpenVINO + NNCF INT8 (defaults) as the peer, on MobileNetV2 (real
ImageNet weights) by default: p50 latency (batch 1, --threads threads, each artifact timed in a
fresh process, rounds interleaved) and top-1 agreement with ONNX Runtime FP32 on the bundled photos.

BF16 is only built where the CPU has avx512_bf16/amx_bf16 (edgepack refuses it elsewhere), so
this script stops with that line on other CPUs.

    python benchmarks/bf16.py [--out benchmarks/results/bf16.md] [--runs 100] [--models mobilenet_v2]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (Artifacts, add_model_args, add_timing_args, host, measure,  # noqa: E402
                               run_models, summary, table_head, timing_note, timing_rows, write_report)
from edgepack.backends import get_backend  # noqa: E402
from edgepack.data import Dataset  # noqa: E402
from edgepack.hostinfo import missing_bf16  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402

COLUMNS = [("ort_fp32", "ORT fp32"), ("ov_fp32", "OpenVINO fp32"), ("ov_bf16", "OpenVINO bf16"),
           ("ov_int8_nncf", "OpenVINO int8 (NNCF)")]


def step(args, profile):
    """The per-model step of run_models: build the four artifacts, time them, say what ran."""
    def run(name, model, photos, work):
        ort, ov = get_backend("onnxruntime"), get_backend("openvino")
        arts = Artifacts(name, work, profile)
        arts.emit("ort_fp32", ort, model)
        arts.emit("ov_fp32", ov, model)
        arts.emit("ov_bf16", ov, model, "bf16")
        arts.emit("ov_int8_nncf", ov, model, "int8", calib=Dataset({"input": photos}))
        rows, _, _ = measure(arts, photos, args.threads, args.warmup, args.runs, args.repeats)
        for key, (backend, path) in arts.items():
            if backend == "openvino":
                info = ov.describe(path)
                rows[key]["ran_in"] = ", ".join(f"{k} {v}" for k, v in info["layers_by_precision"].items())
            print(summary(key, rows[key]), flush=True)
        return rows
    return run


def verdicts(results: dict) -> list[str]:
    out = []
    for model, rows in results.items():
        f, b, n = rows["ov_fp32"], rows["ov_bf16"], rows["ov_int8_nncf"]
        out.append(f"- {model}: OpenVINO bf16 {b['p50']:.2f} ms vs fp32 {f['p50']:.2f} ms "
                   f"({f['p50'] / b['p50']:.2f}x), top-1 agreement with FP32 {b['agree']:.2f} (fp32 "
                   f"{f['agree']:.2f}); OpenVINO + NNCF INT8 {n['p50']:.2f} ms, agreement {n['agree']:.2f}. "
                   f"Layers ran in: bf16 artifact {b.get('ran_in', '-')}.")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(ap, "bf16.md")
    add_model_args(ap, "host", "profile the artifacts are built for")
    ap.set_defaults(models="mobilenet_v2")
    args = ap.parse_args(argv)
    missing = missing_bf16()
    if missing:
        raise SystemExit(missing)
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    results, photos, before, after = run_models(args, "edgepack-bf16-", step(args, load_profile(args.target)))
    lines = table_head(COLUMNS)
    for model, rows in results.items():
        lines += timing_rows(model, rows, COLUMNS, len(photos))
    write_report(args.out, "# OpenVINO BF16 against FP32 and NNCF INT8",
                 f"{host(args.threads)}. {timing_note(args, before, after)}).", "\n".join(lines), verdicts(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
