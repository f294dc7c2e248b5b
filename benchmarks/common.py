"""Helpers the benchmark scripts share: source models, the bundled photos, building and timing
artifacts, top-1 agreement / cosine with a reference, and the Markdown report.

The scripts put the repository root on sys.path before importing this module.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
CONFIDENT = 0.5  # reference top-1 probability above which a top-1 flip means a real change
MODELS = ("mobilenet_v2", "resnet18")


# --------------------------------------------------------------------------- peers


def ort_default(fp32_path: Path, out: Path, calib) -> Path:
    """ONNX Runtime's quantize_static with every default (QDQ, per-tensor s8s8, MinMax), calibrated
    on an edgepack Dataset: what a user gets without changing a setting."""
    from onnxruntime.quantization import quantize_static

    from edgepack.passes.quantize import CalibrationReader

    quantize_static(str(fp32_path), str(out), CalibrationReader(calib, 1))
    return out


# --------------------------------------------------------------------------- command line


def add_timing_args(ap: argparse.ArgumentParser, out_name: str) -> None:
    """--out (benchmarks/results/OUT_NAME by default), --threads, --warmup, --runs, --repeats."""
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / out_name)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="timing rounds per artifact (lowest p50 kept)")


def add_model_args(ap: argparse.ArgumentParser, target: str, target_help: str) -> None:
    """--workdir, --target (default `target`), --models."""
    ap.add_argument("--workdir", type=Path, default=None, help="keep the models and artifacts here")
    ap.add_argument("--target", default=target, help=target_help)
    ap.add_argument("--models", default=",".join(MODELS))


# --------------------------------------------------------------------------- models and photos


def source_module(name: str):
    """(torch module, label) for a --models name."""
    if name == "mobilenet_v2":
        from edgepack.models.mobilenet_v2 import mobilenet_v2

        return mobilenet_v2(pretrained=True), "MobileNetV2 (ImageNet weights)"
    if name == "resnet18":
        from edgepack.models.resnet import resnet18

        return resnet18(), "ResNet18 (random init)"
    raise SystemExit(f"unknown model {name!r}: use {', '.join(MODELS)}")


def export(module, path: Path) -> onnx.ModelProto:
    """`module` exported to ONNX at `path` (batch 1, 3x224x224, opset 17), then canonicalized."""
    import torch

    from edgepack.ir.canonical import canonicalize

    module.eval()
    torch.onnx.export(module, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    model, _ = canonicalize(onnx.load(str(path)))
    return model


def photos_dir() -> Path:
    """The bundled real photos (prepared on first use)."""
    from edgepack import sample_data

    return sample_data.prepare_photos(sample_data.default_root() / "photos")["photos"]


def load_photos(folder: Path, model: onnx.ModelProto):
    """The photos in `folder` as a Dataset fed to `model`'s inputs (preprocessed as it expects)."""
    from edgepack.data import load_dataset
    from edgepack.ir.spec import graph_inputs

    return load_dataset(folder, graph_inputs(model))


def run_models(args: argparse.Namespace, prefix: str, step: Callable) -> tuple[dict, np.ndarray, tuple, tuple]:
    """For each of --models: export and canonicalize it, load the photos for it, and call
    step(name, canonical ONNX model, photos as an (N, 3, 224, 224) array, work folder); work
    folders are under --workdir, else a temporary folder (prefix `prefix`). Returns
    ({label: what step returned}, the photos, the load average before and after)."""
    folder = photos_dir()
    results = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for name in args.models.split(","):
            work = (args.workdir or Path(tmp)) / name
            work.mkdir(parents=True)
            module, label = source_module(name)
            model = export(module, work / "source.onnx")
            photos = load_photos(folder, model).inputs["input"]
            print(f"{label}: building artifacts", flush=True)
            results[label] = step(name, model, photos, work)
    return results, photos, load_before, os.getloadavg()


# --------------------------------------------------------------------------- building


class Artifacts(dict):
    """{column: (backend name, artifact path)} for one model, filled by emit(); emit seconds in .secs."""

    def __init__(self, name: str, workdir: Path, profile):
        super().__init__()
        self.name, self.workdir, self.profile = name, workdir, profile
        self.secs: dict[str, float] = {}

    def emit(self, key: str, backend, model: onnx.ModelProto, precision: str = "fp32", **kw) -> None:
        d = self.workdir / key
        d.mkdir()
        t0 = time.perf_counter()
        self[key] = (backend.name, backend.emit(model, d, self.profile, precision, **kw))
        self.secs[key] = time.perf_counter() - t0
        print(f"  {self.name}: {key} emitted in {self.secs[key]:.1f} s", flush=True)


# --------------------------------------------------------------------------- measuring


def confident(ref: np.ndarray, threshold: float = CONFIDENT) -> np.ndarray:
    """Rows where the reference gives its top class at least `threshold` probability."""
    p = np.exp(ref - ref.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).max(1) >= threshold


