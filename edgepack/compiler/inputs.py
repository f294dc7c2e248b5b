"""The data a compile runs on: calibration and evaluation sets, and feeds shaped for the graph."""

from __future__ import annotations

import numpy as np

from edgepack.data import Dataset, load_dataset, random_inputs
from edgepack.errors import EdgepackError
from edgepack.ir.spec import fixed_batch, graph_inputs, match_shapes, open_dims


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


def shapes_for(model, given: dict | None, data) -> tuple[dict | None, list[str]]:
    """The input shapes to compile for: the user's, and for inputs whose non-batch dims the graph
    leaves open, the shape of the calibration (or evaluation) samples, said in the notes. Without
    either, canonicalize refuses the open dims with a ready --input-shape line."""
    specs = graph_inputs(model)
    shapes = match_shapes([s.name for s in specs], given)
    wanting = [s for s in specs if s.name not in shapes and open_dims(s)]
    if not wanting or data is None:
        return shapes or None, []
    ds = dataset(data, specs)
    notes = []
    for spec in wanting:
        sample = tuple(int(d) for d in ds.inputs[spec.name].shape[1:])
        batch = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else 1
        shapes[spec.name] = (batch, *sample)
        notes.append(f"input {spec.name!r} {list(spec.shape)}: compiled for {list(shapes[spec.name])}, "
                     f"the shape of the samples in {ds.source}")
    return shapes, notes
