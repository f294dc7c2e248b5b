"""User data for training, as torch DataLoaders: arrays, (x, y) pairs, npz files or loaders as given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgepack.errors import EdgepackError


def as_loader(data, batch_size: int = 64, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader of (x, y) batches from a DataLoader, an (x, y) pair, an edgepack Dataset or a
    labelled .npz (one input array + `labels`)."""
    if isinstance(data, DataLoader):
        return data
    x, y = arrays(data)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y).long()),
                      batch_size=batch_size, shuffle=shuffle, generator=gen)


def arrays(data) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) numpy arrays from any accepted form."""
    from edgepack.data import Dataset, load_dataset

    if isinstance(data, DataLoader):  # evaluation in ONNX Runtime needs the arrays themselves
        xs, ys = zip(*data)
        return torch.cat(xs).numpy().astype(np.float32), torch.cat(ys).numpy().astype(np.int64)
    if isinstance(data, (str, Path)):
        data = load_dataset(data)
    if isinstance(data, Dataset):
        if data.labels is None or len(data.inputs) != 1:
            raise EdgepackError(f"{data.source}: training needs one input array and `labels`")
        return _typed(next(iter(data.inputs.values())), data.labels, data.source)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _typed(*data, "the (inputs, labels) pair")
    raise EdgepackError(f"cannot train on a {type(data).__name__}: pass a DataLoader, (x, y) arrays or a labelled .npz")


def _typed(x, y, src: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 inputs and int64 labels, as torch layers and cross-entropy take them (an .npz of
    float64 or uint8 pixels is common)."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise EdgepackError(f"{src}: inputs and labels differ in length: {len(x)} vs {len(y)}")
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.integer)):
        raise EdgepackError(f"{src}: training needs numeric inputs and integer class labels, "
                            f"got {x.dtype} and {y.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


def example_input(loader: DataLoader) -> torch.Tensor:
    """One sample with its batch dimension: what export and dependency tracing run on."""
    x, _ = next(iter(loader))
    return x[:1]
