"""Parity: does a candidate (canonical graph, artifact) still compute what the source computed?"""

from __future__ import annotations

import numpy as np


def compare_outputs(refs: list[list[np.ndarray]], gots: list[list[np.ndarray]]) -> dict:
    """Compare per-sample output lists. Cosine is the worst sample's; top-1 only for class scores."""
    max_abs, sum_abs, count, cosines, agree, top1_n = 0.0, 0.0, 0, [], 0, 0
    for ref_outs, got_outs in zip(refs, gots):
        if len(ref_outs) != len(got_outs):
            raise ValueError(f"output count differs: {len(ref_outs)} vs {len(got_outs)}")
        for r, g in zip(ref_outs, got_outs):
            r = np.asarray(r, dtype=np.float64)
            g = np.asarray(g, dtype=np.float64).reshape(r.shape)
            diff = np.abs(r - g)
            max_abs = max(max_abs, float(diff.max(initial=0.0)))
            sum_abs += float(diff.sum())
            count += diff.size
            denom = np.linalg.norm(r) * np.linalg.norm(g)
            cosines.append(float(np.dot(r.ravel(), g.ravel()) / denom) if denom > 0 else float(np.allclose(r, g)))
            if r.ndim == 2 and r.shape[1] > 1:  # (batch, classes): compare the predicted class
                agree += int((r.argmax(1) == g.argmax(1)).sum())
                top1_n += r.shape[0]
    result = {
        "samples": len(refs),
        "max_abs_diff": max_abs,
        "mean_abs_diff": sum_abs / max(count, 1),
        "cosine_min": min(cosines) if cosines else None,
    }
    if top1_n:
        result["top1_agreement"] = agree / top1_n
    return result


def measure_parity(reference, candidate, feeds: list[dict[str, np.ndarray]]) -> dict:
    """Run both callables on the same feeds and compare their outputs."""
    return compare_outputs([reference(f) for f in feeds], [candidate(f) for f in feeds])
