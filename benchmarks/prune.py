"""Structured pruning of MobileNetV2 (ImageNet weights) at several ratios, beside the unpruned
model: params, MACs, fresh-process p50 latency (ONNX Runtime) and fidelity to the unpruned model
on the bundled real photos (top-1 agreement, mean cosine of the logits).

    python benchmarks/prune.py [--ratios 0.25,0.5,0.75] [--multiple 16] [--threads 2] [--runs 100]

One-shot pruning, no fine-tuning: fidelity falls quickly with the ratio. The kept-channel plan
(JSON) is what a fine-tuning stage would reuse to recover accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (confident, cosine, export, load_photos, logits, photos_dir,  # noqa: E402
                               top1_agreement)
from edgepack.devices import LocalDevice  # noqa: E402
from edgepack.hostinfo import cpu_info  # noqa: E402
from edgepack.ir.stats import format_count, model_stats  # noqa: E402
from edgepack.passes.prune import prune  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prune.md")
    ap.add_argument("--ratios", default="0.25,0.5,0.75")
    ap.add_argument("--multiple", type=int, default=16, help="channel multiple (x86-vnni: 16)")
    ap.add_argument("--mode", default="uniform", choices=("uniform", "global"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="timing rounds (lowest p50 kept)")
    args = ap.parse_args(argv)
    from edgepack.models.mobilenet_v2 import mobilenet_v2

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-prune-") as tmp:
        tmp = Path(tmp)
        base = export(mobilenet_v2(pretrained=True), tmp / "source.onnx")
        photos = load_photos(photos_dir(), base).inputs["input"]
        models = {"unpruned": (base, None)}
        for r in (float(x) for x in args.ratios.split(",")):
            t0 = time.perf_counter()
            pruned, plan = prune(base, r, mode=args.mode, channel_multiple=args.multiple)
            print(f"ratio {r}: pruned in {time.perf_counter() - t0:.1f} s, {plan.summary()}", flush=True)
            models[f"{r:g}"] = (pruned, plan)
        paths = {}
        for key, (m, _) in models.items():
            paths[key] = tmp / f"{key}.onnx"
            onnx.save(m, str(paths[key]))
        feeds = [{"input": photos[i:i + 1]} for i in range(8)]
        p50s = {k: [] for k in paths}
        for _ in range(args.repeats):  # interleaved rounds: background load hits all alike
            for key, path in paths.items():
                lat = LocalDevice().time("onnxruntime", path, feeds, threads=args.threads, warmup=args.warmup,
                                runs=args.runs, progress=False)
                p50s[key].append(lat["latency_ms"]["p50"])
        ref = logits("onnxruntime", paths["unpruned"], photos, args.threads)
        mask = confident(ref)
        s0 = model_stats(base)
        for key, (m, plan) in models.items():
            s = model_stats(m)
            out = ref if key == "unpruned" else logits("onnxruntime", paths[key], photos, args.threads)
            rows.append({"key": key, "params": s["params"], "macs": s["macs"],
                         "macs_rel": s["macs"] / s0["macs"], "params_rel": s["params"] / s0["params"],
                         "p50": min(p50s[key]), "rounds": p50s[key],
                         "agree": top1_agreement(ref, out), "agree_conf": top1_agreement(ref, out, mask),
                         "cos": float(cosine(ref, out).mean()),
                         "channels": plan.summary() if plan else None})
            print(f"  {key}: {rows[-1]}", flush=True)
    lines = [
        "# Structured pruning: MobileNetV2 (ImageNet weights), one-shot, no fine-tuning",
        "",
        f"CPU: {cpu_info().get('model', 'unknown')}; ONNX Runtime, {args.threads} threads, batch 1, "
        f"fresh process per timing, p50 of {args.runs} runs, lowest of {args.repeats} interleaved rounds. "
        f"Channel multiple {args.multiple}, {args.mode} ratio, L1 filter importance (BN folded). "
        f"Fidelity vs the unpruned model on {len(photos)} real photos "
        f"({int(mask.sum())} where the unpruned model is >= 50% confident).",
        "",
        "| ratio | params | MACs | MACs vs unpruned | p50 ms | speed-up | top-1 agreement | "
        "agreement (confident) | mean cosine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    p0 = rows[0]["p50"]
    for r in rows:
        conf = "n/a" if r["agree_conf"] is None else f"{r['agree_conf']:.3f}"
        lines.append(f"| {r['key']} | {format_count(r['params'])} | {format_count(r['macs'])} | "
                     f"{r['macs_rel']:.3f} | {r['p50']:.2f} | {p0 / r['p50']:.2f}x | {r['agree']:.3f} | "
                     f"{conf} | {r['cos']:.3f} |")
    lines += ["", "One-shot structured pruning without fine-tuning loses accuracy: the agreement "
              "column is what fine-tuning (reusing the saved PrunePlan's kept channels) has to win back. "
              "Latency p50 per round: " + "; ".join(f"{r['key']}: " + ", ".join(f"{t:.2f}" for t in r["rounds"])
                                                     for r in rows), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
