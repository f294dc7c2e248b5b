"""Phone bundles: what an Android loader needs beside model.tflite, as data for the manifest.

TFLite metadata (normalization and labels inside the .tflite, read by LiteRT support libraries)
would be the usual carrier, but no maintained metadata writer installs beside this stack
(checked with ai-edge-litert 2.3, TensorFlow 2.21, protobuf 7, numpy 2):
- tflite-support 0.4.4 (its last release, 2023) requires protobuf < 4, which would replace the
  protobuf 7 that TensorFlow and ai-edge-litert's generated code need; its compiled metadata
  module also needs libusb at import;
- its successor, mediapipe's `mediapipe.tasks.python.metadata.metadata_writers` (mediapipe
  0.10.35 to 1.2.3), installs without changing torch/TensorFlow/numpy, but importing it fails:
  it imports `mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`, which those wheels
  do not ship.
So the normalization and labels travel as data (`phone_input_spec`), in the terms TFLite
metadata uses (NormalizationOptions: (pixel - mean) / std on 0..255 pixel values), and the
bundle's manifest carries them; the app applies them (see the README's Kotlin snippet).
"""

from __future__ import annotations

from pathlib import Path

from edgepack.data import Preprocess
from edgepack.errors import EdgepackError

METADATA_NOTE = ("normalization and labels are in the manifest, not embedded as TFLite metadata: no maintained "
                 "metadata writer installs beside ai-edge-litert 2.3 / TensorFlow 2.21 (tflite-support pins "
                 "protobuf < 4; mediapipe's writer lacks its compiled module)")


def pixel_normalization(pre: Preprocess) -> dict:
    """edgepack's (x * scale - mean) / std as TFLite metadata's (pixel - mean') / std' on raw
    0..255 pixels: mean' = mean / scale, std' = std / scale (one value or one per channel, in
    the color order `pre.color`)."""
    return {"mean": [m / pre.scale for m in pre.mean], "std": [s / pre.scale for s in pre.std],
            "formula": "(pixel - mean) / std", "pixel_range": [0, 255], "color": pre.color}


def _tensor(entry: dict) -> dict:
    """One tensor of the .tflite as the app sees it (its own layout, dtype and quantization)."""
    out = {"name": entry["tflite_name"], "shape": list(entry["tflite_shape"]), "dtype": entry["tflite_dtype"]}
    if entry.get("quant"):
        out["quantization"] = {"scale": float(entry["quant"]["scale"]),
                               "zero_point": int(entry["quant"]["zero_point"])}
    return out


def phone_input_spec(artifact: str | Path, preprocess: Preprocess | dict | str | Path | None = None,
                     labels: list[str] | None = None) -> dict:
    """The manifest's "android" section for a .tflite: its input/output tensors as the
    Interpreter sees them (NHWC, with integer I/O's scale/zero-point), the image
    preprocessing (size, resize, color, normalization in TFLite metadata terms) and the labels,
    and why none of it is embedded in the model. One line (EdgepackError) when the labels do not
    match the output's class count."""
    from edgepack.backends.sessions.tflite_session import read_io

    artifact = Path(artifact)
    if not artifact.is_file():
        raise EdgepackError(f"{artifact}: no such file")
    io = read_io(artifact)
    spec = {"model": artifact.name, "inputs": [_tensor(e) for e in io["inputs"]],
            "outputs": [_tensor(e) for e in io["outputs"]], "metadata": METADATA_NOTE}
    if preprocess is not None:
        pre = Preprocess.load(preprocess)
        spec["preprocess"] = {"size": list(pre.size), "resize": pre.resize,
                              "normalization": pixel_normalization(pre)}
    if labels is not None:
        labels = [str(x) for x in labels]
        classes = spec["outputs"][0]["shape"][-1] if spec["outputs"] and spec["outputs"][0]["shape"] else None
        if classes is not None and classes != len(labels):
            raise EdgepackError(f"{artifact.name}: {len(labels)} labels for an output of {classes} classes")
        spec["labels"] = labels
    return spec
