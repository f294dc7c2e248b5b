"""Test helpers (imported by tests as `from helpers import ...`; fixtures stay in conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
REFERENCE_THREADS = 2
CONFIDENT = 0.5  # FP32 top-1 probability above which a top-1 flip means a real change
STEP_LINE = re.compile(r"^\[\s*\d+\.\d+s\] ")  # a progress line the CLI prints when stderr is not a terminal


class PinnedTiming:
    """A timing strategy with fixed verdicts: every ONNX Runtime graph with QDQ nodes takes
    `int8_ms`, any other `fp32_ms`. On the ~0.06 ms test CNNs the measured verdict flips with
    machine load; tests of what follows from a verdict inject this (others time for real).
    Runners that are not ONNX graphs (another runtime's artifacts) are timed for real."""

    def __init__(self, int8_ms: float, fp32_ms: float = 1.0):
        self.int8_ms, self.fp32_ms = int8_ms, fp32_ms
        self.runs = self.rounds = 0

    def __call__(self, runners: list, feeds) -> list[float]:
        from edgepack.passes.quantize import quantized_nodes
        from edgepack.runtime import DEFAULT_TIMING

        models = [getattr(r, "model", None) or _onnx_artifact(r) for r in runners]
        if any(m is None for m in models):
            return DEFAULT_TIMING(runners, feeds)
        return [self.int8_ms if quantized_nodes(m) else self.fp32_ms for m in models]


def _onnx_artifact(runner) -> onnx.ModelProto | None:
    """The graph an ONNX Runtime artifact's runner runs (None for other runtimes' artifacts)."""
    path = getattr(runner, "artifact", None)
    return onnx.load(str(path)) if path is not None and Path(path).suffix == ".onnx" else None


def run_cli(*args, cwd=None, timeout=1800) -> subprocess.CompletedProcess:
    """Run `edgepack ARGS` as a user would, in a subprocess. `timeout` only catches a hang: the
    work is bounded by amount (epochs, runs), and a machine busy with other jobs may take a
    multiple of the idle time (the demo's 600 s expired on loaded cores)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def message_lines(stderr: str) -> list[str]:
    """stderr without the timestamped progress lines: the errors and notes a user must read."""
    return [ln for ln in stderr.strip().splitlines() if not STEP_LINE.match(ln)]


# --------------------------------------------------------------------------- comparing logits

def logits(run, batches) -> np.ndarray:
    """run(feeds)[0] for each feed dict in `batches`, one row each."""
    return np.concatenate([np.asarray(run(f)[0]).reshape(1, -1) for f in batches])


def agreement(ref, got, mask=None) -> float:
    """Share of rows (of the rows in `mask`) with the same top-1 class."""
    same = ref.argmax(1) == got.argmax(1)
    return float(same[mask].mean() if mask is not None else same.mean())


def confident_mask(ref):
    """Rows where `ref` gives its top class at least CONFIDENT probability."""
    p = np.exp(ref - ref.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).max(1) >= CONFIDENT


def cosine(a, b):
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --------------------------------------------------------------------------- concurrent compiles

def compile_choices(kwargs: dict) -> dict:
    """Compile with pinned timing and return what the compile decided (not what it timed): a
    pool worker's entry point, so it lives here and returns plain data."""
    import edgepack

    r = edgepack.compile(**kwargs, progress=False, timing=PinnedTiming(int8_ms=0.5))
    q = r.get("quantization") or {}
    return {
        "selected": r["selected"]["backend"],
        "artifacts": [(a["backend"], a["precision"], a["sha256"], a["parity"], a.get("accuracy")) for a in r["artifacts"]],
        "decision": q.get("decision"), "format": q.get("format"), "int8_score": q.get("int8_score"),
        "kept_float": [k["node"] for k in q.get("kept_float", [])],
        "canonical_parity": r["canonical"]["parity"], "keys": sorted(r),
    }


def conv_relu(cin: int, cout: int, size: int) -> onnx.ModelProto:
    """A seeded Conv(3x3, same padding) + Relu graph: quick to emit, load and time in any runtime."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [cout, cin, 3, 3],
                           rng.standard_normal(cout * cin * 9).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, size, size])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# --------------------------------------------------------------------------- search

class PinnedLatency:
    """A search timing strategy with fixed answers: the compile's INT8 choices pinned
    (PinnedTiming), and each point's repeated p50s a function of its precision and pruning
    ratio only, with a fixed spread, so which points are feasible and which is chosen never
    depend on the machine's load. Picklable: pool workers and Ray tasks use it too."""

    MS = {"fp32": 1.0, "fp16": 0.8, "bf16": 0.7, "int8": 0.5}

    def __init__(self):
        self.compile_timing = PinnedTiming(int8_ms=0.5)

    def p50s(self, first: float, point: dict, figures: dict, rerun, repeats: int) -> list[float]:
        if "precision" not in point:  # a recipe search's point: its own p50, with the fixed spread
            return [first + 0.01 * (i % 3 - 1) for i in range(repeats)]
        ms = self.MS[point["precision"]] * (1.0 - 0.5 * (point.get("prune_ratio") or 0.0))
        return [ms + 0.01 * (i % 3 - 1) for i in range(repeats)]
