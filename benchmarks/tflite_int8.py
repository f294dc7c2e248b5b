"""What TFLite full-integer INT8 costs and buys on this CPU, next to ONNX Runtime FP32.

For MobileNetV2 (real ImageNet weights, edgepack.models.mobilenet_v2) and a ResNet18 in
torchvision's layout (random init: fine for latency, its top-1 agreement says little), this
measures p50 latency (batch 1, --threads threads, each artifact timed in a fresh process by
edgepack.bench.runner.benchmark, through the backends' `run`, so TFLite times include the
NCHW->NHWC transpose and the int8 (de)quantization of I/O) and top-1 agreement / cosine with
ONNX Runtime FP32 on the bundled real photos, for:

  ORT fp32 | TFLite fp32 | TFLite full-int8

The INT8 model follows the --target profile (default mobile-npu: per-channel int8 weights, int8
activations, int8 I/O), made by the TFLite converter calibrated on the same photos it is scored
on. TFLite runs with ai_edge_litert's default XNNPACK delegate.

    python benchmarks/tflite_int8.py [--out benchmarks/results/tflite_int8.md] [--runs 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgepack import sample_data  # noqa: E402
from edgepack.backends import get_backend  # noqa: E402
from edgepack.bench.runner import benchmark  # noqa: E402
from edgepack.data import Dataset, load_dataset  # noqa: E402
from edgepack.ir.canonical import canonicalize  # noqa: E402
from edgepack.ir.spec import graph_inputs  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402

COLUMNS = [
    ("ort_fp32", "ORT fp32"),
    ("tflite_fp32", "TFLite fp32"),
    ("tflite_int8", "TFLite full-int8"),
]


# --------------------------------------------------------------------------- ResNet18


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision.models.resnet18's layout and initialisation (weights random)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, cin = [64, 128, 256, 512], 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------- building


def export(module: nn.Module, path: Path) -> onnx.ModelProto:
    module.eval()
    torch.onnx.export(module, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    model, _ = canonicalize(onnx.load(str(path)))
    return model


def build(name: str, model: onnx.ModelProto, photos: np.ndarray, profile, workdir: Path) -> tuple[dict, dict]:
    """({column: (backend, artifact path)}, {column: emit seconds}) for one model."""
    ort, tfl = get_backend("onnxruntime"), get_backend("tflite")
    arts, secs = {}, {}

    def emit(key, backend, precision="fp32", **kw):
        d = workdir / key
        d.mkdir()
        t0 = time.perf_counter()
        arts[key] = (backend.name, backend.emit(model, d, profile, precision, **kw))
        secs[key] = time.perf_counter() - t0
        print(f"  {name}: {key} emitted in {secs[key]:.1f} s", flush=True)

    emit("ort_fp32", ort)
    emit("tflite_fp32", tfl)
    emit("tflite_int8", tfl, "int8", calib=Dataset({"input": photos}, source="bundled photos"))
    return arts, secs


# --------------------------------------------------------------------------- measuring


def logits(backend_name: str, path: Path, photos: np.ndarray, threads: int) -> np.ndarray:
    backend = get_backend(backend_name)
    session = backend.load(path, threads)
    return np.concatenate([np.asarray(backend.run(session, {"input": photos[i:i + 1]})[0]).reshape(1, -1)
                           for i in range(len(photos))])


def measure(arts: dict, photos: np.ndarray, threads: int, warmup: int, runs: int, repeats: int) -> dict:
    """Agreement in-process; latency in fresh processes, `repeats` rounds interleaved over the
    artifacts so that load from other processes hits them alike. The p50 kept is the lowest
    round's (contention only ever adds time); every round's p50 is kept too."""
    ref = logits(*arts["ort_fp32"], photos, threads)
    p = np.exp(ref - ref.max(1, keepdims=True))
    confident = (p / p.sum(1, keepdims=True)).max(1) >= 0.5
    feeds = [{"input": photos[i:i + 1]} for i in range(8)]
    p50s: dict[str, list[float]] = {key: [] for key in arts}
    for _ in range(repeats):
        for key, (backend, path) in arts.items():
            lat = benchmark(backend, path, feeds, threads=threads, warmup=warmup, runs=runs, progress=False)
            p50s[key].append(lat["latency_ms"]["p50"])
    rows = {}
    for key, (backend, path) in arts.items():
        out = logits(backend, path, photos, threads)
        same = out.argmax(1) == ref.argmax(1)
        cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
        rows[key] = {"p50": min(p50s[key]), "p50_rounds": p50s[key],
                     "agree": float(same.mean()),
                     "agree_confident": float(same[confident].mean()) if confident.any() else None,
                     "n_confident": int(confident.sum()),
                     "cosine": float(cos.mean()), "max_abs": float(np.abs(out - ref).max()),
                     "size_mb": path.stat().st_size / 1e6}
        if backend == "tflite":
            info = get_backend("tflite").describe(path)
            rows[key]["ops"] = info["op_count"]
            rows[key]["io"] = "/".join(sorted({t["dtype"] for t in info["inputs"] + info["outputs"]}))
            rows[key]["float_ops"] = sum(info["float_ops"].values()) if info["precision"] == "int8" else None
        print(f"  {key}: p50 {rows[key]['p50']:.2f} ms (rounds: {', '.join(f'{t:.2f}' for t in p50s[key])}), "
              f"top-1 agreement {rows[key]['agree']:.3f}, cosine {rows[key]['cosine']:.4f}", flush=True)
    return rows


# --------------------------------------------------------------------------- report


def table(results: dict, n_photos: int) -> str:
    head = "| model | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]

    def row(label, fmt):
        return f"| {label} | " + " | ".join(fmt(k) for k, _ in COLUMNS) + " |"

    for model, (rows, secs) in results.items():
        nconf = rows["ort_fp32"]["n_confident"]
        lines += [
            row(f"{model} p50 ms", lambda k: f"{rows[k]['p50']:.2f}"),
            row(f"{model} p50 ms, each round",
                lambda k: " / ".join(f"{t:.1f}" for t in rows[k]["p50_rounds"])),
            row(f"{model} top-1 agreement (all {n_photos})", lambda k: f"{rows[k]['agree']:.2f}"),
            row(f"{model} top-1 agreement (FP32 p>=0.5: {nconf})",
                lambda k: "-" if rows[k]["agree_confident"] is None else f"{rows[k]['agree_confident']:.2f}"),
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

    from edgepack.hostinfo import cpu_info

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
    info = cpu_info()
    flags = sorted(set(info.get("flags", [])) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                                                   "amx_bf16", "avx512_bf16"})
    return (f"{info.get('model', platform.processor())} ({', '.join(flags)}), {threads} threads, batch 1, "
            f"224x224; onnxruntime {onnxruntime.__version__}, ai-edge-litert {litert}, onnx2tf {o2t}, "
            f"tensorflow {tf.__version__}, torch {torch.__version__}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tflite_int8.md")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="timing rounds per artifact (lowest p50 kept)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the models and artifacts here")
    ap.add_argument("--target", default="mobile-npu", help="profile whose INT8 scheme the TFLite model follows")
    ap.add_argument("--models", default="mobilenet_v2,resnet18")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)

    profile = load_profile(args.target)
    photos_dir = sample_data.prepare_photos(sample_data.default_root() / "photos")["photos"]
    results = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgepack-tflbench-") as tmp:
        for name in args.models.split(","):
            work = (args.workdir or Path(tmp)) / name
            work.mkdir(parents=True)
            if name == "mobilenet_v2":
                from edgepack.models.mobilenet_v2 import mobilenet_v2

                module, label = mobilenet_v2(pretrained=True), "MobileNetV2 (ImageNet weights)"
            elif name == "resnet18":
                module, label = ResNet18(), "ResNet18 (random init)"
            else:
                raise SystemExit(f"unknown model {name!r}: use mobilenet_v2, resnet18")
            model = export(module, work / "source.onnx")
            photos = load_dataset(photos_dir, graph_inputs(model)).inputs["input"]
            print(f"{label}: building artifacts", flush=True)
            arts, secs = build(name, model, photos, profile, work)
            results[label] = (measure(arts, photos, args.threads, args.warmup, args.runs, args.repeats), secs)
    load_after = os.getloadavg()

    md = "\n".join([
        "# TFLite full-integer INT8 vs FP32",
        "",
        f"Measured by `benchmarks/tflite_int8.py` on {environment(args.threads)}; "
        f"p50 of {args.runs} runs after {args.warmup} warm-up, each artifact in a fresh process, "
        f"{args.repeats} rounds interleaved over the artifacts, the lowest round's p50 shown (load "
        f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after: other work shared the CPU). "
        f"TFLite runs with XNNPACK (ai_edge_litert's default) and its times include edgepack's "
        f"NCHW->NHWC transpose and int8 I/O (de)quantization. Top-1 agreement and cosine are with "
        f"ORT FP32 on the {len(photos)} bundled real photos; the INT8 model (target {profile.name}: "
        f"per-channel int8 weights, int8 activations, {profile.quantization.io_dtype} I/O) is "
        f"calibrated by the TFLite converter on those same photos. ResNet18 has random weights: its "
        f"latency is real, its agreement is not a quality measure.",
        "",
        table(results, len(photos)),
        "",
        *verdict(results),
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    print()
    print(md)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
