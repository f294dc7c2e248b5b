"""Does `edgepack search` beat the peers' INT8 defaults on MobileNetV2 at equal or better fidelity?

MobileNetV2 (ImageNet weights); the bundled photos split BY PHOTO (a photo, its flip and its crop
stay together): the first --calib-photos photos calibrate, the rest judge fidelity (top-1
agreement on non-near-ties against FP32). The search (ONNX Runtime and OpenVINO; fp32, fp16,
int8; with and without depthwise convolutions kept float) must keep agreement >= --min-agreement;
its chosen artifact is then timed side by side, interleaved in fresh processes, with
  ort_int8      onnxruntime quantize_static with every default (QDQ, per-tensor, MinMax)
  ov_nncf_int8  OpenVINO + nncf.quantize with every default
  ort_fp32      the reference
all calibrated on the same photos and judged on the same held-out ones.

    python benchmarks/search.py [--trials 10] [--threads 2] [--out benchmarks/results/search.md]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (add_timing_args, export, host, measure, ort_default,  # noqa: E402
                               photos_dir, source_module, write_report)
from edgepack.passes.metrics import fidelity  # noqa: E402


def split_photos(folder: Path, work: Path, n_calib: int) -> tuple[Path, Path]:
    """calib/ and judge/ folders of image links: the first n_calib photos (with their variants), the rest."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    bases = sorted({p.stem.removesuffix("_flip").removesuffix("_crop") for p in images})
    out = {"calib": work / "calib", "judge": work / "judge"}
    for d in out.values():
        d.mkdir(parents=True)
    for d in out.values():
        shutil.copy(folder / "preprocess.yaml", d)
    for p in images:
        base = p.stem.removesuffix("_flip").removesuffix("_crop")
        (out["calib" if bases.index(base) < n_calib else "judge"] / p.name).symlink_to(p)
    return out["calib"], out["judge"]


def ov_nncf_default(fp32_path: Path, out: Path, calib: np.ndarray) -> Path:
    """OpenVINO's converter, then nncf.quantize with every default: what a user gets."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(fp32_path))
    q = nncf.quantize(model, nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]))
    ov.save_model(q, str(out))
    return out


def run_search(fp32_path: Path, calib: Path, judge: Path, work: Path, args) -> dict:
    from edgepack.events import console_events
    from edgepack.search import SearchSpec, search

    spec = SearchSpec(
        name="mobilenet_v2", model=str(fp32_path), calib=str(calib), eval=str(judge), targets=["host"],
        constraints={"min_agreement_non_near_ties": args.min_agreement},
        objectives={"p50_ms": "min", "agreement_non_near_ties": "max", "size_mb": "min"},
        space={"backend": ["onnxruntime", "openvino"], "precision": ["fp32", "fp16", "int8"],
               "keep_float": [[], ["type:DepthwiseConv"]]},
        trials=args.trials, repeats=args.repeats, runs=args.runs, warmup=args.warmup, threads=args.threads)
    t0 = time.time()
    result = search(spec, work / "search", events=console_events(False))[0]
    return {"result": result, "seconds": time.time() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(ap, "search.md")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--calib-photos", type=int, default=12, help="photos (of 20) that calibrate; the rest judge")
    ap.add_argument("--min-agreement", type=float, default=0.99)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgepack-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    module, label = source_module("mobilenet_v2")
    model = export(module, work / "mobilenet_v2.onnx")
    fp32_path = work / "fp32.onnx"
    onnx.save(model, str(fp32_path))
    calib_dir, judge_dir = split_photos(photos_dir(), work / "photos", args.calib_photos)
    from benchmarks.common import load_photos

    calib, judged = load_photos(calib_dir, model), load_photos(judge_dir, model)
    found = run_search(fp32_path, calib_dir, judge_dir, work, args)
    r = found["result"]
    if not r.feasible:
        print(f"search found no point with agreement >= {args.min_agreement}", file=sys.stderr)
        return 3
    arts = {"ort_fp32": ("onnxruntime", fp32_path),
            "ort_int8": ("onnxruntime", ort_default(fp32_path, work / "ort_int8.onnx", calib)),
            "ov_nncf_int8": ("openvino", ov_nncf_default(fp32_path, work / "ov_nncf_int8.xml", calib.inputs["input"])),
            "search": (r.chosen.fig.backend, Path(r.chosen.fig.artifact))}
    photos = judged.inputs["input"]
    rows, ref, outs = measure(arts, photos, args.threads, args.warmup, args.runs, args.repeats)
    lines = ["| artifact | p50 ms (lowest round) | rounds | agreement (non-near-ties) | agreement (all) | cosine |",
             "|---|---|---|---|---|---|"]
    for key, row in rows.items():
        f = fidelity(ref, outs[key])
        rows[key]["fidelity"] = f
        lines.append(f"| {key} | {row['p50']:.2f} | {', '.join(f'{t:.2f}' for t in row['p50_rounds'])} | "
                     f"{f['agreement_non_near_ties']:.3f} (n={f['non_near_ties']}) | {f['agreement']:.3f} | {f['cosine']:.4f} |")
    peers = [k for k in ("ort_int8", "ov_nncf_int8") if rows[k]["fidelity"]["agreement_non_near_ties"]
             <= rows["search"]["fidelity"]["agreement_non_near_ties"]]
    best = min(peers or ("ort_int8", "ov_nncf_int8"), key=lambda k: rows[k]["p50"])
    chosen = r.chosen
    verdicts = [f"- search: {len(r.rows)} trials in {found['seconds']:.0f} s; chose {chosen.fig.backend} "
                f"{chosen.fig.precision} {chosen.point}: {r.reason}",
                f"- speed-up of the chosen point over the fastest peer default at equal or better fidelity "
                f"({best}): {rows[best]['p50'] / rows['search']['p50']:.2f}x" if peers else
                f"- no peer default reaches the search's fidelity; fastest peer {best}: "
                f"{rows[best]['p50'] / rows['search']['p50']:.2f}x the chosen point's p50"]
    intro = (f"{label}, host: {host(args.threads)}; calibrated on {len(calib)} images, judged on {len(photos)} "
             f"(photos never calibrated on); constraint: agreement on non-near-ties >= {args.min_agreement}.")
    write_report(args.out, "# Search vs peer INT8 defaults (MobileNetV2)", intro, "\n".join(lines), verdicts)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
