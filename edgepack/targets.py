"""Target profiles: every hardware-dependent choice, as validated data.

Profiles live in `targets/*.yaml`. Code reads a profile's fields and never asks which target it
is, so adding hardware means adding a YAML file. The schema is strict (unknown fields, bad enum
values and unknown ONNX op types are errors) because a typo in a profile would otherwise silently
change what gets compiled.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# The registry module is light (names and options models only; runtimes load on first use).
from edgepack.backends import REGISTRY, options_model, unknown_backend
from edgepack.backends.options import BackendOptions
from edgepack.errors import EdgepackError, close_names
from edgepack.schema import condense, load_yaml_model

IntDtype = Literal["int8", "uint8"]


@functools.cache
def _onnx_op_types() -> frozenset[str]:
    import onnx.defs  # ~0.1 s; only needed when a profile is validated

    return frozenset(s.name for s in onnx.defs.get_all_schemas_with_history())


def _check_op_types(ops: list[str]) -> list[str]:
    """Op lists use ONNX op-type names; an unknown name is a typo that would hide a mismatch."""
    known = _onnx_op_types()
    for op in ops:
        if op not in known:
            raise ValueError(f"{op!r} is not an ONNX op type{close_names(op, known)}")
    if len(set(ops)) != len(ops):
        raise ValueError("lists an op type twice")
    return ops


def _lower_flags(flags: Any) -> Any:
    """/proc/cpuinfo flags are lowercase; accept 'AVX2' in a profile rather than never matching."""
    return [f.lower() for f in flags] if isinstance(flags, list) else flags


OpTypes = Annotated[list[str], AfterValidator(_check_op_types)]
CpuFlags = Annotated[list[str], BeforeValidator(_lower_flags)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cpu(_Strict):
    """Which CPUs the profile fits; used to match the host and to refuse impossible profiles."""

    arch: Literal["x86_64", "aarch64", "any"]
    requires_all: CpuFlags = []
    requires_any: CpuFlags = []
    # False where the profile's compute is not this CPU (an NPU), so the host can never be it.
    host_match: bool = True


class WeightQuant(_Strict):
    dtype: IntDtype
    per_channel: bool
    symmetric: bool


class ActivationQuant(_Strict):
    dtype: IntDtype
    symmetric: bool


class Quantization(_Strict):
    """How INT8 is done when INT8 is chosen; what the target's kernels are fast at."""

    format: Literal["qdq", "qoperator"] = "qdq"
    weights: WeightQuant
    activations: ActivationQuant
    # 7-bit weights: avoids int16 saturation in u8*s8 pair-adds on x86 without VNNI.
    reduce_range: bool
    calibration: Literal["minmax", "entropy", "percentile"]
    op_types: OpTypes = Field(min_length=1)
    keep_float_op_types: OpTypes = []
    # Non-float I/O means full-integer models, as NPUs that cannot run float at all require.
    io_dtype: Literal["float32", "int8", "uint8"] = "float32"

    @model_validator(mode="after")
    def _consistent(self) -> Quantization:
        both = sorted(set(self.op_types) & set(self.keep_float_op_types))
        if both:
            raise ValueError(f"op types both quantized and kept float: {', '.join(both)}")
        if self.io_dtype != "float32" and self.keep_float_op_types:
            raise ValueError(
                "io_dtype is integer (a full-integer model), so keep_float_op_types must be empty"
            )
        return self


