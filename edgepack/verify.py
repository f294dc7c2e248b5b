"""Parity: does a candidate (canonical graph, artifact) still compute what the source computed?

Non-finite outputs are never "equal": NaN compares false with everything, so a difference taken
over NaN outputs used to come out 0 and two all-NaN rows agreed on their argmax. Here any NaN or
Inf makes max_abs_diff/mean_abs_diff NaN or Inf, counts a top-1 disagreement for every row that
holds one, and is counted in `nonfinite` ({"reference": n, "candidate": m} values), present only
when some output is non-finite. report.json writes those NaN/Inf numbers as null (JSON has no
NaN); `nonfinite` says why they are null.
"""

from __future__ import annotations

import numpy as np


def compare_outputs(refs: list[list[np.ndarray]], gots: list[list[np.ndarray]]) -> dict:
    """Compare per-sample output lists. Cosine is the worst sample's; top-1 only for class scores."""
    diffs, cosines, agree, top1_n, bad = [], [], 0, 0, {"reference": 0, "candidate": 0}
    for ref_outs, got_outs in zip(refs, gots):
        if len(ref_outs) != len(got_outs):
            raise ValueError(f"output count differs: {len(ref_outs)} vs {len(got_outs)}")
        for r, g in zip(ref_outs, got_outs):
            r = np.asarray(r, dtype=np.float64)
            g = np.asarray(g, dtype=np.float64).reshape(r.shape)
            bad["reference"] += int(r.size - np.isfinite(r).sum())
            bad["candidate"] += int(g.size - np.isfinite(g).sum())
            with np.errstate(invalid="ignore", over="ignore"):
                diffs.append(np.abs(r - g).ravel())
                cosines.append(_cosine(r, g))
            if r.ndim == 2 and r.shape[1] > 1:  # (batch, classes): compare the predicted class
                finite = np.isfinite(r).all(1) & np.isfinite(g).all(1)  # a NaN row agrees with nothing
                agree += int(((r.argmax(1) == g.argmax(1)) & finite).sum())
                top1_n += r.shape[0]
    diff = np.concatenate(diffs) if diffs else np.zeros(0)
    result = {
        "samples": len(refs),
        "max_abs_diff": float(np.max(diff, initial=0.0)),  # np.max propagates NaN; Python's max() drops it
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "cosine_min": float(np.min(cosines)) if cosines else None,
    }
    if top1_n:
        result["top1_agreement"] = agree / top1_n
    if bad["reference"] or bad["candidate"]:
        result["nonfinite"] = bad
    return result


def _cosine(r: np.ndarray, g: np.ndarray) -> float:
    """Cosine of two outputs; NaN when either holds NaN/Inf (not 0/0 -> allclose -> 1)."""
    if not (np.isfinite(r).all() and np.isfinite(g).all()):
        return float("nan")
    denom = np.linalg.norm(r) * np.linalg.norm(g)
    return float(np.dot(r.ravel(), g.ravel()) / denom) if denom > 0 else float(np.allclose(r, g))


def measure_parity(reference, candidate, feeds: list[dict[str, np.ndarray]]) -> dict:
    """Run both callables on the same feeds and compare their outputs."""
    return compare_outputs([reference(f) for f in feeds], [candidate(f) for f in feeds])


# ops for which an infinite constant is a bound, not a poison: Max(-inf, x) is x, Clip to +inf clips
# nothing, Where/comparisons select or compare (magika's logits pass through Max(-inf, .))
INF_AS_BOUND = {"Max", "Min", "Clip", "Where", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"}


def nonfinite_weights(model) -> list[str]:
    """'name (n NaN, m Inf)' for each float initializer or Constant holding NaN, or holding Inf
    that feeds arithmetic: such a model computes NaN/Inf whatever it is fed, and every number
    measured from it would be meaningless. An Inf read only as a bound (INF_AS_BOUND) is fine."""
    from onnx import numpy_helper

    tensors = [(t.name, t.name, t) for t in model.graph.initializer]
    tensors += [(n.name or n.output[0], n.output[0], a.t) for n in model.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    readers: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.op_type)
    found = []
    for name, output, tensor in tensors:
        arr = numpy_helper.to_array(tensor)
        if arr.dtype.kind not in "fc" or np.isfinite(arr).all():
            continue
        nan = int(np.isnan(arr).sum())
        if not nan and readers.get(output) and readers[output] <= INF_AS_BOUND:
            continue
        found.append(f"{name!r} ({nan} NaN, {int(arr.size - nan - np.isfinite(arr).sum())} Inf)")
    return found
