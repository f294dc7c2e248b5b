"""Typed reports: what `compile`, `profile` and `run` write to report.json.

Bundles, tracking, search and the registry all read reports, so their shape is a contract:
pydantic models with a `schema_version`, dumped with `to_json()` (field names are the ones
report.json always had, so existing readers keep working). Optional fields that are unset are
left out of the JSON rather than written as null, as before. Deep search evidence (per-kind
timings, accuracy steps) stays free-form JSON: it is read by people, not by code.
`python -m edgepack.report.schema` rewrites the JSON Schemas shipped in report/schemas/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_serializer

SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).with_name("schemas")
JSON = dict[str, Any]
T = TypeVar("T")
# an optional field that is left out of the JSON when unset (readers test `"key" in section`)
Opt = Annotated[T | None, Field(default=None, exclude_if=lambda v: v is None)]


class Section(BaseModel):
    """A report section: unknown keys are errors, and nothing callable can get in."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)

    def to_json(self) -> JSON:
        return self.model_dump(mode="json")


class Tensor(Section):
    name: str
    shape: list[int | str | None] | None
    dtype: str


class Parity(Section):
    """Outputs of a candidate against the source model's, on the same inputs.

    NaN/Inf outputs make the differences NaN/Inf (never 0): in memory they stay floats, in JSON
    (which has no NaN) they are written as null, and `nonfinite` counts the non-finite output
    values of each side ({"reference": n, "candidate": m}); it is present only when one is."""

    samples: int
    max_abs_diff: float | None
    mean_abs_diff: float | None
    cosine_min: float | None
    top1_agreement: Opt[float]
    nonfinite: Opt[dict[str, int]]

    @field_serializer("max_abs_diff", "mean_abs_diff", "cosine_min", when_used="json")
    def _finite_or_null(self, v: float | None) -> float | None:
        return v if v is None or math.isfinite(v) else None


class Fidelity(Section):
    """How closely a model's judged output follows the FP32 model's on the judged samples: top-1
    agreement on all of them, and on the `non_near_ties` whose FP32 top-1/top-2 margin is at least
    `near_tie_margin` (a flip of a near-tie says little), and the mean logit cosine. A one-value
    output has no top-1: cosine only."""

    samples: int
    cosine: float
    agreement: Opt[float]
    non_near_ties: Opt[int]
    agreement_non_near_ties: Opt[float]
    near_tie_margin: Opt[float]


class Latency(Section):
    first: float
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float


class Memory(Section):
    peak_rss: float
    rss_before_load: float
    model_rss_delta: float


class DeviceEnv(Section):
    """Where a device run happened (devices/probe.py's answer): enough to tell two runs apart."""

    model_config = ConfigDict(extra="allow")  # what a device can tell about itself varies

    arch: str  # platform.machine(): x86_64, aarch64
    system: str  # platform.platform()
    python: Opt[str]
    cpu: Opt[str]
    flags: Opt[list[str]]  # the CPU features that pick kernels (avx512_bf16, bf16, ...); absent: unreadable
    cores: Opt[int]
    governor: Opt[str]  # cpufreq scaling governor where readable
    temperature_c: Opt[float]  # hottest thermal zone where readable
    runtimes: dict[str, str | None] = {}  # runtime package -> version (None: not installed)


class DeviceRun(Section):
    """One artifact measured on one device (`profile --device`, `compile --device`), from the raw
    per-iteration samples it brought back. Cold load, first inference and warm runs are kept
    apart; an emulated device's figures are labelled so and are never latency."""

    device: str  # its name in devices.yaml, an ssh:// address, "local" or "qemu-aarch64"
    kind: Literal["local", "ssh", "qemu", "adb"]
    emulated: bool = False
    environment: Opt[DeviceEnv]
    runner: str = "worker"  # "worker" (the bundle's Python runner) or "benchmark_model" (LiteRT's binary)
    threads: int
    warmup: int  # warm-up runs done (until the timings settled, bounded)
    warmup_settled: Opt[bool]
    runs: int
    samples_ms: list[float]  # every timed run, in order
    # over samples_ms; `first` is the first inference. None: the runner brought back no
    # per-run samples (LiteRT's benchmark_model): its own aggregates are in summary_ms
    latency_ms: Opt[Latency]
    ci95_ms: Opt[list[float]]  # 95% confidence interval of the median (p50)
    cold_load_ms: Opt[float]  # opening the artifact in a fresh process
    first_ms: Opt[float]  # the first inference (also where there are no samples)
    memory_mb: Opt[Memory]
    memory_footprint_mb: Opt[dict[str, float]]  # benchmark_model's own figures: init, overall, peak
    summary_ms: Opt[dict[str, float]]  # benchmark_model's aggregates: count, first, min, max, avg, std, ...
    batch: Opt[int]
    throughput_per_s: Opt[float]
    op_profile: Opt[list[JSON]]  # per-op times where the runtime offers them, slowest first
    parity: Opt[Parity]  # against the host's reference outputs, computed on the device
    seconds: Opt[float]  # wall time of the whole round trip (push, runs, pull)
    note: Opt[str]


