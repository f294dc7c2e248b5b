"""Accuracy of any runner (source model, canonical graph, artifact) on a labelled set."""

from __future__ import annotations

import numpy as np

from edgepack.data import Dataset
from edgepack.errors import EdgepackError

METRICS = ("top1", "top5")


def evaluate(run, data: Dataset, batch: int, metric: str = "top1") -> float:
    """Fraction of samples whose label is in the top-k of the first output."""
    if metric not in METRICS:
        raise EdgepackError(f"unknown metric {metric!r}; available: {', '.join(METRICS)}")
    if data.labels is None:
        raise EdgepackError(f"{data.source}: metric {metric} needs labels (a 'labels' array or labels.txt)")
    k = 1 if metric == "top1" else 5
    hits = 0
    n = (len(data) // batch) * batch  # a fixed-batch graph cannot take a ragged last batch
    if n == 0:
        raise EdgepackError(f"{data.source}: fewer samples ({len(data)}) than one batch ({batch})")
    for start, feeds in zip(range(0, n, batch), data.take(n).batches(batch)):
        scores = np.asarray(run(feeds)[0]).reshape(batch, -1)
        topk = np.argsort(-scores, axis=1)[:, :k]
        hits += int((topk == data.labels[start:start + batch, None]).any(axis=1).sum())
    return hits / n
