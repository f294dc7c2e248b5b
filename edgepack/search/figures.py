"""A trial's figures (accuracy, drop, p50 with its noise, size, MACs, peak memory, fidelity) and
how far each misses its target's constraints.

Plain dicts and dataclasses of numbers: they cross process boundaries (pool workers, Ray tasks)
and are stored beside each trial's compile output as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgepack.search.spec import CONSTRAINTS, Constraints

MB = 1e6
# bytes each weight takes at least, per precision: a sound lower bound of an artifact's size
WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 4, "int8": 1}  # bf16: FP32 weights, BF16 compute


@dataclass
class Figures:
    """What one point measured. `status`: "built" (compiled and timed), "cheap" (stopped after
    the cheap figures: MACs or the size bound already miss), "failed" (the compile refused)."""

    status: str
    values: dict = field(default_factory=dict)  # figure name -> number
    ci95_ms: float = 0.0  # half-width of the 95% CI of the median p50
    p50_samples: list = field(default_factory=list)
    report: str | None = None  # the trial's report.json
    artifact: str | None = None  # the selected artifact
    backend: str | None = None
    precision: str | None = None
    error: str | None = None
    cached: bool = False  # read back from an earlier run of this point
    # with max_p50_ms on a named device: p50_ms is the device's; this host's p50 is host_p50_ms
    host_ci95_ms: float = 0.0
    host_p50_samples: list = field(default_factory=list)
    device: str | None = None  # the device p50_ms was timed on (None: this host)
    device_skipped: str | None = None  # why this point was not timed on the device
    stages: dict = field(default_factory=dict)  # a recipe trial's stages: "computed" here or "reused" (shared)

    def on_host(self) -> Figures:
        """These figures with this host's latency as p50_ms: what points are compared by
        before any of them is timed on the device."""
        if "host_p50_ms" not in self.values:
            return self
        values = {k: v for k, v in self.values.items() if k != "host_p50_ms"} | {"p50_ms": self.values["host_p50_ms"]}
        return Figures(self.status, values, self.host_ci95_ms, list(self.host_p50_samples))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Figures:
        return cls(**data)


def violations(fig: Figures, bounds: Constraints) -> dict[str, float]:
    """{constraint: relative miss} for every bound: > 0 misses by that fraction of the bound,
    <= 0 is met. A figure not measured (a failed or cheap-stopped point) misses by 1."""
    out = {}
    for name, bound in bounds.bounds().items():
        figure, sense = CONSTRAINTS[name]
        value = fig.values.get(figure)
        if value is None:
            out[name] = 1.0
            continue
        scale = abs(bound) or 1.0
        out[name] = (value - bound) / scale if sense == "max" else (bound - value) / scale
    return out


def describe_miss(name: str, fig: Figures, bounds: Constraints) -> str:
    """'p50_ms 7.20 > 5' for a missed constraint."""
    figure, sense = CONSTRAINTS[name]
    value = fig.values.get(figure)
    if value is None:
        return f"{name}: not measured ({fig.error or fig.device_skipped or fig.status})"
    return f"{name}: {figure} {value:.4g} {'>' if sense == 'max' else '<'} {getattr(bounds, name):.4g}"


def from_report(report, source_accuracy_key: str = "source") -> dict:
    """The figures of a CompileReport's selected artifact. Drop counts from the source model's
    score (the report's own accuracy_drop counts from the pruned FP32 graph, which would hide
    what pruning cost)."""
    a = report.artifacts[report.selected.index]
    values = {"size_mb": a.size_bytes / MB, "macs": report.canonical.macs, "params": report.canonical.params}
    if a.latency_ms is not None:
        values["p50_ms"] = a.latency_ms.p50
    if a.memory_mb is not None:
        values["peak_mb"] = a.memory_mb.peak_rss
    if a.accuracy is not None and report.accuracy is not None:
        values["accuracy"] = a.accuracy
        values["drop"] = getattr(report.accuracy, source_accuracy_key) - a.accuracy
    if a.fidelity is not None:
        values["cosine"] = a.fidelity.cosine
        if a.fidelity.agreement_non_near_ties is not None:
            values["agreement_non_near_ties"] = a.fidelity.agreement_non_near_ties
    return values


def label(point: dict) -> str:
    """A point in a few words: 'onnxruntime int8 prune 0.5 uniform' for a model's, 'knob=value ...'
    for a recipe's."""
    if "backend" not in point:
        return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())
    prune = f" prune {point['prune_ratio']:.3g} {point['prune_mode']}" if point.get("prune_ratio") else ""
    keep = f" keep {'|'.join(point['keep_float'])}" if point.get("keep_float") else ""
    fit = f" max_drop {point['max_drop']:g}" if point["precision"] == "int8" and "max_drop" in point else ""
    return f"{point['backend']} {point['precision']}{prune}{keep}{fit}"