class Runtime(_Strict):
    """One runtime the target deploys to, the ops it can run (reported, never hidden), and its
    backend's settings for this target (validated by the backend's options model)."""

    backend: str  # a name in the backend registry (edgepack.backends.REGISTRY)
    delegate: str | None = None
    supported_ops: OpTypes | Literal["all"]
    notes: str = ""
    # built by a plain compile (no --backend); the fastest within the budget ships. A profile
    # flagging none builds its first runtime only.
    default: bool = False
    options: SerializeAsAny[BackendOptions] = Field(default=None, validate_default=True)

    @field_validator("backend")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in REGISTRY:
            raise ValueError(unknown_backend(v))
        return v

    @field_validator("options", mode="before")
    @classmethod
    def _backend_options(cls, v: Any, info: ValidationInfo) -> Any:
        """The raw mapping becomes the backend's own options model, so a bad key or value fails
        when the profile loads, naming the field, not when (or if) the backend reads it."""
        name = info.data.get("backend")
        if name is None:  # the backend name itself is wrong: that is the error to report
            return BackendOptions()
        model = options_model(name)
        if isinstance(v, model):
            return v
        try:
            return model.model_validate({} if v is None else v)
        except ValidationError as e:
            raise ValueError(f"{name} options: {condense(e, model)}") from None

    @field_validator("supported_ops", mode="before")
    @classmethod
    def _all_or_list(cls, v: Any) -> Any:
        # One clear message instead of pydantic's two (one per union member).
        if v == "all" or (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            return v
        raise ValueError(f"must be 'all' or a list of ONNX op types, got {v!r}")


class Pruning(_Strict):
    # Pruned channel counts round to this so SIMD lanes / MAC arrays stay full.
    channel_multiple: int = Field(ge=1)


class Benchmark(_Strict):
    # the same ranges the command line and BenchSettings accept (compiler.request.BENCH_LIMITS)
    threads: int = Field(ge=0, le=4096)  # 0 = all physical cores
    warmup: int = Field(ge=0, le=1_000_000)
    runs: int = Field(ge=1, le=100_000_000)


class TargetProfile(_Strict):
    name: str
    description: str
    schema_version: Literal[1] = 1
    cpu: Cpu
    quantization: Quantization
    precision: Literal["fp32", "fp16", "int8"]  # what the target rewards by default
    runtimes: list[Runtime] = Field(min_length=1)  # in order of preference
    pruning: Pruning
    benchmark: Benchmark
    derived_from: str | None = None  # set by detect_host(); None for profiles read from files

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: Any) -> Any:
        """Profiles written before backends owned their settings had a top-level `tvm` section."""
        if isinstance(data, dict) and "tvm" in data:
            raise ValueError("tvm: this section moved into the tvm runtime's options "
                             "(runtimes: - backend: tvm, options: {target: ...})")
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", v):
            raise ValueError(f"{v!r} must be lowercase letters, digits, '.', '_' or '-'")
        if v == "host":
            raise ValueError("'host' is reserved for the detected host profile")
        return v

    @field_validator("runtimes")
    @classmethod
    def _unique_backends(cls, v: list[Runtime]) -> list[Runtime]:
        backends = [r.backend for r in v]
        if len(set(backends)) != len(backends):
            raise ValueError(f"each backend may appear once, got {backends}")
        return v

    @property
    def backends(self) -> list[str]:
        return [r.backend for r in self.runtimes]

    @property
    def default_backends(self) -> list[str]:
        """What a compile without --backend builds: the runtimes flagged `default`, else the first."""
        return [r.backend for r in self.runtimes if r.default] or self.backends[:1]

    def runtime(self, backend: str) -> Runtime:
        """The runtime entry for `backend`; an EdgepackError if the target does not deploy to it."""
        for r in self.runtimes:
            if r.backend == backend:
                return r
        raise EdgepackError(
            f"target {self.name!r} has no runtime {backend!r}"
            f"{close_names(backend, self.backends)}; it has: {', '.join(self.backends)}"
        )

    def backend_options(self, backend: str) -> BackendOptions:
        """The settings this target gives `backend` (its runtime entry's validated options); the
        backend's defaults when the target does not list it, e.g. a runtime asked for explicitly.
        Pass them on: `get_backend(backend, profile.backend_options(backend))`."""
        for r in self.runtimes:
            if r.backend == backend:
                return r.options
        return options_model(backend)()

    def unsupported_ops(self, op_types: Iterable[str], backend: str) -> list[str]:
        """Op types `backend` cannot run on this target, sorted; [] when it runs all."""
        supported = self.runtime(backend).supported_ops
        if supported == "all":
            return []
        return sorted(set(op_types) - set(supported))

    def effective_threads(self) -> int:
        """Benchmark thread count: 0 means all physical cores; never more than logical cores."""
        from edgepack.hostinfo import cpu_info

        info = cpu_info()
        return min(self.benchmark.threads or info["physical_cores"], info["logical_cores"])

    def runs_elsewhere(self) -> str | None:
        """What this profile's compute is when the host cannot stand in for it (another CPU
        architecture, an accelerator), else None: latency measured here is then not its own."""
        from edgepack.hostinfo import cpu_info

        if not self.cpu.host_match:
            return "accelerator"
        return None if self.cpu.arch in ("any", cpu_info()["arch"]) else f"{self.cpu.arch} CPU"

    def bench_settings(self, runs: int | None = None, warmup: int | None = None,
                       threads: int | None = None) -> dict:
        """How to time an artifact here: what the caller gave, else this profile's benchmark."""
        return {"runs": self.benchmark.runs if runs is None else runs,
                "warmup": self.benchmark.warmup if warmup is None else warmup,
                "threads": threads or self.effective_threads()}

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------- loading


