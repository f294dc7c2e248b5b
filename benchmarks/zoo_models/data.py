"""Calibration and judged sets for each zoo model, with the model's own preprocessing.

Sets are .npz files keyed by input name in the model's dtypes, edgepack's convention: an input
whose shape starts with the batch (1, ...) is stored as (N, *shape[1:]); one that does not
(silero's state [2, 1, 128], its scalar sample rate) is stored as (N, *shape) and fed one sample
at a time (see feeds()). Built once into <cache>/data/<model>/ and reused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.zoo_models import sources
from benchmarks.zoo_models.registry import ZooModel

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- image helpers


def image_tensor(img, hw: tuple[int, int], mean=(0.0,), std=(1.0,), scale: float = 1 / 255, bgr: bool = False,
                 fit: str = "stretch", pad: float = 0.0) -> np.ndarray:
    """PIL image -> float32 CHW. fit "stretch" resizes to hw; "letterbox" keeps the aspect ratio
    and pads bottom/right with `pad` (raw pixel value); "height" scales to the height and pads the
    width on the right (PaddleOCR's text-line resize)."""
    from PIL import Image

    h, w = hw
    img = img.convert("RGB")
    if fit == "stretch":
        arr = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32)
    else:
        r = min(h / img.height, w / img.width) if fit == "letterbox" else h / img.height
        nw, nh = max(1, min(w, round(img.width * r))), max(1, min(h, round(img.height * r)))
        arr = np.full((h, w, 3), pad, np.float32)
        arr[:nh, :nw] = np.asarray(img.resize((nw, nh), Image.BILINEAR), dtype=np.float32)
    if bgr:
        arr = arr[..., ::-1]
    arr = (arr * scale - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if fit == "height":  # Paddle pads after normalising: the padding is 0 in model units
        nw = max(1, min(w, round(img.width * h / img.height)))
        arr[:, nw:] = 0.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def stack(images, **kw) -> np.ndarray:
    return np.stack([image_tensor(i, **kw) for i in images])


# --------------------------------------------------------------------------- per-model builders


def ocr_det(split: str) -> dict:
    images = sources.pages(split, 6) + sources.photos(split)[::3]
    return {"x": stack(images, hw=(320, 320), mean=(0.5,) * 3, std=(0.5,) * 3, bgr=True)}


def ocr_cls(split: str) -> dict:
    """Lines, every other one turned upside down (the classifier's two classes)."""
    lines = sources.lines(split, 40)
    lines = [im.rotate(180) if i % 2 else im for i, im in enumerate(lines)]
    return {"x": stack(lines, hw=(48, 192), mean=(0.5,) * 3, std=(0.5,) * 3, bgr=True, fit="height")}


def ocr_rec(split: str) -> dict:
    return {"x": stack(sources.lines(split, 40), hw=(48, 320), mean=(0.5,) * 3, std=(0.5,) * 3, bgr=True,
                       fit="height")}


def magika_features(head: bytes, tail: bytes, beg: int = 1024, end: int = 1024, pad: int = 256) -> np.ndarray:
    """Magika's model input for one file from its first and last 4,096-byte blocks (the whole file
    twice when it is smaller), per standard_v3_3/config.min.json (beg_size 1024, mid_size 0,
    end_size 1024, block_size 4096, padding_token 256): the first block stripped of leading
    whitespace, its first 1024 bytes padded on the right; the last block stripped of trailing
    whitespace, its last 1024 bytes padded on the left. Written here rather than imported: the
    magika package needs its own runtime dependencies to import."""
    head = head.lstrip()[:beg]
    tail = tail.rstrip()[-end:] if tail.rstrip() else b""
    out = np.full(beg + end, pad, np.int32)
    out[:len(head)] = np.frombuffer(head, np.uint8)
    if tail:
        out[beg + end - len(tail):] = np.frombuffer(tail, np.uint8)
    return out


def file_blocks(path: Path, block: int = 4096) -> tuple[bytes, bytes]:
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        head = fh.read(block)
        fh.seek(max(0, size - block))
        return head, fh.read(block)


def magika(split: str) -> dict:
    """Real files on this machine (calib: /usr/share, judged: Python's own folders)."""
    return {"bytes": np.stack([magika_features(*file_blocks(f)) for f in sources.files(split, 128)])}


def silero(split: str, limit: int = 64) -> dict:
    """576-sample windows (64 samples of context + 512 new, as silero's v5 wrapper feeds them) of
    one speaker's turns, with the LSTM state the FP32 model carries into each window."""
    import onnxruntime as ort

    from benchmarks.zoo_models.fetch import fetch
    from benchmarks.zoo_models.registry import get

    sess = ort.InferenceSession(str(fetch(get("silero_vad"))), providers=["CPUExecutionProvider"])
    xs, states = [], []
    for seg in sources.speaker_segments(split):
        audio = seg.astype(np.float32) / 32768.0
        state, context = np.zeros((2, 1, 128), np.float32), np.zeros(64, np.float32)
        for i in range(0, len(audio) - 512 + 1, 512):
            x = np.concatenate([context, audio[i:i + 512]])[None]
            xs.append(x[0])
            states.append(state)
            _, state = sess.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
            context = audio[i + 512 - 64:i + 512]
    pick = np.linspace(0, len(xs) - 1, min(limit, len(xs))).astype(int)
    return {"input": np.stack(xs)[pick], "state": np.stack(states)[pick],
            "sr": np.full(len(pick), 16000, np.int64)}


def oww_melspec(split: str) -> dict:
    """Half-second windows of one speaker's turns, as int16-valued floats (openWakeWord's input)."""
    wins = [seg[i:i + 8000] for seg in sources.speaker_segments(split) for i in range(0, len(seg) - 8000 + 1, 4000)]
    return {"input": np.stack(wins).astype(np.float32)}


def _mel_frames(split: str) -> list[np.ndarray]:
    """openWakeWord's mel frames (FP32 front end, its x/10 + 2 scaling) of each turn of one speaker."""
    import onnxruntime as ort

    from benchmarks.zoo_models.fetch import fetch
    from benchmarks.zoo_models.registry import get

    sess = ort.InferenceSession(str(fetch(get("oww_melspec"))), providers=["CPUExecutionProvider"])
    return [np.squeeze(sess.run(None, {"input": seg[None].astype(np.float32)})[0]) / 10 + 2
            for seg in sources.speaker_segments(split) if len(seg) >= 16000]


def oww_embedding(split: str) -> dict:
    wins = [m[i:i + 76] for m in _mel_frames(split) for i in range(0, len(m) - 76 + 1, 8)]
    return {"input_1": np.stack(wins)[..., None].astype(np.float32)}


def oww_mycroft(split: str) -> dict:
    """16-step sequences of speech embeddings (the FP32 embedding model over 76-frame windows, one
    every 8 frames), as openWakeWord feeds its classifiers."""
    import onnxruntime as ort

    from benchmarks.zoo_models.fetch import fetch
    from benchmarks.zoo_models.registry import get

    sess = ort.InferenceSession(str(fetch(get("oww_embedding"))), providers=["CPUExecutionProvider"])
    seqs = []
    for m in _mel_frames(split):
        wins = np.stack([m[i:i + 76] for i in range(0, len(m) - 76 + 1, 8)])[..., None].astype(np.float32)
        emb = sess.run(None, {"input_1": wins})[0].reshape(len(wins), 96)
        seqs += [emb[i:i + 16] for i in range(0, len(emb) - 16 + 1, 4)]
    return {"input_1": np.stack(seqs).astype(np.float32)}


def basic_pitch(split: str) -> dict:
    """2-second windows (43,844 samples at 22,050 Hz, half-overlapping) of one half of the recording."""
    from scipy.signal import resample_poly

    audio = resample_poly(sources.speech_halves(split).astype(np.float32) / 32768.0, 441, 320)
    wins = [audio[i:i + 43844] for i in range(0, len(audio) - 43844 + 1, 11025)]
    return {"serving_default_input_2:0": np.stack(wins)[..., None].astype(np.float32)}


def nudenet(split: str) -> dict:
    return {"images": stack(sources.photos(split), hw=(320, 320), fit="letterbox")}


def ddddocr_det(split: str) -> dict:
    images = sources.photos(split)[::2] + sources.pages(split, 4)
    return {"images": stack(images, hw=(416, 416), scale=1.0, bgr=True, fit="letterbox", pad=114.0)}


def layout(split: str) -> dict:
    return {"image": stack(sources.pages(split, 8), hw=(800, 608), mean=IMAGENET_MEAN, std=IMAGENET_STD, bgr=True)}


def orientation(split: str) -> dict:
    """Pages turned by 0/90/180/270 degrees in turn, and (fewer) photos."""
    images = [p.rotate(90 * (i % 4), expand=True) for i, p in enumerate(sources.pages(split, 12))]
    images += sources.photos(split)[::6]
    return {"x": stack(images, hw=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD)}


BUILDERS = {f.__name__: f for f in (ocr_det, ocr_cls, ocr_rec, magika, silero, oww_melspec, oww_embedding,
                                    oww_mycroft, basic_pitch, nudenet, ddddocr_det, layout, orientation)}


# --------------------------------------------------------------------------- files and feeds


def build_data(model: ZooModel, cache: Path | None = None, force: bool = False) -> dict[str, Path]:
    """{"calib": npz, "judged": npz} for the model (built once)."""
    from benchmarks.zoo_models.fetch import cache_dir

    folder = (cache or cache_dir()) / "data" / model.name
    out = {s: folder / f"{s}.npz" for s in sources.SPLITS}
    if not force and all(p.is_file() for p in out.values()):
        return out
    folder.mkdir(parents=True, exist_ok=True)
    for split, path in out.items():
        arrays = BUILDERS[model.data](split)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return out


def batch_first(shape: tuple) -> bool:
    return len(shape) > 0 and shape[0] == 1


def feeds(model: ZooModel, path: Path, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """One feed per sample, each input shaped as the registry says."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    n = len(next(iter(arrays.values())))
    n = min(n, limit) if limit else n
    return [{k: (v[i:i + 1] if batch_first(model.inputs[k]) else np.array(v[i]).reshape(model.inputs[k]))
             for k, v in arrays.items()} for i in range(n)]
