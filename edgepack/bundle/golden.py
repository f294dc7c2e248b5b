"""Golden test vectors: a few inputs, the outputs the artifact itself computes for them, and the
tolerance a device's outputs must meet.

The npz files are written here rather than with np.savez: numpy stamps each zip member with the
current time, and two packagings of one output must give the same bytes. The keys are the device
worker's ("<feed>__<input name>", "<feed>__<output index>"), so the worker reads them as they are.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from edgepack.data import random_inputs
from edgepack.errors import EdgepackError
from edgepack.ir.spec import TensorSpec

FEEDS = 3  # golden inputs made when the output holds none
SEED = 0
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip header can say
# |got - expected| <= atol + rtol * |expected|, atol scaled by the output's largest magnitude:
# float32 differs across CPUs and thread counts in the last bits of long sums; int8 by a
# quantization step or two where kernels round differently (VNNI vs plain AVX2, NEON)
TOLERANCE = {"fp32": (1e-3, 1e-3), "fp16": (1e-2, 1e-2), "bf16": (5e-2, 5e-2), "int8": (5e-2, 5e-2)}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz np.load reads, byte-identical for identical arrays: members sorted, fixed times."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, buf.getvalue())


def read_feeds(path: Path, n: int | None = None) -> list[dict[str, np.ndarray]]:
    """Feeds from an npz with worker keys; `n` None: as many as the file holds."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise EdgepackError(f"{path}: not a readable .npz ({str(e)[:200]})") from None
    count = n if n is not None else 1 + max((int(k.split("__", 1)[0]) for k in arrays if "__" in k), default=-1)
    feeds = [{k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{i}__")} for i in range(count)]
    if not feeds or any(not f for f in feeds):
        raise EdgepackError(f"{path}: holds no feeds with keys '<feed>__<input name>'")
    return feeds


def outputs_npz(outputs: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{i}__{j}": np.asarray(y) for i, ys in enumerate(outputs) for j, y in enumerate(ys)}


def inputs_npz(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{i}__{k}": np.asarray(v) for i, f in enumerate(feeds) for k, v in f.items()}


def golden_inputs(out: Path, data, specs: list[TensorSpec]) -> tuple[list[dict], str]:
    """The compile's own inputs saved beside its report, else seeded random ones from the input
    specs; and a line saying which."""
    name = getattr(data, "inputs_file", None)
    if name and (out / name).is_file():
        feeds = read_feeds(out / name, getattr(data, "inputs_feeds", None))
        return feeds, f"the compile's first {len(feeds)} inputs ({data.source})"
    batch = specs[0].shape[0] if specs and specs[0].shape and isinstance(specs[0].shape[0], int) else 1
    sampled = random_inputs(specs, n=FEEDS, seed=SEED)
    feeds = list(sampled.batches(max(1, batch)))
    return feeds, f"seeded random inputs (numpy default_rng({SEED})): the output holds no stored inputs"


def tolerances(precision: str, names: list[str], outputs: list[list[np.ndarray]]) -> list[dict]:
    """Per output: atol scaled by its largest expected magnitude, rtol by the precision."""
    atol, rtol = TOLERANCE.get(precision, TOLERANCE["fp32"])
    result = []
    for j, name in enumerate(names):
        values = [np.abs(np.asarray(ys[j], dtype=np.float64)) for ys in outputs]
        scale = max((float(v.max(initial=0.0)) for v in values), default=0.0)
        result.append({"output": name, "atol": float(f"{atol * max(scale, 1e-6):.6g}"), "rtol": rtol})
    return result


def compare(expected: list[list[np.ndarray]], got: list[list[np.ndarray]], tols: list[dict]) -> list[dict]:
    """Per output: the largest difference over the feeds, the bound, and whether all values are within it."""
    rows = []
    for j, tol in enumerate(tols):
        worst, ok = 0.0, True
        for ys, gs in zip(expected, got):
            if j >= len(gs):
                return rows + [{"output": tol["output"], "max_abs_diff": None, "ok": False, "why": "missing"}]
            e = np.asarray(ys[j], dtype=np.float64)
            g = np.asarray(gs[j], dtype=np.float64)
            if g.size != e.size:
                return rows + [{"output": tol["output"], "max_abs_diff": None, "ok": False,
                                "why": f"shape {list(g.shape)}, expected {list(e.shape)}"}]
            diff = np.abs(g.reshape(e.shape) - e)
            worst = max(worst, float(np.max(diff, initial=0.0)))  # NaN propagates: never within
            ok = ok and bool(np.all(diff <= tol["atol"] + tol["rtol"] * np.abs(e)))
        rows.append({"output": tol["output"], "max_abs_diff": worst if np.isfinite(worst) else None, "ok": ok,
                     "atol": tol["atol"], "rtol": tol["rtol"]})
    return rows
