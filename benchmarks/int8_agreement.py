"""How much of MobileNetV2 must stay float for INT8 top-1 to agree with FP32 on the bundled photos?

Sweeps the accuracy budget of `edgepack compile --metric agreement --precision int8` (ONNX
Runtime, the --target profile's scheme, calibrated and judged on the real photos) and reports, per
budget: the agreement reached, how many of the layers INT8 quantizes (all of them INT8: the
profile's scheme with nothing kept float) the accuracy control had to keep float, and the
artifact's p50 (fresh process) beside FP32's. Also the FP32 top-2 logit margins of
the photos, which bound what any 8-bit model can agree on.

    python benchmarks/int8_agreement.py [--drops 0.3,0.15,0.05,0.02,0.01] [--out ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import edgepack  # noqa: E402
from benchmarks.common import (add_timing_args, export, host, load_photos, photos_dir,  # noqa: E402
                               source_module, write_report)
from edgepack.passes.quantize import Quantizer, quantized_nodes  # noqa: E402
from edgepack.runtime import ort_runner  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402


def margins(model: onnx.ModelProto, photos: np.ndarray) -> np.ndarray:
    """FP32 top-1 minus top-2 logit, per photo."""
    run = ort_runner(model)
    out = np.concatenate([run({"input": photos[i:i + 1]})[0] for i in range(len(photos))])
    top2 = np.sort(out, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(ap, "int8_agreement.md")
    ap.add_argument("--target", default="x86-vnni")
    ap.add_argument("--drops", default="0.3,0.15,0.05,0.02,0.01", help="agreement budgets to sweep")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-agreement-") as tmp:
        work = Path(tmp)
        module, label = source_module("mobilenet_v2")
        model = export(module, work / "source.onnx")
        calib = load_photos(photos_dir(), model)
        photos = calib.inputs["input"]
        np.savez(work / "photos.npz", input=photos)
        m = margins(model, photos)
        layers = len(quantized_nodes(Quantizer(model, calib, load_profile(args.target)).quantize()))
        for budget in [float(d) for d in args.drops.split(",")]:
            print(f"max-drop {budget}", flush=True)
            rep = edgepack.compile(work / "source.onnx", target=args.target, backends=["onnxruntime"],
                                   calib=work / "photos.npz", metric="agreement", max_drop=budget,
                                   precision="int8", output_dir=work / f"out-{budget}", threads=args.threads,
                                   runs=args.runs, warmup=args.warmup, progress=False)
            q = rep["quantization"]
            rows.append({"budget": budget, "agree": q["int8_score"], "met": q["met"],
                         "float": len(q["kept_float"]), "layers": layers, "p50": rep["latency_ms"]["p50"],
                         "fp32_ms": q["fp32_ms"], "int8_ms": q["int8_ms"],
                         "nncf": next((c["score"] for c in q["format_candidates"] if "NNCF" in c["format"]), None)})
            print(f"  agreement {q['int8_score']:.3f}, {len(q['kept_float'])} of {layers} layers float, "
                  f"p50 {rep['latency_ms']['p50']:.2f} ms", flush=True)
        fp32 = edgepack.compile(work / "source.onnx", target=args.target, backends=["onnxruntime"],
                                precision="fp32", output_dir=work / "fp32", threads=args.threads,
                                runs=args.runs, warmup=args.warmup, progress=False)["latency_ms"]["p50"]
    lines = ["| agreement budget (max drop) | agreement reached | met | layers kept float | "
             "p50 ms (fresh process) | vs FP32 p50 | NNCF candidate's agreement |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        nncf = "-" if r["nncf"] is None else f"{r['nncf']:.3f}"
        lines.append(f"| {r['budget']} | {r['agree']:.3f} | {'yes' if r['met'] else 'no'} | {r['float']} of "
                     f"{r['layers']} | {r['p50']:.2f} | x{fp32 / r['p50']:.2f} | {nncf} |")
    intro = (f"Measured by `benchmarks/int8_agreement.py` on {host(args.threads)}; target {args.target}; "
             f"{label}, calibrated and judged on the {len(photos)} bundled photos (top-1 agreement with "
             f"ONNX Runtime FP32); `--precision int8` so INT8 ships even where slower; p50 of {args.runs} "
             f"runs after {args.warmup} warm-up in a fresh process. FP32 p50 {fp32:.2f} ms.")
    verdicts = [f"- FP32 top-2 logit margins of the photos: min {m.min():.3f}, {int((m < 0.25).sum())} below 0.25, "
                f"{int((m < 0.5).sum())} below 0.5 (of {len(m)}); int8's logit error on this model is larger "
                "than the smallest margins, so those photos flip unless the layers feeding them stay float."]
    write_report(args.out, "# MobileNetV2 INT8: top-1 agreement with FP32 against layers kept float", intro,
                 "\n".join(lines), verdicts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
