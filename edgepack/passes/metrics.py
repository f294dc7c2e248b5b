"""Accuracy metrics for the accuracy budget: labelled (top1/top5) or fidelity to the FP32 model.

Every metric is a score where higher is better (mse is negated), so one drop formula serves all.
Beside the budget's metric, every judged model gets the same fidelity figures (`fidelity`):
top-1 agreement on all inputs, agreement where FP32 is not a near-tie, and the logit cosine. One
agreement figure alone misleads: on out-of-distribution photos it is dominated by inputs whose
FP32 top-1/top-2 logits are within a hair of each other, which any 8-bit rounding may flip.
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
# agreement_non_near_ties: top-1 agreement where FP32 is not a near-tie (all rows when every row is
# one), the figure a fidelity constraint bounds: a budget on plain agreement would spend its
# points on inputs any rounding flips
FIDELITY = ("agreement", "agreement_non_near_ties", "cosine", "mse")
METRICS = LABELLED + FIDELITY
# FP32 top-1 minus top-2 logit below which an input is a near-tie: on MobileNetV2 and the bundled
# photos, INT8's logit error is of this size, so a flip there says little about the model
NEAR_TIE_MARGIN = 0.25


def outputs(run, data: Dataset, batch: int, index: int = 0) -> np.ndarray:
    """Output `index` (in the graph's output order) of `run` over the whole set, stacked (N, ...)."""
    n = (len(data) // batch) * batch  # a fixed-batch graph cannot take a ragged last batch
    if n == 0:
        raise EdgepackError(f"{data.source}: fewer samples ({len(data)}) than one batch ({batch})")
    return np.concatenate([np.asarray(run(f)[index]).reshape(batch, -1) for f in data.take(n).batches(batch)])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, K) arrays: 1 where both rows are all zeros (a text
    detector's map of an image without text: the same answer), 0 where only one is."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)
    return np.where((na == 0) & (nb == 0), 1.0, cos)


def near_ties(reference: np.ndarray, margin: float = NEAR_TIE_MARGIN) -> np.ndarray:
    """Rows of `reference` (N, K) whose top-1 minus top-2 value is below `margin` (K >= 2)."""
    top2 = np.sort(reference, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) < margin


def fidelity(reference: np.ndarray, out: np.ndarray, margin: float = NEAR_TIE_MARGIN) -> dict:
    """How closely `out` follows `reference` (the FP32 model's outputs; both (N, K)): top-1
    agreement on all rows and on the rows where the reference is not a near-tie (and how many
    those are), and the mean cosine. With one column there is no top-1 to agree on: only the
    cosine is given."""
    figures = {"samples": len(reference), "cosine": float(np.mean(cosines(out, reference)))}
    if reference.shape[1] < 2:
        return figures
    same = out.argmax(1) == reference.argmax(1)
    clear = ~near_ties(reference, margin)
    return {**figures, "agreement": float(same.mean()), "near_tie_margin": margin,
            "non_near_ties": int(clear.sum()),
            "agreement_non_near_ties": float(same[clear].mean()) if clear.any() else None}


@dataclass
class Evaluator:
    """score(run) for one metric on one data set, and the fidelity figures beside it; the FP32
    outputs are computed once (whatever the metric: the fidelity figures need them too)."""

    metric: str
    data: Dataset
    batch: int
    reference: np.ndarray | None = None  # FP32 outputs
    user_fn: Callable | None = None
    output: int = 0  # which graph output is judged (the first by default)

    @classmethod
    def build(cls, metric: str, data: Dataset, batch: int, fp32_run, output: int = 0) -> "Evaluator":
        user_fn = None
        if ":" in metric:  # module:function, called as fn(run) -> float (higher is better)
            user_fn = _load_callable(metric)
        elif metric not in METRICS:
            raise EdgepackError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)} or module:function")
        elif metric in LABELLED and data.labels is None:
            raise EdgepackError(f"{data.source}: metric {metric} needs labels (a 'labels' array or labels.txt)")
        elif metric in LABELLED:
            check_labels(data.labels, None, data.source)  # the class count is checked on the first score
        evaluator = cls(metric, data, batch, user_fn=user_fn, output=output)
        return replace(evaluator, reference=evaluator.outputs(fp32_run))

    def against(self, fp32_run) -> "Evaluator":
        """The same metric and data, fidelity judged against another FP32 model's outputs."""
        return replace(self, reference=self.outputs(fp32_run))

    def outputs(self, run) -> np.ndarray:
        """The judged output of `run` on the data, (N, values): every metric reads this one."""
        return outputs(run, self.data, self.batch, self.output)

    def fidelity(self, run) -> dict:
        """The fidelity figures of `run` against the FP32 reference (see `fidelity`)."""
        return fidelity(self.reference, self.outputs(run))

    def assess(self, run) -> tuple[float, dict]:
        """(score, fidelity figures), running `run` over the data once for both (a user's metric
        runs it on its own as well)."""
        out = self.outputs(run)
        score = self._user_score(run) if self.user_fn is not None else self._score(out)
        return score, fidelity(self.reference, out)

    def score(self, run) -> float:
        if self.user_fn is not None:
            return self._user_score(run)
        return self._score(self.outputs(run))

    def _user_score(self, run) -> float:
        try:
            return float(self.user_fn(run))
        except Exception as e:
            raise EdgepackError(f"metric {self.metric} raised {type(e).__name__}: {first_line(e)}")

    def _score(self, out: np.ndarray) -> float:
        """The metric of outputs `out`."""
        if self.metric in LABELLED:
            k = 1 if self.metric == "top1" else 5
            labels = check_labels(self.data.labels[: len(out)], out.shape[1], self.data.source)
            return float((np.argsort(-out, axis=1)[:, :k] == labels[:, None]).any(axis=1).mean())
        ref = self.reference
        if self.metric in ("agreement", "agreement_non_near_ties"):
            same = out.argmax(1) == ref.argmax(1)
            clear = ~near_ties(ref) if self.metric != "agreement" and ref.shape[1] > 1 else np.ones(len(ref), bool)
            return float(same[clear].mean() if clear.any() else same.mean())
        if self.metric == "cosine":
            return float(np.mean(cosines(out, ref)))
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
