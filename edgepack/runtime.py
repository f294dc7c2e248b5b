"""In-process ONNX Runtime sessions, for the backend and for passes that evaluate candidate models.

(Artifacts are measured by edgepack.bench in a fresh process; this is for search loops.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from edgepack.errors import EdgepackError, first_line


def ort_session(model: onnx.ModelProto | str | Path, threads: int = 0, optimize: bool = True):
    """The one way edgepack opens ONNX Runtime: the shipped artifact and the search loops that
    choose it run under the same options (sequential, one inter-op thread, CPU provider), defined
    once in the session module that devices also run."""
    from edgepack.backends.sessions.onnxruntime_session import inference_session

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return inference_session(source, threads, optimize)
    except Exception as e:  # a graph a quantizer made that ONNX Runtime refuses is a failed candidate
        raise EdgepackError(f"ONNX Runtime cannot load the graph: {first_line(e)}") from None


class OrtRunner:
    def __init__(self, model: onnx.ModelProto, threads: int = 0, optimize: bool = True):
        self.model = model  # what it runs: a timing strategy may ask (tests pin INT8 vs FP32 by it)
        self.session = ort_session(model, threads, optimize)
        self.outputs = self.session.get_outputs()

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, feeds)
        except Exception as e:  # a kernel that fails on this graph: one line, as for loading
            raise EdgepackError(f"ONNX Runtime failed running the graph: {first_line(e)}") from None


def median_ms(run, feeds: dict[str, np.ndarray], runs: int = 30, warmup: int = 5) -> float:
    """In-process median latency of any runner (feeds -> outputs): for choices, not for reports
    (those are timed in a fresh process)."""
    for _ in range(warmup):
        run(feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def interleaved_ms(runners: list, feeds: dict[str, np.ndarray], rounds: int = 3, runs: int = 30) -> list[float]:
    """Each runner's fastest in-process median over `rounds` rounds taken in turn: on a shared
    machine one median per model flipped choices from one compile to the next; load only ever
    adds time, and interleaving spreads a burst of it over all of them."""
    best = [float("inf")] * len(runners)
    for _ in range(rounds):
        for i, run in enumerate(runners):
            best[i] = min(best[i], median_ms(run, feeds, runs))
    return best


class Timing(Protocol):
    """How candidates are timed against each other for a choice: (runners, feeds) -> ms each.
    Injected into the INT8 search and the per-runtime choice, so a caller (a test, a search
    that wants more rounds) swaps the strategy instead of patching functions."""

    def __call__(self, runners: list, feeds: dict[str, np.ndarray]) -> list[float]: ...


@dataclass(frozen=True)
class InterleavedTiming:
    """The default: each runner's fastest median over interleaved rounds (interleaved_ms)."""

    rounds: int = 3
    runs: int = 30

    def __call__(self, runners: list, feeds: dict[str, np.ndarray]) -> list[float]:
        return interleaved_ms(runners, feeds, self.rounds, self.runs)


DEFAULT_TIMING = InterleavedTiming()


def ort_runner(model: onnx.ModelProto, threads: int = 0, optimize: bool = True) -> OrtRunner:
    return OrtRunner(model, threads, optimize)


def predict(model: onnx.ModelProto | str | Path, x: np.ndarray) -> np.ndarray:
    """Top-1 class of each sample, one at a time (canonical graphs have batch 1)."""
    session = ort_session(model)
    name = session.get_inputs()[0].name
    return np.array([session.run(None, {name: x[i:i + 1]})[0].argmax() for i in range(len(x))])
