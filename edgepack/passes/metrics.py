"""Accuracy metrics for the accuracy budget: labelled (top1/top5) or fidelity to the FP32 model.

Every metric is a score where higher is better (mse is negated), so one drop formula serves all.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from edgepack.data import Dataset, check_labels
from edgepack.errors import EdgepackError, close_names, first_line

LABELLED = ("top1", "top5")
FIDELITY = ("agreement", "cosine", "mse")
METRICS = LABELLED + FIDELITY


def outputs(run, data: Dataset, batch: int, index: int = 0) -> np.ndarray:
    """Output `index` (in the graph's output order) of `run` over the whole set, stacked (N, ...)."""
    n = (len(data) // batch) * batch  # a fixed-batch graph cannot take a ragged last batch
    if n == 0:
        raise EdgepackError(f"{data.source}: fewer samples ({len(data)}) than one batch ({batch})")
    return np.concatenate([np.asarray(run(f)[index]).reshape(batch, -1) for f in data.take(n).batches(batch)])


@dataclass
class Evaluator:
    """score(run) for one metric on one data set; the FP32 outputs are computed once."""

    metric: str
    data: Dataset
    batch: int
    reference: np.ndarray | None = None  # FP32 outputs, for fidelity metrics
    user_fn: Callable | None = None
    output: int = 0  # which graph output is judged (the first by default)

    @classmethod
    def build(cls, metric: str, data: Dataset, batch: int, fp32_run, output: int = 0) -> "Evaluator":
        if ":" in metric:  # module:function, called as fn(run) -> float (higher is better)
            return cls(metric, data, batch, user_fn=_load_callable(metric), output=output)
        if metric not in METRICS:
            raise EdgepackError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)} or module:function")
        if metric in LABELLED and data.labels is None:
            raise EdgepackError(f"{data.source}: metric {metric} needs labels (a 'labels' array or labels.txt)")
        if metric in LABELLED:
            check_labels(data.labels, None, data.source)  # the class count is checked on the first score
        ref = outputs(fp32_run, data, batch, output) if metric in FIDELITY else None
        return cls(metric, data, batch, ref, output=output)

    def against(self, fp32_run) -> "Evaluator":
        """The same metric and data, fidelity judged against another FP32 model's outputs."""
        if self.metric not in FIDELITY:
            return self
        return replace(self, reference=outputs(fp32_run, self.data, self.batch, self.output))

    def score(self, run) -> float:
        if self.user_fn is not None:
            try:
                return float(self.user_fn(run))
            except Exception as e:
                raise EdgepackError(f"metric {self.metric} raised {type(e).__name__}: {first_line(e)}")
        out = outputs(run, self.data, self.batch, self.output)
        if self.metric in LABELLED:
            k = 1 if self.metric == "top1" else 5
            labels = check_labels(self.data.labels[: len(out)], out.shape[1], self.data.source)
            return float((np.argsort(-out, axis=1)[:, :k] == labels[:, None]).any(axis=1).mean())
        ref = self.reference
        if self.metric == "agreement":
            return float((out.argmax(1) == ref.argmax(1)).mean())
        if self.metric == "cosine":
            denom = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
            return float(np.mean(np.sum(out * ref, axis=1) / np.maximum(denom, 1e-12)))
        return -float(np.mean((out - ref) ** 2))  # mse, negated: higher is better


def parse_drop(text: str | float | None) -> tuple[float, bool] | None:
    """'0.01' -> (0.01, absolute); '1%' -> (0.01, relative); NaN, Inf and negatives are refused."""
    if text is None:
        return None
    s = str(text).strip()
    relative = s.endswith("%")
    try:
        value = float(s.rstrip("%")) / (100 if relative else 1)
    except ValueError:
        raise EdgepackError(f"--max-drop {text!r}: expected a number (absolute, e.g. 0.01) or a percentage (1%)")
    check_drop(value, text)
    return value, relative


def check_drop(value: float, text=None) -> None:
    """A budget is a finite number >= 0: NaN would pass every `drop > budget` test (all comparisons
    with NaN are false) and Inf accepts any loss, so both are refused rather than scored."""
    if not math.isfinite(value) or value < 0:
        raise EdgepackError(f"--max-drop must be a finite number >= 0, got {text if text is not None else value}")


def drop(base: float, score: float, relative: bool) -> float:
    d = base - score
    return d / abs(base) if relative and base else d


def _load_callable(spec: str):
    module, _, attr = spec.rpartition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise EdgepackError(f"metric {spec!r}: cannot import ({first_line(e)})")
    if not callable(fn):
        raise EdgepackError(f"metric {spec!r} is not callable")
    return fn


def output_index(names: list[str], wanted: str | None) -> int:
    """The position of the output the metric judges: the first unless one is named."""
    if wanted is None:
        return 0
    if wanted not in names:
        raise EdgepackError(f"--eval-output {wanted!r} is not a model output; outputs are {names}"
                            f"{close_names(wanted, names)}")
    return names.index(wanted)