class FileInfo(Section):
    bytes: int
    sha256: str


class Artifact(Section):
    """One emitted artifact and what was measured of it."""

    backend: str
    precision: str
    path: str
    size_bytes: int
    sha256: str
    files: dict[str, FileInfo]
    emulated: bool = False
    unsupported_ops: list[str] = []
    notes: list[str] = []
    runtime: JSON = {}
    inputs: Opt[list[Tensor]]
    parity: Opt[Parity]
    accuracy: Opt[float]
    accuracy_drop: Opt[float]
    fidelity: Opt[Fidelity]  # against the source model, on the compile's judged samples
    emulated_run: Opt[JSON]
    # timing in a fresh process (None: not timed, e.g. run only on an emulated board)
    latency_ms: Latency | None = None
    load_ms: Opt[float]
    runtime_import_ms: Opt[float]
    throughput_per_s: Opt[float]
    memory_mb: Opt[Memory]
    runs: Opt[int]
    warmup: Opt[int]
    threads: Opt[int]
    batch: Opt[int]
    process: Opt[str]
    ci95_ms: Opt[list[float]]  # 95% confidence interval of the median (p50) of the timed runs
    devices: Opt[list[DeviceRun]]  # the same artifact measured on the devices asked for (--device)


class Source(Section):
    name: str
    kind: str
    path: str | None
    sha256: str
    params: int
    macs: int
    size_bytes: int | None
    inputs: list[Tensor]
    outputs: list[Tensor]


class Canonical(Section):
    model_config = ConfigDict(extra="allow")  # what canonicalize() reports grows with its steps

    opset: int
    parity: Opt[Parity]
    params: int
    macs: int
    op_histogram: dict[str, int]


class Target(Section):
    name: str
    description: str
    profile: Opt[JSON]


class DataInfo(Section):
    source: str
    samples_for_parity: Opt[int]
    # the first parity feeds, saved beside the report (`edgepack package` makes golden vectors of them)
    inputs_file: Opt[str]
    inputs_feeds: Opt[int]
    preprocess: Opt[JSON]  # how the image folder given as --calib became model input (its preprocess.yaml)


class HeldOut(Section):
    """Without --eval: the calibration samples held out for the judge (index ranges, inclusive,
    in the set's order), or why none were."""

    samples: int
    of: int
    ranges: list[list[int]]
    note: str


class Accuracy(Section):
    metric: str
    data: str
    samples: int
    source: float
    compressed_fp32: Opt[float]
    output: Opt[str]  # the graph output judged, when the model has several
    held_out: Opt[HeldOut]


class Pruning(Section):
    ratio: float
    mode: str
    channel_multiple: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    groups: int
    unprunable_groups: int
    channels_before: int
    channels_after: int
    channels_removed: int
    unprunable: list[JSON]
    notes: list[str]
    plan: Opt[str]


class Sparsity(Section):
    model_config = ConfigDict(extra="allow")

    mode: str
    sparsity: float
    layers: list[JSON]


class RuntimeChoice(Section):
    """Which graph one runtime got after the INT8 search, and the evidence for it."""

    chosen: str
    precision: str
    why: Opt[str]
    timings: Opt[list[JSON]]
    timing: Opt[str]


class FallbackRung(Section):
    """One way to an INT8 graph tried after a quantizer raised (passes.ladder)."""

    rung: str  # "onnxruntime: <rung>" or "NNCF's graph"
    error: Opt[str]  # its error's first line; absent for the rung that worked
    float_nodes: Opt[list[str]]  # the nodes rung "failing nodes float" left float


class QuantizerFallback(Section):
    """Present when onnxruntime's quantizer raised: the rungs tried in order, and which shipped."""

    rungs: list[FallbackRung]
    shipped: str | None  # the rung the INT8 graph came from; None when no rung produced one
    why: str  # one line


