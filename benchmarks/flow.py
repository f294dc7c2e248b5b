"""The training-aware flow on MNIST (the demo's recipe), beside what a user would do without it.

    python benchmarks/flow.py [--workdir runs/flow-bench] [--seeds 0,1,2,3,4] [--threads 2] [--runs 200]

1. Runs the demo's recipe (teacher -> distill -> prune -> QAT INT8 -> emit for host), reusing
   the stages already in --workdir.
2. Distillation against chance: the same student, from the same initial weights, trained with
   and without the teacher for each seed: is the gain larger than seed noise?
3. INT8 peers on the pruned FP32 student: ONNX Runtime's quantize_static with its defaults, and
   edgepack's QAT artifact; fresh-process p50 and top-1 on the 1,000 held-out digits.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import host, ort_default, write_report  # noqa: E402
from edgepack import demo, sample_data  # noqa: E402
from edgepack.devices import LocalDevice  # noqa: E402
from edgepack.data import Dataset  # noqa: E402
from edgepack.ir.spec import graph_inputs  # noqa: E402
from edgepack.ir.stats import format_count  # noqa: E402
from edgepack.models.mnist_cnn import MnistStudent, MnistTeacher  # noqa: E402
from edgepack.pipeline.engine import run  # noqa: E402
from edgepack.pipeline.measure import onnx_accuracy  # noqa: E402
from edgepack.training import checkpoint  # noqa: E402
from edgepack.training.distill import distill  # noqa: E402
from edgepack.training.data import as_loader  # noqa: E402
from edgepack.training.loop import TrainConfig, accuracy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "flow-bench")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "flow.md")
    args = ap.parse_args()
    load_before = os.getloadavg()
    recipe = demo.recipe()
    recipe["measure"] = {"runs": args.runs, "warmup": 20, "threads": args.threads}
    report = run(recipe, args.workdir, resume=True, progress=False)
    rows = report["rows"]

    teacher = checkpoint.load(MnistTeacher(), args.workdir / "00-teacher" / "model.pt")
    distill_cfg = {k: v for k, v in recipe["stages"][0]["distill"].items() if k not in ("baseline", "gate")}
    x, y = sample_data.mnist_arrays()
    split = sample_data.mnist_flow_splits(0, y)
    train, val, test = ((x[split[k]], y[split[k]]) for k in ("train", "val", "test"))
    gains = []
    for seed in map(int, args.seeds.split(",")):
        torch.manual_seed(seed)
        student = MnistStudent()
        alone = MnistStudent()
        alone.load_state_dict(student.state_dict())
        cfg = TrainConfig(**{**distill_cfg, "seed": seed})
        with_t = accuracy(distill(teacher, student, train, val, cfg).model, as_loader(test, 256))
        without = accuracy(distill(None, alone, train, val, cfg).model, as_loader(test, 256))
        gains.append((seed, with_t, without))
        print(f"seed {seed}: with teacher {with_t:.3f}, without {without:.3f}", flush=True)

    pruned = args.workdir / "02-prune" / "model.onnx"
    qat = Path(next(r for r in rows if r["stage"] == "emit")["artifact"])
    peers = {"pruned FP32 (ONNX Runtime)": pruned, "pruned + ORT quantize_static defaults": None,
             "pruned + edgepack QAT INT8": qat}
    with tempfile.TemporaryDirectory() as tmp:
        name = graph_inputs(onnx.load(str(pruned)))[0].name
        calib = Dataset({name: x[split["calib"]]}, source="mnist calib")
        peers["pruned + ORT quantize_static defaults"] = ort_default(pruned, Path(tmp) / "ort_default.onnx", calib)
        feeds = [{name: test[0][i:i + 1]} for i in range(8)]  # every peer keeps the pruned graph's input name
        peer_rows = []
        for label, path in peers.items():
            lat = LocalDevice().time("onnxruntime", path, feeds, threads=args.threads, warmup=20,
                            runs=args.runs, progress=False)["latency_ms"]
            peer_rows.append((label, path.stat().st_size, onnx_accuracy(path, *test), lat["p50"]))
    load_after = os.getloadavg()
    _write(args, rows, gains, peer_rows, load_before, load_after)
    return 0


def _write(args, rows, gains, peer_rows, load_before, load_after) -> None:
    teacher, final = rows[0], rows[-1]
    table = ["| stage | model | params | MACs | size KB | top-1 | drop (pt) | p50 ms |", "|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['stage']} | {r['model']} | {format_count(r['params'])} | {format_count(r['macs'])} | "
              f"{r['size_bytes'] / 1e3:.1f} | {100 * r['accuracy']:.2f}% | {100 * r['drop']:+.2f} | {r['p50_ms']:.3f} |"
              for r in rows]
    table += ["", "| seed | student with teacher | without | gain (pt) |", "|---|---|---|---|"]
    table += [f"| {s} | {100 * a:.2f}% | {100 * b:.2f}% | {100 * (a - b):+.2f} |" for s, a, b in gains]
    diffs = np.array([a - b for _, a, b in gains])
    table += ["", "| INT8 on the pruned student | size KB | top-1 | p50 ms |", "|---|---|---|---|"]
    table += [f"| {label} | {size / 1e3:.1f} | {100 * acc:.2f}% | {p50:.3f} |" for label, size, acc, p50 in peer_rows]
    verdicts = [
        f"- Final vs teacher FP32 ONNX Runtime: {teacher['macs'] / final['macs']:.1f}x fewer MACs "
        f"(goal >= 10x), {teacher['p50_ms'] / final['p50_ms']:.1f}x lower p50 (goal >= 4x), drop "
        f"{100 * (teacher['accuracy'] - final['accuracy']):.2f} points (goal <= 1).",
        f"- Distillation gain over {len(gains)} seeds: mean {100 * diffs.mean():+.2f}, min {100 * diffs.min():+.2f}, "
        f"max {100 * diffs.max():+.2f} points; positive in {int((diffs > 0).sum())} of {len(gains)}.",
    ]
    intro = (f"{host(args.threads).replace(', 224x224', ', 1x28x28')}. `python benchmarks/flow.py` on "
             f"{time.strftime('%Y-%m-%d')}: the demo's recipe; top-1 on the 1,000 held-out MNIST digits; p50 of "
             f"{args.runs} fresh-process runs (load average {load_before[0]:.1f} before, {load_after[0]:.1f} after).")
    write_report(args.out, "# Training-aware flow on MNIST (distill -> prune -> QAT -> emit)", intro,
                 "\n".join(table), verdicts)


if __name__ == "__main__":
    raise SystemExit(main())
