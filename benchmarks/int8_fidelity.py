"""Which INT8 candidate keeps MobileNetV2 closest to FP32 on photos it was not calibrated on?

MobileNetV2 (ImageNet weights) on the bundled photos (20 real photos, each with a flip and a crop:
60 images). The photos are cut into --folds folds BY PHOTO (a photo, its flip and its crop always
fall in the same fold); each candidate is calibrated on the other folds and judged on the fold it
never saw, so every image is judged once, by a graph calibrated without its photo. Figures pooled
over the folds, with edgepack's own yardstick (edgepack.passes.metrics.fidelity): top-1 agreement
on all images and on the non-near-ties (FP32 top-1/top-2 logit margin >= 0.25), logit cosine.

Candidates, all layers INT8 (no accuracy control), the --target profile's scheme:
  ort        onnxruntime quantize_static, per-channel MinMax (edgepack's own INT8 pass)
  nncf       NNCF as the INT8 search runs it today (its ranges + fast bias correction)
  nncf_fbc   the same with full bias correction (fast_bias_correction=False)
  nncf_hist  the same with histogram activation ranges
  nncf_both  histogram ranges + full bias correction (HISTOGRAM_FULL_BC below)
p50: fold 0's graphs, each in ONNX Runtime and OpenVINO (fresh process, interleaved rounds).

--search also runs the whole INT8 search (`edgepack compile`, ONNX Runtime + OpenVINO, calibrated
on fold 0's complement with the compile's own held-out judge) twice: with the NNCF candidates the
search has, and with HISTOGRAM_FULL_BC added; reports what each candidate cost, what shipped, and
its fidelity on fold 0's photos (never seen by the compile).

    python benchmarks/int8_fidelity.py [--folds 4] [--search] [--out benchmarks/results/int8_fidelity.md]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (Artifacts, add_timing_args, export, host, load_photos, logits, measure,  # noqa: E402
                               photos_dir, source_module, timing_note, write_report)
from benchmarks.openvino_int8 import wait_quiet  # noqa: E402
from edgepack.backends import get_backend  # noqa: E402
from edgepack.data import IMAGE_SUFFIXES, Dataset  # noqa: E402
from edgepack.passes.metrics import cosines, fidelity  # noqa: E402
from edgepack.passes.quantize import Quantizer  # noqa: E402
from edgepack.passes.quantize_nncf import DEFAULT, NncfConfig, NncfQuantizer  # noqa: E402
from edgepack.targets import load_profile  # noqa: E402

# preset MIXED (the profile's asymmetric activations), full bias correction, histogram activation
# ranges: proposed as an INT8 candidate; measured here, not among the search's candidates
HISTOGRAM_FULL_BC = NncfConfig("static QDQ (NNCF: histogram ranges + full bias correction)",
                               fast_bias_correction=False, histogram_ranges=True)

NNCF = {"nncf": DEFAULT,
        "nncf_fbc": NncfConfig("NNCF, full bias correction", fast_bias_correction=False),
        "nncf_hist": NncfConfig("NNCF, histogram ranges", histogram_ranges=True),
        "nncf_both": HISTOGRAM_FULL_BC}
LABELS = {"ort": "onnxruntime per-channel MinMax", "nncf": "NNCF as searched today (fast bias correction)",
          "nncf_fbc": "NNCF + full bias correction", "nncf_hist": "NNCF + histogram ranges",
          "nncf_both": "NNCF MIXED + full bias correction + histogram ranges"}


def photo_of_each_image(folder: Path) -> np.ndarray:
    """The photo index of each image, in the order the loader reads them (sorted file names):
    `x.png`, `x_crop.png` and `x_flip.png` are one photo."""
    names = sorted(f.name for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    stems = [Path(n).stem.removesuffix("_flip").removesuffix("_crop") for n in names]
    photos = sorted(set(stems))
    return np.array([photos.index(s) for s in stems])


def quantize(key: str, model: onnx.ModelProto, calib: Dataset, profile) -> onnx.ModelProto:
    quantizer = Quantizer(model, calib, profile)
    return quantizer.quantize() if key == "ort" else NncfQuantizer(quantizer, config=NNCF[key]).quantize()


def cross_validate(model, photos: np.ndarray, photo: np.ndarray, folds: int, profile, work: Path) -> tuple:
    """({key: pooled judged logits}, {key: seconds per quantization}, fold 0's graphs)."""
    run = get_backend("onnxruntime")
    keys = ["ort", *NNCF]
    outs = {k: np.zeros((len(photos), 1000), np.float32) for k in keys}
    secs = {k: [] for k in keys}
    graphs = {}
    for fold in range(folds):
        judged, calib = np.nonzero(photo % folds == fold)[0], np.nonzero(photo % folds != fold)[0]
        for key in keys:
            t0 = time.perf_counter()
            graph = quantize(key, model, Dataset({"input": photos[calib]}, source="photos"), profile)
            secs[key].append(time.perf_counter() - t0)
            path = work / f"{key}-{fold}.onnx"
            onnx.save(graph, str(path))
            outs[key][judged] = logits(run.name, path, photos[judged], 2)
            if fold == 0:
                graphs[key] = graph
            print(f"  fold {fold}: {key} quantized in {secs[key][-1]:.1f} s", flush=True)
    return outs, {k: float(np.mean(v)) for k, v in secs.items()}, graphs


def timed(model, graphs: dict, photos, profile, work: Path, args) -> dict:
    """p50 of FP32 and every candidate's fold-0 graph, in ONNX Runtime and OpenVINO: the lowest
    round's and the highest round's (how much the machine's other load moved it)."""
    ort, ov = get_backend("onnxruntime"), get_backend("openvino")
    arts = Artifacts("MobileNetV2", work / "artifacts", profile)
    (work / "artifacts").mkdir()
    arts.emit("ort_fp32", ort, model)
    arts.emit("ov_fp32", ov, model)
    for key, graph in graphs.items():
        arts.emit(f"ort_{key}", ort, graph)
        arts.emit(f"ov_{key}", ov, graph, "int8")
    rows, _, _ = measure(arts, photos, args.threads, args.warmup, args.runs, args.repeats,
                         before=lambda: wait_quiet(args.quiet_wait))
    return {k: f"{r['p50']:.2f} / {max(r['p50_rounds']):.2f}" for k, r in rows.items()}


def search(model_path: Path, photos, photo: np.ndarray, folds: int, work: Path, args) -> list[dict]:
    """The whole INT8 search, with the NNCF candidates it has and with HISTOGRAM_FULL_BC added."""
    import edgepack
    from edgepack.passes import precision

    calib, unseen = photos[photo % folds != 0], photos[photo % folds == 0]
    np.savez(work / "calib.npz", input=calib)
    ref = logits("onnxruntime", model_path, unseen, args.threads)
    rows, configs = [], precision.NNCF_CONFIGS
    for label, nncf_configs in (("as shipped", configs), ("with HISTOGRAM_FULL_BC", (*configs, HISTOGRAM_FULL_BC))):
        precision.NNCF_CONFIGS = nncf_configs  # this run's candidates
        t0 = time.perf_counter()
        r = edgepack.compile(model_path, target=args.target, backends=["onnxruntime", "openvino"], calib=work / "calib.npz",
                             output_dir=work / f"search-{len(rows)}", threads=args.threads, runs=args.runs,
                             warmup=args.warmup, progress=False)
        secs = time.perf_counter() - t0
        q = r["quantization"]
        shipped = {a["backend"]: {"precision": a["precision"], "p50": a["latency_ms"]["p50"],
                                  "unseen": fidelity(ref, logits(a["backend"], work / f"search-{len(rows)}" / a["path"],
                                                                 unseen, args.threads)),
                                  "chosen": (q.get("per_backend") or {}).get(a["backend"], {}).get("chosen", q["format"])}
                   for a in r["artifacts"]}
        rows.append({"label": label, "seconds": secs, "candidates": q["format_candidates"], "shipped": shipped,
                     "held_out": r["accuracy"]["held_out"]})
        print(f"  search {label}: {secs:.0f} s", flush=True)
    precision.NNCF_CONFIGS = configs
    return rows


def per_fold(ref: np.ndarray, out: np.ndarray, photo: np.ndarray, folds: int) -> str:
    """Mean cosine on each fold's judged images: how much the pooled figure hides."""
    return " / ".join(f"{cosines(out[photo % folds == k], ref[photo % folds == k]).mean():.3f}" for k in range(folds))


def fmt(f: dict) -> str:
    return (f"{f['agreement']:.3f} | {f['agreement_non_near_ties']:.3f} | {f['cosine']:.4f}")


def candidates_table(figures: dict, secs: dict, p50: dict) -> list[str]:
    lines = ["| candidate (all layers INT8) | agreement, all | agreement, non-near-ties | cosine | cosine min | "
             "cosine per fold | quantize s | ORT p50 ms | OpenVINO p50 ms |", "|---|---|---|---|---|---|---|---|---|",
             f"| FP32 | 1 | 1 | 1 | 1 | - | - | {p50['ort_fp32']:.2f} | {p50['ov_fp32']:.2f} |"]
    for key, f in figures.items():
        lines.append(f"| {LABELS[key]} | {fmt(f)} | {f['cosine_min']:.3f} | {f['folds']} | {secs[key]:.1f} | "
                     f"{p50[f'ort_{key}']} | {p50[f'ov_{key}']} |")
    return lines


def search_table(rows: list[dict]) -> list[str]:
    lines = ["", "| INT8 search | compile s | candidates: seconds, cosine on the held-out judge | ORT ships | "
             "ORT p50 ms | ORT agreement / non-near-ties / cosine, unseen photos | OpenVINO ships | OpenVINO p50 ms | "
             "OpenVINO agreement / non-near-ties / cosine, unseen photos |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cands = "; ".join(f"{c['format']}: {c.get('seconds', 0):.0f} s, {c.get('score', float('nan')):.4f}"
                          for c in r["candidates"])
        o, v = r["shipped"]["onnxruntime"], r["shipped"]["openvino"]
        lines.append(f"| {r['label']} | {r['seconds']:.0f} | {cands} | {o['chosen']} ({o['precision']}) | "
                     f"{o['p50']:.2f} | {fmt(o['unseen'])} | {v['chosen']} ({v['precision']}) | {v['p50']:.2f} | "
                     f"{fmt(v['unseen'])} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(ap, "int8_fidelity.md")
    ap.add_argument("--target", default="host", help="target profile (host: detected)")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--search", action="store_true", help="also run the whole INT8 search, with and without the candidate")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each timing, wait up to this many seconds for the CPUs to be < 30%% busy")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    profile = load_profile(args.target)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgepack-fidelity-") as tmp:
        work = Path(tmp)
        module, label = source_module("mobilenet_v2")
        model = export(module, work / "source.onnx")
        onnx.save(model, str(work / "canonical.onnx"))
        folder = photos_dir()
        photos = load_photos(folder, model).inputs["input"]
        photo = photo_of_each_image(folder)
        ref = logits("onnxruntime", work / "canonical.onnx", photos, args.threads)
        outs, secs, graphs = cross_validate(model, photos, photo, args.folds, profile, work)
        figures = {k: {**fidelity(ref, o), "cosine_min": float(cosines(o, ref).min()),
                       "folds": per_fold(ref, o, photo, args.folds)} for k, o in outs.items()}
        p50 = timed(model, graphs, photos, profile, work, args)
        rows = search(work / "canonical.onnx", photos, photo, args.folds, work, args) if args.search else []
    f = next(iter(figures.values()))
    intro = (f"Measured by `benchmarks/int8_fidelity.py` on {host(args.threads)}; target {args.target}; {label}; "
             f"{len(photos)} images of {photo.max() + 1} photos in {args.folds} folds by photo: each candidate is "
             f"calibrated on {args.folds - 1} folds and judged on the other, pooled over the folds ({f['samples']} "
             f"images judged, {f['non_near_ties']} of them non-near-ties: FP32 top-1/top-2 logit margin >= "
             f"{f['near_tie_margin']}). Quantize s: one quantization (mean over the folds). "
             f"{timing_note(args, load_before, os.getloadavg())}).")
    verdicts = verdict(figures, secs, p50, rows)
    write_report(args.out, "# MobileNetV2 INT8 fidelity on unseen photos: which candidate earns its place",
                 intro, "\n".join(candidates_table(figures, secs, p50) + search_table(rows) if rows
                                  else candidates_table(figures, secs, p50)), verdicts)
    return 0


def verdict(figures: dict, secs: dict, p50: dict, rows: list[dict]) -> list[str]:
    new, old = figures["nncf_both"], figures["nncf"]
    better = new["cosine"] > old["cosine"] and new["agreement_non_near_ties"] >= old["agreement_non_near_ties"]
    out = [f"- NNCF MIXED + full bias correction + histogram ranges against NNCF as searched today: agreement "
           f"{new['agreement']:.3f} vs {old['agreement']:.3f}, non-near-ties {new['agreement_non_near_ties']:.3f} vs "
           f"{old['agreement_non_near_ties']:.3f}, cosine {new['cosine']:.4f} vs {old['cosine']:.4f}; "
           f"{secs['nncf_both'] / secs['nncf']:.1f}x the quantization time; "
           + ("better fidelity: it earns a place among the candidates." if better else
              "no better fidelity here, so it is not among the search's candidates.")]
    for r in rows:
        out.append(f"- the INT8 search {r['label']}: {r['seconds']:.0f} s; judged on {r['held_out']['samples']} of "
                   f"{r['held_out']['of']} calibration images held out ({r['held_out']['ranges']}).")
    added = [c.get("seconds", 0.0) for r in rows for c in r["candidates"] if c["format"] == HISTOGRAM_FULL_BC.label]
    if added:
        out.append(f"- cost: the candidate took {added[0]:.0f} s of the INT8 search (full bias correction runs the "
                   "model layer by layer); the search's p50s are the compile's own, taken without waiting for "
                   "quiet CPUs.")
    out.append(f"- p50s were taken on a machine shared with other jobs: compare the lowest and highest round of "
               "each graph before reading a speed difference; the fidelity figures do not depend on load.")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
