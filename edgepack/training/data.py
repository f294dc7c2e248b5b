"""User data for training, as torch DataLoaders: arrays, (x, y) pairs, npz files or loaders as given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgepack.data import check_labels
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
    if x.dtype.kind in "fc" and len(x) and not np.isfinite(x).all():
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        raise EdgepackError(f"{src}: inputs hold NaN or Inf values in {int(bad.sum())} of {len(x)} samples "
                            f"(first: sample {int(np.argmax(bad))})")
    return np.ascontiguousarray(x, dtype=np.float32), check_labels(y, None, src)


def check_classes(model: torch.nn.Module, example: torch.Tensor, splits: dict) -> None:
    """Labels of every split against the model's class count (its output width on one example):
    cross-entropy would otherwise fail deep in training with a device assert, or, for a label
    inside the width but of the wrong set, train on nonsense. `splits`: name -> (x, y)."""
    was_training = model.training
    model.eval()  # one sample through BatchNorm in training mode is an error
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        model.train(was_training)
    out = out[0] if isinstance(out, (tuple, list)) else out
    classes = int(out.reshape(len(example), -1).shape[1])
    for name, (_, y) in splits.items():
        check_labels(y, classes, f"data.{name}")


def example_input(loader: DataLoader) -> torch.Tensor:
    """One sample with its batch dimension: what export and dependency tracing run on."""
    x, _ = next(iter(loader))
    return x[:1]
