"""Each backend's settings, as strict data: what a profile's `runtimes[].options` may hold.

These models import nothing but pydantic, so loading a target profile validates its runtimes'
options without importing any runtime (OpenVINO or TVM take seconds to import). The registry
(`backends/__init__.py`) names each backend's model; `get_backend(name, options)` hands the
validated options to the backend.

Options describe the target (what to build for it and how its runtime should run an artifact);
where to cache or how long this machine may spend is the user's business, so environment
variables (e.g. EDGEPACK_TVM_TUNE_SECONDS) override what a profile says.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BackendOptions(BaseModel):
    """Base of every backend's options: unknown keys are errors (a typo would otherwise be a
    setting silently not applied), and options are frozen so that a profile stays hashable data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def for_host(self) -> BackendOptions:
        """These options when compiling for the machine that compiles (the 'host' profile):
        settings that pin another machine's CPU give way to detection. Unchanged by default."""
        return self


class OnnxRuntimeOptions(BackendOptions):
    """ONNX Runtime has no settings: its artifact is the canonical ONNX graph, and the session
    options that time it are fixed so every runtime is measured alike (`edgepack.runtime`)."""


class TfliteOptions(BackendOptions):
    """TFLite has no settings of its own: what it builds follows the profile's `quantization`
    (scheme, I/O dtype, float op types) and its runtime entry's `delegate`."""


# OpenVINO properties edgepack sets itself from other data; a profile must not contradict them.
_OV_OWNED = {
    "INFERENCE_NUM_THREADS": "threads come from the profile's benchmark section or --threads",
    "INFERENCE_PRECISION_HINT": "the artifact's precision decides it (fp32 means FP32 arithmetic)",
    "PERF_COUNT": "describe() turns it on to read per-layer precision",
}
_OV_TYPED = {"PERFORMANCE_HINT": "performance_hint", "NUM_STREAMS": "num_streams",
             "ENABLE_HYPER_THREADING": "enable_hyper_threading", "ENABLE_CPU_PINNING": "enable_cpu_pinning",
             "SCHEDULING_CORE_TYPE": "scheduling_core_type"}


class OpenVinoOptions(BackendOptions):
    """OpenVINO CPU plugin properties. They are recorded in the IR when it is emitted and applied
    by every load of it (a benchmark's fresh process, a copy on the device), so the artifact
    runs as the profile intends wherever it goes. Defaults are what edgepack has always used."""

    performance_hint: Literal["LATENCY", "THROUGHPUT"] = Field(
        "LATENCY", description="LATENCY: one request at a time on all threads, which is what edgepack "
        "times; THROUGHPUT: the plugin plans for many concurrent requests (a serving target)")
    num_streams: int | Literal["AUTO"] = Field(
        1, description="parallel inference streams; 1 gives one request every thread, 'AUTO' lets "
        "the performance hint decide (with THROUGHPUT: several streams)")
    enable_hyper_threading: bool | None = Field(
        None, description="use both logical cores of a physical core; None: the plugin's default "
        "(off for latency). SMT siblings share SIMD units, so it rarely helps conv nets")
    enable_cpu_pinning: bool | None = Field(
        None, description="pin inference threads to cores; None: the plugin's default. Pinning "
        "steadies latency on a dedicated device and hurts on a shared one")
    scheduling_core_type: Literal["ANY_CORE", "PCORE_ONLY", "ECORE_ONLY"] | None = Field(
        None, description="on hybrid CPUs (Alder Lake and later): which cores run inference; "
        "None: the plugin's default")
    properties: dict[str, str | int | float | bool] = Field(
        {}, description="other CPU plugin properties by their OpenVINO name (e.g. "
        "CPU_DENORMALS_OPTIMIZATION: true), checked against the plugin when the IR is emitted")

    @field_validator("num_streams")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"must be >= 1 or 'AUTO', got {v}")
        return v

    @field_validator("properties")
    @classmethod
    def _free_properties(cls, v: dict) -> dict:
        """Names only, in OpenVINO's spelling; never one edgepack sets or a typed field covers,
        so that one setting has one place."""
        for key in v:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
                raise ValueError(f"{key!r}: OpenVINO property names are UPPER_CASE (e.g. CPU_DENORMALS_OPTIMIZATION)")
            if key in _OV_OWNED:
                raise ValueError(f"{key} is set by edgepack: {_OV_OWNED[key]}")
            if key in _OV_TYPED:
                raise ValueError(f"{key}: use the option {_OV_TYPED[key]!r} instead")
        return v

    def plugin_config(self) -> dict[str, Any]:
        """The properties that differ from edgepack's defaults, by OpenVINO name: what the IR
        records (nothing for default options, so their artifacts are unchanged)."""
        given = self.model_dump(exclude_defaults=True)
        config = {key: given[field] for key, field in _OV_TYPED.items() if field in given}
        return {**config, **self.properties}


class TvmOptions(BackendOptions):
    """Apache TVM: what to compile for, and how much MetaSchedule tuning to spend on it.

    Tuning stops at whichever bound comes first: `tune_trials` (an amount, the same on a busy
    machine or an idle one) or `tune_seconds` (a wall-clock cap). With neither, no new tuning
    happens; tuning records already cached for the model and target still apply.
    $EDGEPACK_TVM_TUNE_SECONDS overrides `tune_seconds`, $EDGEPACK_TVM_CACHE the database's folder.
    """

    target: dict[str, Any] | None = Field(
        None, description="a tvm.target.Target dict (kind, mcpu, mtriple, mattr); None: detect the "
        "CPU of the machine that compiles. An mtriple of another architecture cross-compiles")
    tune_seconds: float = Field(
        0.0, ge=0, description="wall-clock budget for MetaSchedule tuning per model and target, "
        "across compiles (a budget already spent is not spent again); 0: no time-bounded tuning")
    tune_trials: int = Field(
        0, ge=0, description="number of candidate schedules MetaSchedule searches per model and "
        "target, across compiles; bounds tuning by amount, so results do not depend on machine "
        "load; 0: no trial bound")
    trials_per_round: int | None = Field(
        None, ge=1, description="candidates measured per kernel per search round; None: chosen "
        "from the budget (fewer in short budgets, so that every kernel gets some)")

    def for_host(self) -> TvmOptions:
        """Compiling for the machine itself: let TVM detect its exact CPU."""
        return self.model_copy(update={"target": None})
