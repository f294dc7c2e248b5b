"""A bundle's manifest.json: what a device needs to run the artifact and how to tell it runs right.

Typed (pydantic) and versioned: MANIFEST_SCHEMA_VERSION changes when a reader would misread an
older manifest. The JSON Schema shipped in bundle/schemas/ (and copied into every bundle) is
what these models export; `python -m edgepack.bundle.manifest` rewrites it and a test checks that
it is in sync. Written with sorted keys and no timestamps of its own (only the report's), so the
same compile output always gives the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_SCHEMA_VERSION = 1
FORMAT = "edgepack-bundle"
SCHEMA_FILE = Path(__file__).with_name("schemas") / "manifest.schema.json"
JSON = dict[str, Any]
Where = Literal["host-cpu", "device", "emulated"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Quant(_Strict):
    """value = (integer - zero_point) * scale: how the artifact's own integer tensor maps to floats."""

    scale: float
    zero_point: int


class ArtifactTensor(_Strict):
    """The artifact's own tensor behind an I/O, where it differs from the ONNX view (TFLite:
    NHWC, integer I/O); the runner converts, a native app has to do the same."""

    name: str
    shape: list[int]
    dtype: str
    layout: str | None = None
    perm: list[int] | None = None  # ONNX layout -> artifact layout (numpy transpose axes)
    quant: Quant | None = None


class TensorInfo(_Strict):
    """One input or output as the runner takes or returns it (ONNX names, order and layout)."""

    name: str
    shape: list[int | str | None]
    dtype: str
    layout: str | None = None  # NCHW for a 4-D image tensor in ONNX convention; None: not an image
    artifact_tensor: ArtifactTensor | None = None


class Runtime(_Strict):
    backend: str
    package: str  # pip install PACKAGE
    tested_version: str | None  # what the golden outputs were computed with
    minimum_version: str | None
    minimum_reason: str
    arch: str  # "any" (portable) or the CPU architecture the artifact was built for
    session_module: str  # runner/<backend>_session.py


class ArtifactInfo(_Strict):
    path: str  # the file the runtime opens, inside the bundle
    files: list[str]  # it and its companions (weights, sidecars)
    precision: str
    size_bytes: int


class Preprocessing(_Strict):
    recorded: bool
    spec: JSON | None = None  # edgepack.data.Preprocess fields (size, resize, mean, std, layout, color, scale)
    note: str


class TargetInfo(_Strict):
    name: str
    sha256: str  # of the profile content below, as sorted-key JSON
    profile: JSON


class StageKey(_Strict):
    stage: str
    kind: str
    key: str


class Lineage(_Strict):
    source_name: str
    source_kind: str
    source_sha256: str
    edgepack_version: str
    compiled: str  # the compile report's `created`
    report_sha256: str  # report.json of the output packaged
    recipe: str | None = None  # name, when the output came from `edgepack run`
    recipe_key: str | None = None  # the run's key chained over the recipe's settings and inputs
    stages: list[StageKey] = []


class Measurement(_Strict):
    """One figure and where it was measured: this host's CPU, a device, or emulation (never latency)."""

    what: Literal["accuracy", "parity", "latency", "emulated_run", "device_run"]
    where: Where
    machine: str
    values: JSON
    note: str | None = None


class Tolerance(_Strict):
    output: str
    atol: float
    rtol: float


class Golden(_Strict):
    """Inputs and the outputs the artifact itself computed for them, to replay on a device.
    npz keys are the worker's: inputs "<feed>__<input name>", outputs "<feed>__<output index>"."""

    inputs: str
    outputs: str
    feeds: int
    origin: str  # where the inputs come from
    computed_on: str  # the device that computed the expected outputs
    tolerances: list[Tolerance]  # |got - expected| <= atol + rtol * |expected|, per output


class RunnerInfo(_Strict):
    entry: str  # python runner/run.py
    worker: str
    session: str
    requires: list[str]  # pip packages


class PhoneTensor(_Strict):
    """One tensor of the .tflite as an Android Interpreter sees it (its own layout and dtype)."""

    name: str
    shape: list[int]
    dtype: str
    quantization: Quant | None = None  # integer I/O: value = (q - zero_point) * scale


class PixelNormalization(_Strict):
    """TFLite metadata's NormalizationOptions terms: (pixel - mean) / std on 0..255 pixels."""

    mean: list[float]
    std: list[float]
    formula: str
    pixel_range: list[int]
    color: str  # channel order the mean and std are given in: RGB, BGR or GRAY


class PhonePreprocess(_Strict):
    size: list[int]  # H, W
    resize: str
    normalization: PixelNormalization


class Android(_Strict):
    """What an Android app needs beside model.tflite (devices/android.phone_input_spec)."""

    model: str
    inputs: list[PhoneTensor]
    outputs: list[PhoneTensor]
    preprocess: PhonePreprocess | None = None  # None: no preprocessing recorded
    labels: list[str] | None = None  # class names where known
    metadata: str  # why normalization and labels are here, not embedded in the .tflite


class Manifest(_Strict):
    format: Literal["edgepack-bundle"] = FORMAT
    schema_version: Literal[1] = MANIFEST_SCHEMA_VERSION
    name: str
    model: str
    backend: str
    artifact: ArtifactInfo
    runtime: Runtime
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    preprocessing: Preprocessing
    target: TargetInfo
    ops: JSON  # format-specific: ONNX opsets, op list and reduced-build config; TFLite ops and fallbacks
    lineage: Lineage
    measurements: list[Measurement]
    golden: Golden
    runner: RunnerInfo
    android: Android | None = None  # TFLite artifacts: what an Android loader needs
    files: dict[str, FileEntry]  # every file of the bundle but manifest.json, by POSIX path

    def dumps(self) -> str:
        """Deterministic JSON: sorted keys, fixed indent, trailing newline (no `android: null`
        in bundles that are not TFLite)."""
        data = self.model_dump(mode="json")
        if data.get("android") is None:
            data.pop("android", None)
        return dumps(data)


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"


def json_schema() -> JSON:
    return Manifest.model_json_schema(mode="serialization")


def write_schema(path: Path = SCHEMA_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(json_schema()))
    return path


if __name__ == "__main__":
    print(write_schema())
