"""Real raw material for the zoo's data: photos, text (rendered and scanned), file bytes, speech.

Each source is split in two disjoint halves: calibration and judged. Photos are split by photo
(a photo, its flip and its crop stay on one side), sentences by sentence, files by folder, speech
by speaker turn.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

SPLITS = ("calib", "judged")


# --------------------------------------------------------------------------- photos


@lru_cache(maxsize=1)
def _photo_files() -> dict[str, list[Path]]:
    """{photo name: [photo, flip, crop]} of edgepack's bundled real photos."""
    from edgepack import sample_data

    folder = sample_data.prepare_photos(sample_data.default_root() / "photos")["photos"]
    groups: dict[str, list[Path]] = {}
    for f in sorted(folder.glob("*.png")):
        groups.setdefault(f.stem.removesuffix("_flip").removesuffix("_crop"), []).append(f)
    return groups


def photos(split: str) -> list:
    """PIL RGB images of every other photo (calib: even, judged: odd), with their flips and crops."""
    from PIL import Image

    names = sorted(_photo_files())
    picked = names[SPLITS.index(split)::2]
    return [Image.open(f).convert("RGB") for n in picked for f in _photo_files()[n]]


# --------------------------------------------------------------------------- text


@lru_cache(maxsize=1)
def _sentences() -> list[str]:
    from edgepack import sample_data

    return sample_data.sentences()


def sentences(split: str, n: int) -> list[str]:
    """n real English sentences; calib from the first half of the list, judged from the second."""
    text = _sentences()
    half = len(text) // 2
    return (text[:half] if split == "calib" else text[half:])[:n]


def font(size: int):
    """DejaVu Sans, the font matplotlib's wheel ships (no system font is assumed)."""
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def text_line(text: str, size: int = 32, chars: int = 28):
    """One line of text (its first `chars` characters) rendered black on white, tightly cropped."""
    from PIL import Image, ImageDraw

    text = text[:chars]
    f = font(size)
    left, top, right, bottom = f.getbbox(text)
    img = Image.new("RGB", (right - left + 16, bottom - top + 12), "white")
    ImageDraw.Draw(img).text((8 - left, 6 - top), text, fill="black", font=f)
    return img


def page(texts: list[str], width: int = 640, height: int = 860, seed: int = 0):
    """A document page: a title and paragraphs of the given sentences, wrapped, in a few sizes."""
    import textwrap

    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    y = 30
    draw.text((40, y), texts[0][:30], fill="black", font=font(30))
    y += 60
    for t in texts[1:]:
        size = int(rng.choice([14, 16, 18]))
        for line in textwrap.wrap(t, width=int((width - 80) / (size * 0.55))):
            if y > height - 40:
                return img
            draw.text((40, y), line, fill="black", font=font(size))
            y += int(size * 1.5)
        y += size
    return img


def pages(split: str, count: int) -> list:
    """`count` rendered pages of real sentences, plus (judged only) skimage's scanned page and text."""
    from PIL import Image
    import skimage.data

    text = sentences(split, 12 * count)
    out = [page(text[i * 12:(i + 1) * 12], seed=i) for i in range(count)]
    if split == "judged":
        out += [Image.fromarray(skimage.data.page()).convert("RGB"), Image.fromarray(skimage.data.text()).convert("RGB")]
    return out


def scanned_lines() -> list:
    """Text lines cropped from skimage.data.page() (a real scanned page), found by the rows of
    dark pixels after Sauvola thresholding (the page is unevenly lit)."""
    from PIL import Image
    from skimage.filters import threshold_sauvola

    img = __import__("skimage.data", fromlist=["page"]).page()
    dark = img < threshold_sauvola(img, window_size=25)
    rows = dark.mean(1) > 0.02
    lines, start = [], None
    for y, on in enumerate(list(rows) + [False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            if y - start >= 6:
                y0, y1 = max(0, start - 3), min(img.shape[0], y + 3)
                lines.append(Image.fromarray(img[y0:y1]).convert("RGB"))
            start = None
    return lines


def lines(split: str, n: int) -> list:
    """Text-line crops: rendered real sentences; judged adds the scanned page's lines."""
    out = [text_line(t, size=28 + (i % 3) * 4) for i, t in enumerate(sentences(split, n))]
    return out + (scanned_lines() if split == "judged" else [])


# --------------------------------------------------------------------------- files (bytes)


def file_roots(split: str) -> list[Path]:
    """Calib: files under /usr/share; judged: the Python standard library and site-packages
    (disjoint folders, many file types: text, source, bytecode, shared objects, images, archives)."""
    if split == "calib":
        return [Path("/usr/share")]
    lib = Path(sys.base_prefix) / "lib"
    return [p for p in (lib, Path(sys.prefix) / "lib") if p.is_dir()]


def files(split: str, n: int, min_size: int = 8) -> list[Path]:
    """n files spread over many suffixes (at most n/16 of any one), in a stable order."""
    seen: dict[str, int] = {}
    picked: list[Path] = []
    cap = max(1, n // 16)
    for root in file_roots(split):
        for dirpath, dirnames, names in os.walk(root):
            dirnames.sort()
            for name in sorted(names):
                p = Path(dirpath) / name
                suffix = p.suffix.lower() or "<none>"
                if seen.get(suffix, 0) >= cap or not p.is_file() or p.is_symlink():
                    continue
                try:
                    if p.stat().st_size < min_size:
                        continue
                except OSError:
                    continue
                seen[suffix] = seen.get(suffix, 0) + 1
                picked.append(p)
                if len(picked) >= n:
                    return picked
    return picked


# --------------------------------------------------------------------------- speech


@lru_cache(maxsize=1)
def speech() -> tuple[np.ndarray, int, list[tuple[float, float, str]]]:
    """(int16 samples, rate, [(start s, end s, speaker)]) of the real two-speaker recording in the
    pyannote.audio wheel."""
    from scipy.io import wavfile

    from benchmarks.zoo_models.fetch import fetch_member
    from benchmarks.zoo_models.registry import AUDIO_MEMBERS, AUDIO_WHEEL

    rate, samples = wavfile.read(fetch_member(AUDIO_WHEEL, AUDIO_MEMBERS[0]))
    turns = []
    for line in fetch_member(AUDIO_WHEEL, AUDIO_MEMBERS[1]).read_text().splitlines():
        f = line.split()
        turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return samples.astype(np.int16), rate, turns


def speaker_segments(split: str) -> list[np.ndarray]:
    """The turns of one speaker (calib: the first speaker to talk, judged: the other), as int16."""
    samples, rate, turns = speech()
    speakers = sorted({t[2] for t in turns})
    who = speakers[SPLITS.index(split)]
    return [samples[int(a * rate):int(b * rate)] for a, b, s in turns if s == who]


def speech_halves(split: str) -> np.ndarray:
    """The first (calib) or second (judged) half of the recording."""
    samples, _, _ = speech()
    half = len(samples) // 2
    return samples[:half] if split == "calib" else samples[half:]
