"""The data a compile runs on: calibration and evaluation sets, and feeds shaped for the graph."""

from __future__ import annotations

import numpy as np

from edgepack.data import Dataset, load_dataset, random_inputs
from edgepack.errors import EdgepackError
from edgepack.ir.spec import fixed_batch


def dataset(data, specs) -> Dataset | None:
    """A path to load, or a Dataset already in memory (the pipeline's splits), checked against the inputs."""
    if isinstance(data, Dataset):
        return data.check_against(specs)
    return load_dataset(data, specs) if data else None


def feeds(data: Dataset | None, specs, n: int) -> list[dict[str, np.ndarray]]:
    """Up to `n` batches shaped like the model's inputs: real data when given, seeded random otherwise."""
    batch = fixed_batch(specs)
    if data is None:
        data = random_inputs(specs, n=n * batch, seed=0)
    whole = min(n, len(data) // batch) * batch  # a fixed-batch graph cannot take a short last batch
    if not whole:
        raise EdgepackError(f"{data.source}: {len(data)} samples, fewer than the model's batch of {batch}")
    return list(data.take(whole).batches(batch))
