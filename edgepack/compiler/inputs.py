"""The data a compile runs on: calibration and evaluation sets, and feeds shaped for the graph."""

from __future__ import annotations

from dataclasses import dataclass

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


# without --eval, the INT8 judge scores fidelity on samples held out of the calibration set
HOLDOUT_SHARE = 4  # one sample in four is held out ...
HOLDOUT_MAX = 64  # ... up to 64 batches: ranking layers needs no more
MIN_JUDGED, MIN_CALIBRATION = 8, 16  # batches on each side; with fewer, nothing is held out
HOLDOUT_BLOCKS = 4


@dataclass(frozen=True)
class Split:
    """The calibration set cut in two: `calib` to calibrate on, `judged` to judge fidelity on.
    `held_out` lists the judged samples' index ranges in the set as given (inclusive); empty
    when the set was too small to cut and the judge reuses calibration inputs."""

    calib: Dataset
    judged: Dataset
    held_out: list[tuple[int, int]]

    def describe(self) -> dict:
        """The report's account of the split."""
        n = len(self.calib) + (len(self.judged) if self.held_out else 0)
        if not self.held_out:
            return {"samples": 0, "of": n, "ranges": [],
                    "note": f"only {n} calibration samples: too few to hold some out (at least "
                            f"{MIN_JUDGED + MIN_CALIBRATION} batches needed), so fidelity is judged on "
                            f"{len(self.judged)} of the inputs calibrated on"}
        return {"samples": len(self.judged), "of": n, "ranges": [list(r) for r in self.held_out],
                "note": f"fidelity judged on {len(self.judged)} samples held out of calibration (samples "
                        f"{', '.join(f'{lo}-{hi}' for lo, hi in self.held_out)}, counting from 0); calibrated "
                        f"on the other {len(self.calib)}"}


def hold_out(data: Dataset, batch: int) -> Split:
    """Cut `data` into disjoint calibration and judged samples, deterministically: a quarter of
    the whole batches (at most HOLDOUT_MAX) is held out, as HOLDOUT_BLOCKS contiguous blocks, one
    at the end of each quarter of the set. Spread, so a set sorted by class is judged across its
    classes; contiguous, so neighbours (crops or flips of one photo, named alike and so read
    together) mostly fall on one side. A set too small to leave MIN_JUDGED batches to judge and
    MIN_CALIBRATION to calibrate on is not cut: the judge reuses the first calibration inputs,
    which the split says."""
    batches = len(data) // batch
    judged = max(MIN_JUDGED, min(HOLDOUT_MAX, batches // HOLDOUT_SHARE))
    if batches - judged < MIN_CALIBRATION:
        return Split(data, data.take(min(batches, HOLDOUT_MAX) * batch), [])
    ranges = []
    for b in range(HOLDOUT_BLOCKS):
        size = judged // HOLDOUT_BLOCKS + (b < judged % HOLDOUT_BLOCKS)
        end = (b + 1) * batches // HOLDOUT_BLOCKS  # this quarter's last batch + 1
        if size:
            ranges.append(((end - size) * batch, end * batch - 1))
    held = np.zeros(len(data), bool)
    for lo, hi in ranges:
        held[lo:hi + 1] = True
    return Split(_subset(data, ~held), _subset(data, held), ranges)


def _subset(data: Dataset, mask: np.ndarray) -> Dataset:
    return Dataset({k: v[mask] for k, v in data.inputs.items()},
                   None if data.labels is None else data.labels[mask], data.source)
