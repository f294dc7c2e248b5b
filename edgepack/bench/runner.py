"""Latency measurement: spawn the worker, stream its progress, turn raw times into statistics."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from edgepack.errors import EdgepackError
from edgepack.ui import progress_bar


def benchmark(backend: str, artifact: Path, feeds: list[dict[str, np.ndarray]], threads: int,
              warmup: int, runs: int, progress: bool = True, timeout_s: float = 3600) -> dict:
    """Measure `artifact` in a fresh Python process; returns the report's latency section."""
    if runs < 1 or warmup < 0 or threads < 1:
        raise EdgepackError(f"need runs >= 1, warmup >= 0, threads >= 1 (got {runs}, {warmup}, {threads})")
    if not feeds:
        raise EdgepackError("no inputs to benchmark with")
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "inputs.npz", **{f"{i}__{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
        cfg = {"backend": backend, "artifact": str(Path(artifact).resolve()), "threads": threads,
               "warmup": warmup, "runs": runs, "inputs": str(tmp / "inputs.npz"),
               "n_feeds": len(feeds), "result": str(tmp / "result.json")}
        (tmp / "config.json").write_text(json.dumps(cfg))
        raw = _run_worker(tmp / "config.json", Path(cfg["result"]), f"{backend}: timing", warmup + runs,
                          progress, timeout_s)
    batch = int(next(iter(feeds[0].values())).shape[0]) if feeds[0] else 1
    return summarize(raw, threads=threads, warmup=warmup, batch=batch)


def _run_worker(config: Path, result: Path, label: str, total: int, progress: bool, timeout_s: float) -> dict:
    cmd = [sys.executable, "-m", "edgepack.bench.worker", str(config)]
    errfile = config.with_name("stderr.txt")
    # stderr goes to a file: a chatty runtime must not fill a pipe nobody reads and stall the worker
    with progress_bar(label, total, progress) as advance, open(errfile, "w") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True)
        # a worker hung inside a runtime prints nothing, so reading its stdout would block for
        # ever: the watchdog kills it at the deadline, which ends the read
        expired = threading.Event()
        watchdog = threading.Timer(timeout_s, lambda: (expired.set(), proc.kill()))
        watchdog.start()
        try:
            for line in proc.stdout:
                try:
                    advance(json.loads(line)["progress"])
                except (ValueError, KeyError):
                    pass  # libraries may print to stdout; only our JSON lines count
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:  # interrupted: the worker must not outlive us
                proc.kill()
                proc.wait()
        if expired.is_set():
            raise EdgepackError(f"benchmark did not finish within {timeout_s:.0f} s")
    if proc.returncode != 0 or not result.exists():
        lines = [ln for ln in errfile.read_text().splitlines() if ln.strip()]
        raise EdgepackError(f"benchmark process failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return json.loads(result.read_text())


def summarize(raw: dict, threads: int, warmup: int, batch: int) -> dict:
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