def targets_dir() -> Path:
    """Where named profiles live: $EDGEPACK_TARGETS_DIR, else the repository's `targets/`."""
    env = os.environ.get("EDGEPACK_TARGETS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "targets"


def _load_file(path: Path) -> TargetProfile:
    return load_yaml_model(path, TargetProfile, "target profile")


def _profile_files() -> list[Path]:
    folder = targets_dir()
    if not folder.is_dir():
        raise EdgepackError(f"targets folder not found: {folder} (set EDGEPACK_TARGETS_DIR)")
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")], key=lambda p: p.stem)


def _load_named(path: Path) -> TargetProfile:
    profile = _load_file(path)
    if profile.name != path.stem:  # the name is how users select it, so it must match the file
        raise EdgepackError(
            f"{path}: name {profile.name!r} does not match the file name {path.stem!r}"
        )
    return profile


def load_profile(name_or_path: str) -> TargetProfile:
    """A profile by name ('x86-vnni'), 'host' for the detected one, or a user YAML file path."""
    if name_or_path == "host":
        return detect_host()
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or os.sep in name_or_path:
        return _load_file(Path(name_or_path).expanduser())
    files = {p.stem: p for p in _profile_files()}
    if name_or_path not in files:
        names = [*files, "host"]
        raise EdgepackError(
            f"unknown target {name_or_path!r}{close_names(name_or_path, names)}; "
            f"known: {', '.join(names)}"
        )
    return _load_named(files[name_or_path])


def list_profiles() -> list[TargetProfile]:
    """Every profile in the targets folder, sorted by name (callers add 'host' themselves)."""
    return [_load_named(p) for p in _profile_files()]


# ---------------------------------------------------------------- host detection


def _matched_flags(cpu: Cpu, arch: str, flags: set[str]) -> list[str] | None:
    """The flags by which `cpu` fits this machine, or None if it does not fit."""
    if not cpu.host_match or cpu.arch not in (arch, "any"):
        return None
    if not set(cpu.requires_all) <= flags:
        return None
    some = [f for f in cpu.requires_any if f in flags]
    if cpu.requires_any and not some:
        return None
    return [*cpu.requires_all, *some]


def detect_host(info: dict | None = None) -> TargetProfile:
    """The profile for this machine: the most specific fitting profile, renamed 'host'.

    Only profile data is consulted: a profile fits when its arch and required flags are met,
    and the one meeting the most requirements wins (an arch-specific one beats 'any'; ties go
    to file order). `info` defaults to `hostinfo.cpu_info()`; tests pass fake flag sets.
    """
    from edgepack.hostinfo import SIMD_FLAGS, arch_name, cpu_info

    info = info or cpu_info()
    arch = arch_name(info["arch"])
    flags = {f.lower() for f in info.get("flags", [])}

    best, best_key, best_flags = None, None, []
    for profile in list_profiles():
        matched = _matched_flags(profile.cpu, arch, flags)
        if matched is None:
            continue
        key = (profile.cpu.arch != "any", len(matched))
        if best_key is None or key > best_key:
            best, best_key, best_flags = profile, key, matched
    if best is None:
        simd = sorted(flags & set(SIMD_FLAGS)) or ["none"]
        raise EdgepackError(
            f"no target profile fits this host (arch {arch}, SIMD flags: {', '.join(simd)}); "
            f"name one with --target or add a profile to {targets_dir()}"
        )

    why = f"flags {', '.join(best_flags)}" if best_flags else "no required flags"
    model = info.get("model") or "unknown CPU"
    return best.model_copy(
        update={
            "name": "host",
            "derived_from": best.name,
            "description": f"{model} ({arch}): derived from {best.name} ({why}). "
            f"{best.description}",
            # Compiling for the machine itself: settings that name a CPU give way to detection.
            "runtimes": [r.model_copy(update={"options": r.options.for_host()}) for r in best.runtimes],
        }
    )