class Quantization(Section):
    """How INT8 was made (or why FP32 shipped): the search's decision and its evidence."""

    met: bool
    by: Opt[str]
    decision: Opt[Literal["int8", "fp32"]]
    format: Opt[str]
    scheme: Opt[JSON]
    calibration: Opt[JSON]
    quantizers: Opt[list[str]]  # the INT8 search's candidates by quantizer (--quantizer; default every one)
    metric: Opt[str]
    fp32_score: Opt[float]
    int8_score: Opt[float]
    fidelity: Opt[Fidelity]  # the search's pick against FP32, on the judged samples
    drop: Opt[float]
    max_drop: Opt[float]
    relative: Opt[bool]
    int8_layers: Opt[int]
    kept_float: Opt[list[JSON]]
    fp32_ms: Opt[float]
    int8_ms: Opt[float]
    timing: Opt[str]
    format_candidates: Opt[list[JSON]]
    accuracy_steps: Opt[list[JSON]]
    group_ranking: Opt[list[JSON]]
    speed: Opt[JSON]
    per_backend: Opt[dict[str, RuntimeChoice]]
    fallback: Opt[QuantizerFallback]
    # PTQ inside a flow: the precision that shipped and the mode, read by the stage table
    precision: Opt[str]
    mode: Opt[str]
    note: Opt[str]
    warning: Opt[str]


class Selected(Section):
    index: int
    backend: str
    reason: str


class Skipped(Section):
    backend: str
    reason: str


class Environment(Section):
    cpu: JSON
    os: str
    libraries: dict[str, str]


class Header(Section):
    """What every report starts with (one builder: report.header())."""

    schema_version: int = SCHEMA_VERSION
    edgepack_version: str
    command: str
    created: str
    environment: Environment


class Headline(Section):
    """The shipped artifact's figures, repeated at the top of the report for quick reading."""

    backend: Opt[str]
    precision: Opt[str]
    latency_ms: Latency | None = None
    load_ms: Opt[float]
    throughput_per_s: Opt[float]
    memory_mb: Opt[Memory]
    parity: Opt[Parity]


class CompileReport(Header, Headline):
    command: Literal["compile"] = "compile"
    source: Source
    canonical: Canonical
    target: Target
    data: DataInfo
    precision_requested: str
    artifacts: list[Artifact]
    notes: Opt[list[str]]
    pruning: Opt[Pruning]
    sparsity: Opt[Sparsity]
    accuracy: Opt[Accuracy]
    quantization: Opt[Quantization]
    skipped: Opt[list[Skipped]]
    selected: Selected
    output_dir: str

    def shipped(self) -> Artifact:
        return self.artifacts[self.selected.index]


class ProfileReport(Header, Headline):
    command: Literal["profile"] = "profile"
    target: Target
    data: DataInfo
    artifacts: list[Artifact]
    output_dir: str


class FlowRow(Section):
    """One row of the flow's table: a model measured on the flow's one yardstick."""

    stage: str
    model: str
    params: int
    macs: int
    size_bytes: int
    accuracy: float | None = None
    p50_ms: float | None = None
    p99_ms: Opt[float]
    seconds: Opt[float]
    drop: float | None = None
    gate: Opt[str]
    artifact: Opt[str]


class StageRecord(Section):
    """What a stage saved beside its model (stage.json, without its rows)."""

    kind: str
    key: str
    passed: bool
    gate: JSON | None
    gate_failures: list[str]
    details: JSON


class Stopped(Section):
    stage: str
    reasons: list[str]


class FlowReport(Header):
    command: Literal["run"] = "run"
    recipe: str
    target: str
    output_dir: str
    rows: list[FlowRow]
    stages: list[StageRecord]
    seconds: Opt[float]
    passed: bool = True
    stopped: Opt[Stopped]


REPORTS: dict[str, type[Header]] = {"compile": CompileReport, "profile": ProfileReport, "run": FlowReport}


def json_schema(command: str) -> JSON:
    return REPORTS[command].model_json_schema(mode="serialization")


def write_schemas(folder: Path = SCHEMA_DIR) -> list[Path]:
    """The JSON Schemas shipped with the package (a test checks they match the models)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for command in REPORTS:
        path = folder / f"{command}.schema.json"
        path.write_text(json.dumps(json_schema(command), indent=1, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_schemas():
        print(p)
