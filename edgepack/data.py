"""Calibration and evaluation sets: load them from files, check them against the model.

Quantization calibrates on these samples and accuracy gates score on them, so a set that silently
does not match the model (wrong input name, a missing channel axis, floats fed to token ids) would
give a wrong artifact rather than an error. Every problem here is an `EdgepackError` with one line
naming the file, the input, and what was expected vs found.

Conventions (see calibration_data/README.md):
  * `.npz` keyed by input name, optional `labels` (or `y`) array;
  * `.npy` for a single-input model;
  * a folder of images (png/jpg/jpeg/bmp) with a `preprocess.yaml`, labels from `labels.txt`
    or from class-index subfolders `0/`, `1/`, ...;
  * a folder holding exactly one `.npz`/`.npy` is that file.
Arrays are shaped (N, *sample_shape): the model's first dim is the batch.
"""

from __future__ import annotations

import io
import math
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from edgepack.errors import EdgepackError, close_names, first_line
from edgepack.fsutil import atomic_write
from edgepack.ir.spec import TensorSpec, resolve_shapes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LABEL_KEYS = ("labels", "y")
PREPROCESS_FILE = "preprocess.yaml"
LABELS_FILE = "labels.txt"
MAX_ARRAY_BYTES = 2 << 30  # a calibration/eval set is held in memory whole; 2 GiB is far past any real one
MAX_IMAGE_PIXELS = 64_000_000  # per image, checked from the header before decoding (~190 MB as RGB)


# --------------------------------------------------------------------------- dataset