def top1_agreement(ref: np.ndarray, out: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """Share of rows (of `mask`'s rows) with the same argmax; None for an empty mask."""
    same = out.argmax(1) == ref.argmax(1)
    if mask is None:
        return float(same.mean())
    return float(same[mask].mean()) if mask.any() else None


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def agreement(ref: np.ndarray, out: np.ndarray, mask: np.ndarray) -> dict:
    """Top-1 agreement on all rows and on the confident ones (`mask`), and their count."""
    return {"agree": top1_agreement(ref, out), "agree_confident": top1_agreement(ref, out, mask),
            "n_confident": int(mask.sum())}


def logits(backend_name: str, path: Path, photos: np.ndarray, threads: int) -> np.ndarray:
    """The artifact's first output on each photo (batch 1), as (N, classes)."""
    from edgepack.backends import get_backend

    backend = get_backend(backend_name)
    session = backend.load(path, threads)
    return np.concatenate([np.asarray(backend.run(session, {"input": photos[i:i + 1]})[0]).reshape(1, -1)
                           for i in range(len(photos))])


def measure(arts: dict, photos: np.ndarray, threads: int, warmup: int, runs: int, repeats: int,
            before: Callable[[], None] | None = None) -> tuple[dict, np.ndarray, dict]:
    """(rows, reference logits, {column: logits}). Agreement with arts["ort_fp32"] in-process;
    latency in fresh processes, `repeats` rounds interleaved over the artifacts so that load from
    other processes hits them alike (`before` runs before each timing). The p50 kept is the lowest
    round's (contention only ever adds time); every round's p50 is kept too."""
    from edgepack.devices import LocalDevice

    ref = logits(*arts["ort_fp32"], photos, threads)
    mask = confident(ref)
    feeds = [{"input": photos[i:i + 1]} for i in range(8)]
    p50s: dict[str, list[float]] = {key: [] for key in arts}
    for _ in range(repeats):
        for key, (backend, path) in arts.items():
            if before is not None:
                before()
            lat = LocalDevice().time(backend, path, feeds, threads=threads, warmup=warmup, runs=runs, progress=False)
            p50s[key].append(lat["latency_ms"]["p50"])
    rows, outs = {}, {}
    for key, (backend, path) in arts.items():
        outs[key] = logits(backend, path, photos, threads)
        rows[key] = {"p50": min(p50s[key]), "p50_rounds": p50s[key], **agreement(ref, outs[key], mask)}
    return rows, ref, outs


def summary(key: str, row: dict) -> str:
    """One progress line for a measured column."""
    return (f"  {key}: p50 {row['p50']:.2f} ms (rounds: {', '.join(f'{t:.2f}' for t in row['p50_rounds'])}), "
            f"top-1 agreement {row['agree']:.3f}")


# --------------------------------------------------------------------------- report


def table_head(columns: list[tuple[str, str]]) -> list[str]:
    return ["| model | " + " | ".join(label for _, label in columns) + " |", "|" + "---|" * (len(columns) + 1)]


def table_row(label: str, columns: list[tuple[str, str]], fmt: Callable[[str], str]) -> str:
    return f"| {label} | " + " | ".join(fmt(k) for k, _ in columns) + " |"


def timing_rows(model: str, rows: dict, columns: list[tuple[str, str]], n_photos: int) -> list[str]:
    """The p50, p50 per round and top-1 agreement (all photos, confident ones) rows of one model."""
    nconf = rows["ort_fp32"]["n_confident"]
    return [
        table_row(f"{model} p50 ms", columns, lambda k: f"{rows[k]['p50']:.2f}"),
        table_row(f"{model} p50 ms, each round", columns,
                  lambda k: " / ".join(f"{t:.1f}" for t in rows[k]["p50_rounds"])),
        table_row(f"{model} top-1 agreement (all {n_photos})", columns, lambda k: f"{rows[k]['agree']:.2f}"),
        table_row(f"{model} top-1 agreement (FP32 p>=0.5: {nconf})", columns,
                  lambda k: "-" if rows[k]["agree_confident"] is None else f"{rows[k]['agree_confident']:.2f}"),
    ]


def host(threads: int) -> str:
    """CPU model and its vector/matrix extensions, threads, batch, input size."""
    from edgepack.hostinfo import cpu_info

    info = cpu_info()
    flags = sorted(set(info.get("flags", [])) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                                                   "amx_bf16", "avx512_bf16"})
    return f"{info.get('model', platform.processor())} ({', '.join(flags)}), {threads} threads, batch 1, 224x224"


def timing_note(args: argparse.Namespace, load_before: tuple, load_after: tuple) -> str:
    """How the latencies were taken (the flags of add_timing_args), with the load average around it."""
    return (f"p50 of {args.runs} runs after {args.warmup} warm-up, each artifact in a fresh process, "
            f"{args.repeats} rounds interleaved over the artifacts, the lowest round's p50 shown (load "
            f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after")


def write_report(out: Path, title: str, intro: str, table: str, verdicts: list[str]) -> None:
    """The Markdown report (title, intro paragraph, table, verdict bullets) to `out` and stdout."""
    md = "\n".join([title, "", intro, "", table, "", *verdicts, ""])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print()
    print(md)
    print(f"written: {out}")
