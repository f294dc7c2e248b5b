"""What a compile is asked to do, as frozen, hashable values.

Search and sweeps call compile many times with different option sets, in threads or worker
processes: a request is a value (compare it, hash it, cache by `key()`), not 22 loose keyword
arguments. In-memory inputs (an nn.Module, a ModelProto, a Dataset) are held by a `Ref` that
compares by identity; `key()` digests their contents for caches that outlive the process.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import operator
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgepack.devices.config import DeviceOptions
from edgepack.errors import EdgepackError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# the INT8 search's candidates, by quantizer (--quantizer): edgepack's static QDQ through
# onnxruntime.quantization, NNCF's, and ONNX Runtime's dynamic format (MatMul/Gemm)
QUANTIZERS = ("onnxruntime", "nncf", "dynamic")
CALIBRATIONS = ("minmax", "entropy", "percentile")  # a profile's quantization.calibration values
DEFAULT_MAX_DROP = 0.01
# (lowest, highest) for each benchmark setting: a million timed runs is far past what any
# statistic needs, and past it a typo (an extra zero or three) would keep the machine for days
# a soak test may ask for millions of runs (the watchdog scales with them); beyond these, a typo
BENCH_LIMITS = {"runs": (1, 100_000_000), "warmup": (0, 1_000_000), "threads": (1, 4096)}


@dataclass(frozen=True)
class Ref:
    """A path, or an object in memory compared by identity (arrays and protos are unhashable)."""

    path: str | None = None
    obj: Any = field(default=None, compare=False, repr=False)
    obj_id: int | None = None

    @classmethod
    def of(cls, value) -> Ref | None:
        if value is None:
            return None
        if isinstance(value, (str, Path)):
            return cls(path=str(value))
        return cls(obj=value, obj_id=id(value))

    @property
    def value(self):
        return self.path if self.path is not None else self.obj

    def digest(self) -> str:
        """Content hash: a file's (or folder's) bytes, or the object's serialized contents."""
        from edgepack.fsutil import sha256_file, sha256_tree

        if self.path is not None:
            p = Path(self.path.rpartition(":")[0] if ":" in self.path and not Path(self.path).exists() else self.path)
            return sha256_file(p) if p.is_file() else sha256_tree(p) if p.is_dir() else self.path
        return _object_digest(self.obj)


@dataclass(frozen=True)
class Budget:
    """How much accuracy compression may cost: absolute points, or relative to FP32's score."""

    max_drop: float = DEFAULT_MAX_DROP
    relative: bool = False

    def __post_init__(self):
        from edgepack.passes.metrics import check_drop

        check_drop(self.max_drop)  # NaN would pass every gate, so a Budget built directly is checked too

    @classmethod
    def parse(cls, value: str | float | None) -> Budget:
        """0.01 -> absolute; "1%" -> relative; None -> the default."""
        from edgepack.passes.metrics import parse_drop

        if value is None:
            return cls()
        if isinstance(value, Budget):
            return value
        max_drop, relative = parse_drop(value)
        return cls(max_drop, relative)

    def as_tuple(self) -> tuple[float, bool]:
        return self.max_drop, self.relative


@dataclass(frozen=True)
class BenchSettings:
    """How artifacts are timed; None = the target profile's value."""

    runs: int | None = None
    warmup: int | None = None
    threads: int | None = None

    def __post_init__(self):
        """Checked when the request is made, so `runs=0` is refused before any search or build."""
        for name, value in self.as_dict().items():
            if value is not None:
                object.__setattr__(self, name, check_bench_value(name, value))

    def resolve(self, profile) -> BenchSettings:
        return BenchSettings(**profile.bench_settings(self.runs, self.warmup, self.threads))

    def as_dict(self) -> dict:
        return asdict(self)


