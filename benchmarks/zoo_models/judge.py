"""Fidelity of a compiled model to the FP32 source on the judged set, on one output.

Three figures, as issue 13 asks: top-1 agreement over every decision, agreement where FP32 is
not a near-tie, and the cosine of the raw outputs. A near-tie is a decision whose top-1/top-2
margin in FP32 is below 0.25 (in the output's own units: logits or probabilities), or, for a
thresholded output, a value within 0.125 of the threshold (the same margin between p and 1 - p).
"""

from __future__ import annotations

import numpy as np

from benchmarks.zoo_models.registry import View

MARGIN = 0.25


def _axis(view: View) -> int:
    """The view's axis in the stacked outputs (N, *output shape): a non-negative axis of the
    model's output is one further right."""
    return view.axis + 1 if view.axis >= 0 else view.axis


def _class_rows(a: np.ndarray, view: View) -> np.ndarray:
    """(decisions, classes): the class axis last, every other position a row."""
    a = np.moveaxis(a, _axis(view), -1)[..., view.start:view.stop]
    if a.size == 0:
        raise ValueError(f"the view {view} selects no decisions from outputs of shape {list(a.shape)}")
    return a.reshape(-1, a.shape[-1])


def decisions(ref: np.ndarray, out: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray] | None:
    """(same decision?, FP32 not a near-tie?) per decision, or None for a cosine-only view."""
    if view.kind == "cosine":
        return None
    if view.kind == "binary":
        r = np.moveaxis(ref, _axis(view), -1)[..., view.start:view.stop].ravel()
        o = np.moveaxis(out, _axis(view), -1)[..., view.start:view.stop].ravel()
        return (r > view.threshold) == (o > view.threshold), np.abs(r - view.threshold) >= MARGIN / 2
    r, o = _class_rows(ref, view), _class_rows(out, view)
    top2 = np.sort(r, axis=1)[:, -2:] if r.shape[1] > 1 else np.concatenate([r, np.zeros_like(r)], 1)
    return r.argmax(1) == o.argmax(1), (top2[:, -1] - top2[:, 0]) >= MARGIN


def fidelity(ref: np.ndarray, out: np.ndarray, view: View) -> dict:
    """{"agree", "agree_clear", "clear", "decisions", "cosine", "cosine_min"} of `out` against `ref`
    (both (N, *output shape): one judged output per sample). Agreement keys are None for cosine-only
    views; an empty selection of decisions is an error, never a silent pass."""
    ref = np.asarray(ref, np.float64)
    out = np.asarray(out, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"judged output shape {list(out.shape)} differs from FP32's {list(ref.shape)}")
    a, b = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, (a * b).sum(1) / np.maximum(na * nb, 1e-30))
    res = {"cosine": float(cos.mean()), "cosine_min": float(cos.min()), "agree": None, "agree_clear": None,
           "clear": None, "decisions": None}
    d = decisions(ref, out, view)
    if d is not None:
        same, clear = d
        if same.size == 0:
            raise ValueError(f"the view {view} selects no decisions from outputs of shape {list(ref.shape[1:])}")
        res.update(agree=float(same.mean()), clear=int(clear.sum()), decisions=int(same.size),
                   agree_clear=float(same[clear].mean()) if clear.any() else None)
    return res
