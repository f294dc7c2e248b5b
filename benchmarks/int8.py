"""INT8 side by side: FP32 ONNX Runtime, ORT quantize_static defaults, OpenVINO + NNCF defaults,
and edgepack's choice for a target — same inputs, one process, fresh-process latency.

    python benchmarks/int8.py [--target host] [--models mobilenet,mnist,minilm] [--runs 200]

Fidelity: MobileNetV2 = top-1 agreement with FP32 on the bundled real photos (+ flips, crops);
MNIST CNN = accuracy on 1,000 held-out digits; MiniLM = cosine to FP32 embeddings on held-out
real sentences. Writes a Markdown table (default benchmarks/results/int8-<target>.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import edgepack  # noqa: E402
from benchmarks.common import cosine, ort_default, top1_agreement  # noqa: E402
from edgepack import sample_data  # noqa: E402
from edgepack.backends import get_backend  # noqa: E402
from edgepack.devices import LocalDevice  # noqa: E402
from edgepack.data import Dataset, load_dataset  # noqa: E402
from edgepack.frontends import load_source  # noqa: E402
from edgepack.fsutil import artifact_identity  # noqa: E402
from edgepack.hostinfo import cpu_info  # noqa: E402
from edgepack.ir.canonical import canonicalize  # noqa: E402
from edgepack.ir.spec import graph_inputs  # noqa: E402
from edgepack.passes.metrics import outputs  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402


def build_cases(names: list[str]) -> dict:
    """name -> (float torch/onnx model, input shapes, calib Dataset path, eval Dataset, score kind)."""
    sets = sample_data.prepare()
    cases = {}
    if "mobilenet" in names:
        from edgepack.models.mobilenet_v2 import mobilenet_v2

        cases["MobileNetV2 (ImageNet)"] = dict(model=mobilenet_v2(), shapes={"": (1, 3, 224, 224)},
                                               calib=sets["photos"], eval=sets["photos"], score="agreement")
    if "mnist" in names:
        from edgepack.models.mnist_cnn import MnistCNN, train

        x, y = sample_data.mnist_arrays()
        tr, _, _ = sample_data.mnist_splits(0, y)
        cases["MNIST CNN"] = dict(model=train(MnistCNN(), x[tr], y[tr], epochs=6), shapes={"": (1, 1, 28, 28)},
                                  calib=sets["mnist_calib"], eval=sets["mnist_eval"], score="top1")
    if "minilm" in names:
        from edgepack.models.minilm import minilm

        cases["MiniLM-L6 (seq 64)"] = dict(model=minilm(), shapes={"input_ids": (1, 64), "attention_mask": (1, 64)},
                                           calib=sets["sentences"], eval=sets["sentences"], score="cosine")
    return cases


def fidelity(run, ref_run, data: Dataset, kind: str) -> float:
    out = outputs(run, data, 1)
    if kind == "top1":
        return float((out.argmax(1) == data.labels[: len(out)]).mean())
    ref = outputs(ref_run, data, 1)
    if kind == "agreement":
        return top1_agreement(ref, out)
    return float(cosine(out, ref).mean())


def openvino_nncf(fp32_path: Path, out: Path, calib: Dataset) -> Path:
    import nncf
    import openvino as ov

    model = ov.convert_model(str(fp32_path))
    feeds = list(calib.batches(1))
    q = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds))  # NNCF defaults
    ov.save_model(q, str(out))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="host")
    ap.add_argument("--models", default="mobilenet,mnist,minilm")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, help="default: the target's benchmark threads")
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    profile = load_profile(args.target)
    threads = args.threads or profile.effective_threads()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="edgepack-int8-bench-"))
    for name, case in build_cases(args.models.split(",")).items():
        print(f"== {name}", flush=True)
        source = load_source(case["model"], case["shapes"])
        canonical, _ = canonicalize(source.model)
        specs = graph_inputs(canonical)
        calib_all = load_dataset(case["calib"], specs)
        if case["calib"] == case["eval"] and case["score"] == "cosine":
            # sentences: calibrate on the first 256, measure on the rest (held out)
            calib, evalset = calib_all.take(256), Dataset({k: v[256:] for k, v in calib_all.inputs.items()},
                                                        None, calib_all.source + " [256:]")
        else:
            calib, evalset = calib_all, load_dataset(case["eval"], specs)
        fp32 = tmp / f"{len(rows)}-fp32.onnx"
        onnx.save(canonical, str(fp32))
        ort = get_backend("onnxruntime")
        ref_run = ort.runner(fp32, threads)
        variants = [("FP32 ONNX Runtime", "onnxruntime", fp32, "fp32")]
        variants.append(("ORT quantize_static defaults", "onnxruntime",
                         ort_default(fp32, tmp / f"{len(rows)}-ortq.onnx", calib), "int8"))
        try:
            variants.append(("OpenVINO + NNCF defaults", "openvino",
                             openvino_nncf(fp32, tmp / f"{len(rows)}-nncf.xml", calib), "int8"))
        except Exception as e:  # report, don't hide: the row says why
            print(f"   OpenVINO/NNCF failed: {e}", flush=True)
        t0 = time.perf_counter()
        calib_path = tmp / f"{len(rows)}-calib.npz"
        np.savez(calib_path, **calib.inputs)
        # edgepack's choice: every runtime of the target, the fastest within the accuracy budget
        rep = edgepack.compile(fp32, target=profile, calib=calib_path, output_dir=tmp / f"{len(rows)}-edgepack",
                               backends=["auto"], runs=50, warmup=5, threads=threads, progress=False)
        q = rep.get("quantization", {})
        art = tmp / f"{len(rows)}-edgepack" / rep["artifacts"][rep["selected"]["index"]]["path"]
        variants.append((f"edgepack ({profile.name}: {rep['backend']} {rep['precision']})", rep["backend"], art,
                         rep["precision"]))
        compile_s = time.perf_counter() - t0
        base_ms = None
        for label, backend, path, precision in variants:
            run = get_backend(backend).runner(path, threads)
            score = fidelity(run, ref_run, evalset, case["score"])
            lat = LocalDevice().time(backend, path, list(evalset.take(8).batches(1)), threads=threads,
                            warmup=args.warmup, runs=args.runs, progress=False)
            p50 = lat["latency_ms"]["p50"]
            base_ms = base_ms or p50
            size = artifact_identity(path, get_backend(backend).companions(path))["size_bytes"]
            rows.append({"model": name, "variant": label, "p50": p50, "size": size, "score": score,
                         "kind": case["score"], "speedup": base_ms / p50})
            print(f"   {label:40s} p50 {p50:8.3f} ms  size {size / 1e6:7.2f} MB  {case['score']} {score:.4f}", flush=True)
        rows[-1]["note"] = (f"compile {compile_s:.0f} s; kept float {len(q.get('kept_float', []))}, "
                            f"{q.get('metric', '')} drop {q.get('drop', 0):.4f}; {q.get('note', '')}")
    cpu = cpu_info()
    lines = [f"# INT8 benchmark — target `{profile.name}`", "",
             f"{cpu['model']}, {threads} threads, batch 1, p50 of {args.runs} runs in a fresh process "
             f"({time.strftime('%Y-%m-%d')}).", "",
             "| model | variant | p50 ms | size MB | accuracy / fidelity | speed-up vs FP32 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['p50']:.3f} | {r['size'] / 1e6:.2f} | "
                     f"{r['kind']} {r['score']:.4f} | {r['speedup']:.2f}x |")
    lines += [""] + [f"- {r['model']}: {r['note']}" for r in rows if r.get("note")]
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"int8-{profile.name}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