def check_bench_value(name: str, value) -> int:
    """`value` as an int within BENCH_LIMITS[name]; EdgepackError naming the setting otherwise."""
    low, high = BENCH_LIMITS[name]
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # ints and numpy ints; not floats, not strings
    except TypeError:
        from edgepack.errors import excerpt

        raise EdgepackError(f"{name} must be a whole number, got {excerpt(value, 60)}") from None
    if not low <= number <= high:
        raise EdgepackError(f"{name} must be between {low} and {high:,}, got {number}")
    return number


def usable_cores() -> int:
    """Cores this process may run on (its affinity, e.g. a container's share), at least 1: more
    intra-op threads than this only spin and slow every run down."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class QuantOptions:
    """Precision and the INT8 search: calibration data, what stays float, the accuracy budget."""

    precision: str | None = None  # None: the target's precision when calib is given, else fp32
    calib: Ref | None = None
    keep_float: tuple[str, ...] = ()
    budget: Budget = Budget()
    # for a model already INT8: the float graph it came from, shipped instead by each runtime that
    # runs it faster (unless precision is "int8")
    fp32_model: Ref | None = None
    quantizers: tuple[str, ...] | None = None  # the INT8 search's candidates (None: every one)
    calibration: str | None = None  # overrides the profile's quantization.calibration

    def __post_init__(self):
        if self.precision not in (None, *PRECISIONS):
            raise EdgepackError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if isinstance(self.quantizers, str):  # one name is a choice of one, not of its letters
            object.__setattr__(self, "quantizers", (self.quantizers,))
        if self.quantizers is not None:
            object.__setattr__(self, "quantizers", tuple(dict.fromkeys(
                _choice(q, QUANTIZERS, "--quantizer") for q in self.quantizers)) or None)
        if self.calibration is not None:
            _choice(self.calibration, CALIBRATIONS, "--calibration")


def _choice(value, allowed: tuple[str, ...], what: str) -> str:
    """`value` when it is one of `allowed`; one line naming the closest and every allowed one otherwise."""
    if value not in allowed:
        from edgepack.errors import close_names, excerpt

        raise EdgepackError(f"{what} {excerpt(value, 60)}: unknown{close_names(str(value), allowed)}; "
                            f"use one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class EvalOptions:
    """What accuracy means: labelled data and a metric (default top1 with labels, else cosine)."""

    data: Ref | None = None
    metric: str | None = None
    output: str | None = None  # the graph output the metric judges (default: the first)


@dataclass(frozen=True)
class PruneOptions:
    """Structured pruning (channels, widths x the target's multiple) and magnitude sparsity."""

    ratio: float | None = None
    mode: str = "uniform"
    layers: tuple[tuple[str, float], ...] = ()  # per-node ratio overrides
    protect: tuple[str, ...] = ()
    sparsity: float | None = None

    def __post_init__(self):
        """Ratios are checked here, before any work: NaN is truthy and passes `< 1` tests silently."""
        _fraction(self.ratio, "--prune")
        _fraction(self.sparsity, "--sparsity")
        for node, ratio in self.layers:
            _fraction(ratio, f"--prune-layer {node}")

    @property
    def structured(self) -> bool:
        return bool(self.ratio or self.layers)  # --prune-layer alone prunes just those layers


def _fraction(value, what: str) -> None:
    """None, or a real number in [0, 1): removing every channel or weight leaves no model."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise EdgepackError(f"{what} must be a number in [0, 1), got {value!r}")
    if not (0.0 <= value < 1.0):  # False for NaN as well
        raise EdgepackError(f"{what} must be in [0, 1), got {value}")


@dataclass(frozen=True)
class CompileRequest:
    """One compile: the model, the target, and every option. Build with `from_kwargs`."""

    model: Ref
    target: Any = "host"  # a profile name, a YAML path, or a TargetProfile (frozen, hashable)
    backends: tuple[str, ...] | None = None
    output_dir: str | None = None
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] | None = None
    weights: str | None = None
    quant: QuantOptions = QuantOptions()
    evaluation: EvalOptions = EvalOptions()
    prune: PruneOptions = PruneOptions()
    bench: BenchSettings = BenchSettings()
    force: bool = False
    devices: DeviceOptions = DeviceOptions()  # also measure each artifact on these (--device)

    @classmethod
    def from_kwargs(cls, model, *, target="host", backends=None, output_dir=None, input_shapes=None,
                    weights=None, calib=None, precision=None, eval_data=None, metric=None, max_drop=None,
                    keep_float=None, prune=None, prune_mode="uniform", prune_layers=None, prune_protect=None,
                    sparsity=None, runs=None, warmup=None, threads=None, force=False,
                    eval_output=None, fp32_model=None, devices=None, quantizers=None,
                    calibration=None) -> CompileRequest:
        """The flat keyword form of `edgepack.compile` (and the CLI), as a request."""
        return cls(
            model=Ref.of(model), target=target, backends=tuple(backends) if backends else None,
            output_dir=str(output_dir) if output_dir else None, input_shapes=_frozen_shapes(input_shapes),
            weights=str(weights) if weights else None,
            quant=QuantOptions(precision, Ref.of(calib), tuple(keep_float or ()), Budget.parse(max_drop), Ref.of(fp32_model),
                               _names(quantizers), calibration),
            evaluation=EvalOptions(Ref.of(eval_data), metric, eval_output),
            prune=PruneOptions(prune, prune_mode, tuple((prune_layers or {}).items()), tuple(prune_protect or ()),
                               sparsity),
            bench=BenchSettings(runs, warmup, threads), force=force,
            devices=devices if isinstance(devices, DeviceOptions) else DeviceOptions(tuple(devices or ())))

    @property
    def shapes(self) -> dict | None:
        """input_shapes in the form the frontends take ({name: [dims]})."""
        return None if self.input_shapes is None else dict(self.input_shapes)

    def with_options(self, **changes) -> CompileRequest:
        return replace(self, **changes)

    def key(self) -> str:
        """A content digest of the whole request: files and in-memory inputs by their bytes."""
        def encode(value):
            if isinstance(value, Ref):
                return {"ref": value.digest()}
            if hasattr(value, "to_dict"):
                return value.to_dict()
            return str(value)

        text = json.dumps(asdict(self) | {"model": encode(self.model), "target": encode(self.target),
                                          "quant": asdict(self.quant) | {"calib": encode(self.quant.calib),
                                                                      "fp32_model": encode(self.quant.fp32_model)},
                                          "evaluation": {"data": encode(self.evaluation.data),
                                                         "metric": self.evaluation.metric,
                                                         "output": self.evaluation.output}},
                          sort_keys=True, default=encode)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _names(value) -> tuple[str, ...] | None:
    """None, one name, or several, as a tuple (a frozen request holds no lists)."""
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _frozen_shapes(shapes) -> tuple | None:
    if not shapes:
        return None
    return tuple((str(name), tuple(int(d) for d in dims)) for name, dims in shapes.items())


def _object_digest(obj) -> str:
    """Contents of an in-memory input: a ModelProto's bytes, a module's weights, a Dataset's arrays."""
    import numpy as np

    h = hashlib.sha256(type(obj).__name__.encode())
    if hasattr(obj, "SerializeToString"):
        h.update(obj.SerializeToString())
    elif hasattr(obj, "state_dict"):
        from edgepack.frontends.torch_module import state_digest

        h.update(state_digest(obj).encode())
    elif hasattr(obj, "inputs"):  # a Dataset
        for name in sorted(obj.inputs):
            h.update(name.encode() + np.ascontiguousarray(obj.inputs[name]).tobytes())
        if getattr(obj, "labels", None) is not None:
            h.update(np.ascontiguousarray(obj.labels).tobytes())
    else:
        h.update(repr(obj).encode())
    return h.hexdigest()
