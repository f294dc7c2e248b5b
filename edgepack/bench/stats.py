"""Raw worker timings -> the latency section of a report (percentiles, throughput, memory)."""

from __future__ import annotations

import numpy as np


def summarize(raw: dict, threads: int, warmup: int, batch: int) -> dict:
    """The report's latency fields from one fresh-process run (devices/worker.py's result)."""
    t = np.asarray(raw["times_ms"], dtype=np.float64)
    mean = float(t.mean())
    mib = 1024 * 1024
    return {
        "latency_ms": {
            "first": raw["first_ms"],
            "p50": float(np.percentile(t, 50)),
            "p90": float(np.percentile(t, 90)),
            "p99": float(np.percentile(t, 99)),
            "mean": mean,
            "std": float(t.std()),
            "min": float(t.min()),
            "max": float(t.max()),
        },
        "load_ms": raw["load_ms"],
        "runtime_import_ms": raw["import_ms"],
        "throughput_per_s": batch * 1000.0 / mean,
        "memory_mb": {
            "peak_rss": raw["peak_rss_bytes"] / mib,
            "rss_before_load": raw["rss_before_load_bytes"] / mib,
            "model_rss_delta": (raw["rss_after_bytes"] - raw["rss_before_load_bytes"]) / mib,
        },
        "runs": len(t),
        "warmup": warmup,
        "threads": threads,
        "batch": batch,
        "process": "fresh",
    }