@dataclass
class Dataset:
    """Samples for a model: `inputs[name]` is shaped (N, *sample_shape); optional labels (N,)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    @property
    def names(self) -> list[str]:
        return list(self.inputs)

    def batches(self, batch_size: int = 1, with_labels: bool = False) -> Iterator:
        """Feed dicts {name: array[i:i+b]} (the last may be short); with labels: (feed, labels)."""
        if batch_size < 1:
            raise EdgepackError(f"batch size must be >= 1, got {batch_size}")
        for i in range(0, len(self), batch_size):
            feed = {k: v[i:i + batch_size] for k, v in self.inputs.items()}
            if with_labels:
                yield feed, None if self.labels is None else self.labels[i:i + batch_size]
            else:
                yield feed

    def take(self, n: int) -> Dataset:
        """The first n samples (all of them if there are fewer)."""
        return Dataset({k: v[:n] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[:n], self.source)

    def validate(self) -> None:
        """Checks that need no model: not empty, one sample count for all inputs and labels."""
        src = self.source
        if not self.inputs:
            raise EdgepackError(f"{src}: holds no input arrays")
        counts = {k: (v.shape[0] if v.ndim else None) for k, v in self.inputs.items()}
        for name, count in counts.items():
            if count is None:
                raise EdgepackError(f"{src}: input {name!r} is a scalar; expected an array "
                                    "shaped (N, *sample_shape)")
        first, n = next(iter(counts.items()))
        for name, count in counts.items():
            if count != n:
                raise EdgepackError(f"{src}: input {first!r} has {n} samples but {name!r} "
                                    f"has {count}")
        if n == 0:
            raise EdgepackError(f"{src}: the set is empty (0 samples)")
        if self.labels is not None and len(self.labels) != n:
            raise EdgepackError(f"{src}: {len(self.labels)} labels for {n} samples; "
                                "there must be one label per sample")
        for name, arr in self.inputs.items():
            _check_finite(src, name, arr)

    def check_against(self, specs: list[TensorSpec]) -> Dataset:
        """Check names, per-sample shapes and dtypes against the model's inputs.

        Returns the set cast to the model's dtypes (float64 -> float32 silently, ints to the
        model's int dtype); feeding floats to an integer input (token ids) is an error.
        """
        self.validate()
        src = self.source
        want = [s.name for s in specs]
        have = list(self.inputs)
        if sorted(want) != sorted(have):
            missing = [n for n in want if n not in have]
            extra = [n for n in have if n not in want]
            hint = (f" (rename {extra[0]!r} to {missing[0]!r}?)"
                    if len(missing) == 1 and len(extra) == 1 else "")
            raise EdgepackError(
                f"{src}: model inputs are {want}, the data has {have} "
                f"(missing: {missing or 'none'}; unexpected: {extra or 'none'}){hint}")
        return Dataset({s.name: _check_input(src, s, self.inputs[s.name]) for s in specs},
                       self.labels, self.source)


def _check_finite(src: str, name: str, arr: np.ndarray) -> None:
    """NaN/Inf samples are refused: calibration ranges and accuracy scores computed over them
    are NaN or garbage, and nothing downstream would say so."""
    if arr.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise EdgepackError(f"{src}: input {name!r} holds NaN or Inf values in {int(bad.sum())} of "
                            f"{len(arr)} samples (first: sample {first})")


def check_labels(labels, classes: int | None, src: str) -> np.ndarray:
    """Class labels as int64, refused unless they are integers in [0, classes): argsort/argmax
    never equal a label of 50, -3 or 2.5, so a wrong set would score quietly instead of failing.
    `classes` None checks only the dtype (the model's class count is not known yet)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        kind = f"{labels.dtype.name} values" if labels.ndim == 1 else f"an array of shape {list(labels.shape)}"
        raise EdgepackError(f"{src}: labels must be integer class indices, one per sample; got {kind}"
                            + (f" (e.g. {labels.ravel()[0]})" if labels.size else ""))
    if classes is not None and labels.size:
        bad = np.unique(labels[(labels < 0) | (labels >= classes)])
        if bad.size:
            shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
            raise EdgepackError(f"{src}: labels must be class indices in [0, {classes}) for a model with "
                                f"{classes} outputs; found {shown}")
    return labels.astype(np.int64, copy=False)


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_input(src: str, spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    """One input's per-sample shape and dtype against its spec; returns the cast array."""
    want = tuple(spec.shape[1:])
    got = tuple(arr.shape[1:])
    ok = len(want) == len(got) and all(
        not (isinstance(w, int) and w > 0) or w == g for w, g in zip(want, got))
    if not ok:
        hint = ""
        static = all(isinstance(w, int) and w > 0 for w in want)
        if static and sorted(want) == sorted(got):
            hint = " (same dims in another order: check the layout, e.g. NCHW vs NHWC)"
        elif static and int(np.prod(want)) == int(np.prod(got)):
            hint = f" (same number of values: reshape the samples to {_fmt(want)})"
        elif len(got) == len(want) - 1 and all(
                not (isinstance(w, int) and w > 0) or w == g for w, g in zip(want[1:], got)):
            hint = " (missing an axis: the first array dim is the sample count)"
        raise EdgepackError(
            f"{src}: input {spec.name!r} expects samples of shape {_fmt(want)} "
            f"(model shape {_fmt(spec.shape)}), got {_fmt(got)}{hint}")
    return _cast(src, spec, arr)


def _cast(src: str, spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    target = np.dtype(spec.dtype)
    if arr.dtype == target:
        return arr
    kind, tkind = arr.dtype.kind, target.kind
    if tkind == "f" and kind in "fiub":
        return arr.astype(target)
    if tkind in "iub" and kind in "iub":
        if tkind == "b":
            if arr.size and not np.isin(arr, (0, 1)).all():
                raise EdgepackError(f"{src}: input {spec.name!r} is bool; the data holds values "
                                    "other than 0/1")
            return arr.astype(target)
        info = np.iinfo(target)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise EdgepackError(
                f"{src}: input {spec.name!r} is {target.name}; the data's values "
                f"[{arr.min()}, {arr.max()}] do not fit it")
        return arr.astype(target)
    raise EdgepackError(
        f"{src}: input {spec.name!r} expects {target.name} (e.g. token ids), got {arr.dtype.name}; "
        f"save it as an integer array")


# --------------------------------------------------------------------------- preprocessing


class Preprocess(BaseModel):
    """How a folder of images becomes model input (torchvision-style by default).

    Pixels are scaled by `scale` (1/255 -> 0..1), then normalised as (x - mean) / std; mean and
    std are in the output channel order (BGR when color is BGR), one value or one per channel.
    """

    model_config = ConfigDict(extra="forbid")

    size: tuple[int, int]  # (H, W)
    resize: Literal["resize", "center_crop"] = "center_crop"
    mean: list[float] = [0.0]
    std: list[float] = [1.0]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR", "GRAY"] = "RGB"
    scale: float = 1 / 255
    dtype: str = "float32"

    @field_validator("size")
    @classmethod
    def _positive(cls, v):
        if min(v) <= 0:
            raise ValueError("size must be two positive ints (H, W)")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v):
        try:
            return np.dtype(v).name
        except TypeError:
            raise ValueError(f"unknown dtype {v!r}") from None

    @model_validator(mode="after")
    def _channels(self):
        c = 1 if self.color == "GRAY" else 3
        for key in ("mean", "std"):
            if len(getattr(self, key)) not in (1, c):
                raise ValueError(f"{key} needs 1 or {c} values for color {self.color}")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not be 0")
        return self

    @classmethod
    def load(cls, value) -> Preprocess:
        """From a Preprocess, a dict, or a path to a YAML file."""
        if isinstance(value, Preprocess):
            return value
        where = "preprocess"
        if isinstance(value, (str, Path)):
            where = str(value)
            from edgepack.schema import load_bounded_yaml, read_yaml_text

            try:
                value = load_bounded_yaml(read_yaml_text(Path(value), "preprocess")) or {}
            except yaml.YAMLError as e:
                raise EdgepackError(f"{where}: not valid YAML ({first_line(e)})") from None
        try:
            return cls.model_validate(value)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "preprocess"
            raise EdgepackError(f"{where}: {loc[:200]}: {err['msg'][:300]}") from None

    def apply(self, img) -> np.ndarray:
        """A PIL image -> one sample (C,H,W) or (H,W,C) in `dtype`."""
        from PIL import Image

        img = img.convert("L" if self.color == "GRAY" else "RGB")
        h, w = self.size
        if self.resize == "resize":
            img = img.resize((w, h), Image.BILINEAR)
        else:  # resize to cover size*256/224, then center-crop (torchvision Resize+CenterCrop)
            rh, rw = h * 256 / 224, w * 256 / 224
            s = max(rh / img.height, rw / img.width)
            nw, nh = max(w, round(img.width * s)), max(h, round(img.height * s))
            img = img.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - w) // 2, (nh - h) // 2
            img = img.crop((left, top, left + w, top + h))
        x = np.asarray(img, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        if self.color == "BGR":
            x = x[:, :, ::-1]
        x = (x * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(
            self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        out = np.dtype(self.dtype)
        if out.kind in "iu":
            info = np.iinfo(out)
            x = np.clip(np.rint(x), info.min, info.max)
        return np.ascontiguousarray(x.astype(out))


# --------------------------------------------------------------------------- loading


def load_dataset(path, input_specs: list[TensorSpec] | None = None,
                 preprocess=None) -> Dataset:
    """Load a calibration/evaluation set from `path` and, given the model's inputs, check it.

    `preprocess` (a Preprocess, dict or YAML path) is for image folders and wins over the
    folder's own preprocess.yaml.
    """
    p = Path(path)
    src = str(path)
    if not p.exists():
        raise EdgepackError(f"{src}: no such file or folder")
    if p.is_dir():
        ds = _load_dir(p, src, input_specs, preprocess)
    elif p.suffix.lower() == ".npz":
        ds = _load_npz(p, src, input_specs)
    elif p.suffix.lower() == ".npy":
        ds = _load_npy(p, src, input_specs)
    else:
        raise EdgepackError(
            f"{src}: unsupported data file; use an .npz keyed by input name, an .npy "
            "(single-input models) or a folder of images with a preprocess.yaml")
    if input_specs is not None:
        return ds.check_against(input_specs)
    ds.validate()
    return ds


def array_budget() -> int:
    """Bytes a data file may declare: MAX_ARRAY_BYTES, or half the memory available now if less
    (never below 256 MiB, so a busy machine still loads a normal set). Checked before reading,
    so a small file declaring a huge array is refused instead of allocated."""
    try:
        import psutil

        available = psutil.virtual_memory().available
    except Exception:  # no psutil, or no way to tell: the fixed bound alone
        return MAX_ARRAY_BYTES
    return int(min(MAX_ARRAY_BYTES, max(256 << 20, available // 2)))


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _declared_bytes(f, src: str, member: str, stored: int) -> int:
    """Bytes the .npy stream `f` declares, read from its header only; refuses object arrays,
    arrays over the budget and data shorter than declared (`stored`: bytes in the file)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        # version 3.0 differs from 2.0 only in allowing UTF-8 in the header
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = reader(f)
        stored -= f.tell()
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as e:
        raise EdgepackError(f"{src}: {member}not a valid .npy array ({first_line(e, 200)})") from None
    if dtype.hasobject:
        raise EdgepackError(f"{src}: {member}holds Python objects; object arrays are not supported "
                            "(save numbers, e.g. np.asarray(x, np.float32))")
    nbytes = math.prod(shape) * dtype.itemsize
    budget = array_budget()
    if nbytes > budget:
        raise EdgepackError(f"{src}: {member}declares a {_fmt(shape)} {dtype.name} array ({_gib(nbytes)}); "
                            f"refused above {_gib(budget)}: use fewer samples")
    if nbytes > stored:
        raise EdgepackError(f"{src}: {member}declares {_fmt(shape)} {dtype.name} ({nbytes:,} bytes) but "
                            f"holds {max(stored, 0):,}: the file is truncated")
    return nbytes


def _check_npy(p: Path, src: str) -> None:
    with open(p, "rb") as f:
        _declared_bytes(f, src, "", p.stat().st_size)


def _check_npz(p: Path, src: str) -> None:
    """Every member of an .npz checked by its declared shape and dtype, without reading data;
    the members together must fit the budget too. Non-array members are refused (np.load would
    read them whole as bytes)."""
    total = 0
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                member = f"member {info.filename[:100]!r} "
                if not info.filename.endswith(".npy"):
                    raise EdgepackError(f"{src}: {member}is not an .npy array")
                with z.open(info) as f:
                    total += _declared_bytes(f, src, member, info.file_size)
    except (OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:
        raise EdgepackError(f"{src}: not a valid .npz file ({first_line(e, 200)})") from None
    if total > array_budget():
        raise EdgepackError(f"{src}: its arrays need {_gib(total)} together; refused above "
                            f"{_gib(array_budget())}: use fewer samples")


def _read_npy(p: Path, src: str) -> np.ndarray:
    _check_npy(p, src)
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        raise EdgepackError(f"{src}: cannot read ({e}); object arrays are not supported") from None
    except OSError as e:
        raise EdgepackError(f"{src}: not a valid .npy file ({e})") from None


def _load_npy(p: Path, src: str, specs) -> Dataset:
    if specs is not None and len(specs) != 1:
        raise EdgepackError(
            f"{src}: an .npy holds one array but the model has {len(specs)} inputs "
            f"{[s.name for s in specs]}; use an .npz keyed by input name")
    name = specs[0].name if specs else "input"
    return Dataset({name: _read_npy(p, src)}, None, src)


def _load_npz(p: Path, src: str, specs) -> Dataset:
    _check_npz(p, src)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise EdgepackError(f"{src}: cannot read ({e}); object arrays are not supported") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise EdgepackError(f"{src}: not a valid .npz file ({e})") from None
    want = [s.name for s in specs] if specs is not None else []
    labels = None
    for key in LABEL_KEYS:
        if key in arrays and key not in want:
            labels = arrays.pop(key)
            break
    if labels is not None and labels.ndim == 0:
        raise EdgepackError(f"{src}: labels must be an array with one label per sample")
    # A single-input model takes a single array whatever its name.
    if len(want) == 1 and want[0] not in arrays and len(arrays) == 1:
        arrays = {want[0]: next(iter(arrays.values()))}
    return Dataset(arrays, labels, src)


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _load_dir(p: Path, src: str, specs, preprocess) -> Dataset:
    images = _image_files(p)
    classes = sorted((d for d in p.iterdir() if d.is_dir() and d.name.isdigit()
                      and _image_files(d)), key=lambda d: int(d.name))
    arrays = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in (".npz", ".npy"))
    if images or classes:
        if arrays:
            raise EdgepackError(f"{src}: holds both images and {arrays[0].name}; "
                                "keep one kind of data per folder")
        if images and classes:
            raise EdgepackError(f"{src}: holds images both at the top and in class folders "
                                f"({classes[0].name}/ ...); use one or the other")
        return _load_images(p, src, specs, preprocess, images, classes)
    if len(arrays) == 1:
        f = arrays[0]
        ds = _load_npz(f, str(f), specs) if f.suffix.lower() == ".npz" else _load_npy(
            f, str(f), specs)
        return ds
    if len(arrays) > 1:
        raise EdgepackError(f"{src}: holds {len(arrays)} .npz/.npy files "
                            f"({', '.join(a.name for a in arrays[:3])}); point at one of them")
    raise EdgepackError(f"{src}: the set is empty: no images ({'/'.join(IMAGE_SUFFIXES)}) "
                        "and no .npz/.npy file")


def _load_images(p: Path, src: str, specs, preprocess, images, classes) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    if specs is not None and len(specs) != 1:
        raise EdgepackError(f"{src}: an image folder feeds one input, the model has "
                            f"{len(specs)}: {[s.name for s in specs]}")
    if preprocess is None:
        if not (p / PREPROCESS_FILE).is_file():
            raise EdgepackError(
                f"{src}: an image folder needs a {PREPROCESS_FILE} (size, mean, std, layout, "
                "color) or a preprocess argument")
        preprocess = p / PREPROCESS_FILE
    pre = Preprocess.load(preprocess)

    labels = None
    if classes:
        files, lab = [], []
        for d in classes:
            fs = _image_files(d)
            files += fs
            lab += [int(d.name)] * len(fs)
        labels = np.asarray(lab, np.int64)
    else:
        files = images
        if (p / LABELS_FILE).is_file():
            lines = [ln.strip() for ln in (p / LABELS_FILE).read_text().splitlines()]
            try:
                labels = np.asarray([int(ln) for ln in lines if ln], np.int64)
            except ValueError as e:
                raise EdgepackError(f"{p / LABELS_FILE}: expected one integer per line ({e})") \
                    from None
    _check_image_set(src, pre, len(files))
    samples = []
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as img:  # reads the header only
                    _check_pixels(f, img.width, img.height)
                    samples.append(pre.apply(img))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise EdgepackError(f"{f}: image too large to decode (PIL's decompression-bomb check); "
                                f"refused above {MAX_IMAGE_PIXELS:,} pixels: downscale it first") from None
        except (UnidentifiedImageError, OSError) as e:
            raise EdgepackError(f"{f}: cannot read image ({first_line(e, 200)})") from None
    name = specs[0].name if specs else "input"
    return Dataset({name: np.stack(samples)}, labels, src)


def _check_pixels(f: Path, width: int, height: int) -> None:
    """Refuse an image by its header's size: decoding a bomb (a tiny PNG of 50000x50000) would
    take gigabytes before any check could run."""
    if width * height > MAX_IMAGE_PIXELS:
        raise EdgepackError(f"{f}: image is {width}x{height} ({width * height:,} pixels); refused above "
                            f"{MAX_IMAGE_PIXELS:,} pixels: downscale it first")


def _check_image_set(src: str, pre: Preprocess, n: int) -> None:
    """The stacked samples (n x preprocess size) must fit the array budget, known before decoding."""
    h, w = pre.size
    nbytes = n * h * w * (1 if pre.color == "GRAY" else 3) * np.dtype(pre.dtype).itemsize
    if nbytes > array_budget():
        raise EdgepackError(f"{src}: {n} images at size {h}x{w} need {_gib(nbytes)}; refused above "
                            f"{_gib(array_budget())}: use fewer images or a smaller preprocess size")


# --------------------------------------------------------------------------- random inputs


def random_inputs(specs: list[TensorSpec], n: int = 1, seed: int = 0,
                  shapes: dict | None = None) -> Dataset:
    """Synthetic inputs for profiling without data.

    Each input's shape is resolved from `shapes` (full model shapes, batch included), an unknown
    batch dim taken as 1; any other unknown dim is an error naming it (ir.spec.resolve_shapes). The set holds n feeds of that shape: N = n * batch rows, so
    `batches(batch)` yields exactly the resolved shape. Floats are standard normal; int inputs
    are token ids in [0, 100), except masks (ones), token types / segments (zeros) and
    position ids (0..L-1).
    """
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    names = [s.name for s in specs]
    unknown = [k for k in shapes if k not in names]
    if unknown:
        raise EdgepackError(f"input shape given for {unknown[0]!r}, which is not a model input "
                            f"{names}{close_names(unknown[0], names)}")
    inputs = {}
    resolved, _ = resolve_shapes(specs, shapes)
    for spec in specs:
        shape = resolved[spec.name]
        full = (n * shape[0], *shape[1:]) if shape else (n,)
        inputs[spec.name] = _random_array(spec, full, rng)
    return Dataset(inputs, None, "random")


def _random_array(spec: TensorSpec, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    name = spec.name.lower()
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return np.ones(shape, dtype)
    if "mask" in name:
        return np.ones(shape, dtype)
    if "token_type" in name or "segment" in name:
        return np.zeros(shape, dtype)
    if "position" in name and shape:
        return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
    if dtype.kind in "iu":
        return rng.integers(0, min(100, np.iinfo(dtype).max), shape).astype(dtype)
    raise EdgepackError(f"input {spec.name!r}: cannot make random data of dtype {dtype.name}")


# --------------------------------------------------------------------------- saving


def save_npz(path, inputs: dict[str, np.ndarray], labels: np.ndarray | None = None) -> Path:
    """Write an .npz in the loader's convention, atomically (temp file + os.replace)."""
    arrays = dict(inputs)
    if labels is not None:
        arrays["labels"] = labels
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(Path(path), buf.getvalue())
    return Path(path)
