"""Raw timings -> report sections: the host's latency section (summarize) and a device's run
(device_run), with percentiles, a 95% confidence interval of the median and memory.

Raw timings come from devices/worker.py (per-iteration samples) or from LiteRT's benchmark_model
binary (bench/benchmark_model.py: aggregates only, no samples, so no percentiles are invented).
"""

from __future__ import annotations

import math

import numpy as np

from edgepack.report.schema import DeviceEnv, DeviceRun, Latency, Memory, Parity

MIB = 1024 * 1024
EMULATED_NOTE = "emulated: these times are the emulator's, not the target's latency"


def median_ci(samples, confidence: float = 0.95) -> list[float] | None:
    """A distribution-free confidence interval of the median: the order statistics
    [x(l), x(n-l+1)] with the largest l for which the Binomial(n, 1/2) mass between them is at
    least `confidence` (the sign-test interval; it assumes independent runs, not a normal
    distribution, which latencies with their long right tail are not). None below the least
    sample count that can reach `confidence` (6 for 95%). Hand-written because scipy is not a
    dependency and this is one binomial CDF."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(x)
    if n == 0:
        return None
    # log pmf of Binomial(n, 1/2), summed in float64: exact enough for n up to millions
    k = np.arange(n + 1)
    logpmf = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k]) - n * math.log(2)
    cdf = np.cumsum(np.exp(logpmf))
    tail = (1.0 - confidence) / 2.0
    # l (1-based) is admissible when P(B <= l - 1) <= tail; the largest such l gives the shortest interval
    admissible = np.nonzero(cdf[: (n + 1) // 2] <= tail + 1e-12)[0]
    if admissible.size == 0:
        return None
    lo = int(admissible[-1]) + 1
    return [float(x[lo - 1]), float(x[n - lo])]


def latency(samples, first_ms: float) -> Latency:
    """Percentiles (numpy's linear interpolation), mean, std, min and max of warm runs; `first`
    is the first inference, kept apart from them."""
    t = np.asarray(samples, dtype=np.float64)
    return Latency(first=float(first_ms), p50=float(np.percentile(t, 50)), p90=float(np.percentile(t, 90)),
                   p99=float(np.percentile(t, 99)), mean=float(t.mean()), std=float(t.std()),
                   min=float(t.min()), max=float(t.max()))


def memory(raw: dict) -> Memory | None:
    """The worker's RSS figures in MiB (None when the runner measured none)."""
    if not all(k in raw for k in ("peak_rss_bytes", "rss_before_load_bytes", "rss_after_bytes")):
        return None
    return Memory(peak_rss=raw["peak_rss_bytes"] / MIB, rss_before_load=raw["rss_before_load_bytes"] / MIB,
                  model_rss_delta=(raw["rss_after_bytes"] - raw["rss_before_load_bytes"]) / MIB)


def summarize(raw: dict, threads: int, warmup: int, batch: int) -> dict:
    """The report's latency fields from one fresh-process run (devices/worker.py's result)."""
    lat = latency(raw["times_ms"], raw["first_ms"])
    section = {
        "latency_ms": lat.to_json(),
        "load_ms": raw["load_ms"],
        "runtime_import_ms": raw["import_ms"],
        "throughput_per_s": batch * 1000.0 / lat.mean,
        "memory_mb": memory(raw).to_json(),
        "runs": len(raw["times_ms"]),
        "warmup": warmup,
        "threads": threads,
        "batch": batch,
        "process": "fresh",
    }
    ci = median_ci(raw["times_ms"])
    if ci is not None:
        section["ci95_ms"] = ci
    return section


def _notes(raw: dict, emulated: bool) -> str | None:
    notes = [EMULATED_NOTE] if emulated else []
    notes += [raw[k] for k in ("note", "op_profile_note") if raw.get(k)]
    return "; ".join(notes) or None


def device_run(raw: dict, device: str, kind: str, emulated: bool, environment: DeviceEnv | dict | None,
               threads: int, batch: int, seconds: float | None = None,
               parity: Parity | dict | None = None) -> DeviceRun:
    """One device's raw result (the worker's result.json, or bench.benchmark_model.parse's) as
    the report's DeviceRun. Warm-up, cold load, first inference and warm runs stay apart; a
    runner without per-run samples (benchmark_model) gets no percentiles and no interval, only
    its own aggregates (summary_ms); an emulated device's figures are labelled in `note`."""
    samples = [float(t) for t in raw.get("times_ms") or []]
    lat = latency(samples, raw["first_ms"]) if samples else None
    return DeviceRun(
        device=device, kind=kind, emulated=emulated,
        environment=DeviceEnv.model_validate(environment) if isinstance(environment, dict) else environment,
        runner=raw.get("runner", "worker"), threads=int(raw.get("threads", threads)),
        warmup=int(raw.get("warmup_done", raw.get("warmup", 0))), warmup_settled=raw.get("warmup_settled"),
        runs=len(samples) if samples else int(raw.get("runs", 0)), samples_ms=samples, latency_ms=lat,
        ci95_ms=median_ci(samples), cold_load_ms=raw.get("load_ms"), first_ms=raw.get("first_ms"),
        memory_mb=memory(raw), memory_footprint_mb=raw.get("memory_footprint_mb"),
        summary_ms=raw.get("summary_ms"), batch=batch,
        throughput_per_s=batch * 1000.0 / lat.mean if lat and lat.mean > 0 else None,
        op_profile=raw.get("op_profile"),
        parity=Parity.model_validate(parity) if isinstance(parity, dict) else parity,
        seconds=seconds, note=_notes(raw, emulated))
