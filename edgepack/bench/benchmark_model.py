"""LiteRT's `benchmark_model` binary on a phone or board: its command line from a device's
settings, and its printed output parsed into the raw values bench.stats.device_run takes.

The binary is what phones without Python run (push it with the model, run it over adb). It
prints aggregates, not per-run samples, so a run parsed from it has no percentiles and no
confidence interval: its count/first/min/max/avg/std go to `summary_ms` as printed. The formats
parsed are the documented ones (tensorflow/lite/tools/benchmark/README.md and
benchmark_model.cc: "Inference timings in us: ...", "Memory footprint delta ...", the
"count=... first=... avg=..." statistics lines and the op-profiling tables printed with
--enable_op_profiling=true); numbers may be printed in C++ stream notation (2.95034e+06) and
lines may carry a log prefix ("INFO: ").
"""

from __future__ import annotations

import re

from edgepack.errors import EdgepackError

NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_TIMINGS = re.compile(rf"Inference timings in us: Init: ({NUMBER}), First inference: ({NUMBER}), "
                      rf"Warmup \(avg\): ({NUMBER}), Inference \(avg\): ({NUMBER})")
_OLD_TIMINGS = re.compile(rf"Average inference timings in us: Warmup: ({NUMBER}), Init: ({NUMBER}), "
                          rf"Inference: ({NUMBER})")
_STAT = re.compile(rf"^(?:\S+: )?count=(\d+)((?: \w+={NUMBER})*)\s*$")
_FOOTPRINT = re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init=({NUMBER}) "
                        rf"overall=({NUMBER})")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({NUMBER})")
_REGULAR = "Operator-wise Profiling Info for Regular Benchmark Runs"
_RUN_ORDER = re.compile(r"=+ Run Order =+")
# a profile row: node type, start, first, avg ms, %, cdf%, mem KB, times called, name
_ROW = re.compile(rf"^\s*(\S+)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})%\s+({NUMBER})%\s+"
                  rf"({NUMBER})\s+(\d+)\s+(.+?)\s*$")
FLAG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def command(binary: str, graph: str, threads: int = 1, runs: int = 50, warmup: int = 1,
            op_profile: bool = False, extra: dict | None = None) -> list[str]:
    """benchmark_model's argv from a devices.yaml-style setting. min_secs and warmup_min_secs
    are set to 0 so the counts asked are the counts run (by default the tool keeps running
    until a second has passed, whatever num_runs says). `extra`: further flags by name
    (e.g. {"use_xnnpack": False}), booleans written as true/false."""
    for name, value, least in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise EdgepackError(f"benchmark_model: {name} must be an integer >= {least}, got {value!r}")
    flags = {"graph": graph, "num_threads": threads, "num_runs": runs, "warmup_runs": warmup, "min_secs": 0,
             "warmup_min_secs": 0, "enable_op_profiling": bool(op_profile)}
    for name, value in (extra or {}).items():
        if not FLAG_NAME.match(str(name)):
            raise EdgepackError(f"benchmark_model: {name!r} is not a flag name (lower case, digits, _)")
        flags[name] = value
    return [binary] + [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in flags.items()]


def _stats(text: str) -> list[dict[str, float]]:
    """Every `count=N first=.. curr=.. min=.. ...` line, in order (the warm-up's, then the
    regular runs'). Outputs that show only the op-profiling tables (the README's example) have
    none: then the profiler's last "Timings (microseconds): count=..." line, the regular runs'
    whole-inference times, stands for the regular runs."""
    found, profiled = [], []
    for line in text.splitlines():
        plain = _STAT.match(line.strip())
        timed = re.search(r"Timings \(microseconds\): (count=\d+.*)$", line)
        m = plain or (_STAT.match(timed.group(1).strip()) if timed else None)
        if m:
            values = {k: float(v) for k, v in re.findall(rf"(\w+)=({NUMBER})", m.group(2))}
            (found if plain else profiled).append({"count": float(m.group(1)), **values})
    return found or profiled[-1:]


def op_table(text: str) -> list[dict]:
    """The per-op rows of the regular runs' "Run Order" table (the one after "Operator-wise
    Profiling Info for Regular Benchmark Runs", or the last one in outputs that print no such
    header), as [{op, type, ms (avg per inference), first_ms, percent, calls}], slowest first."""
    start = text.find(_REGULAR)
    if start < 0:
        orders = list(_RUN_ORDER.finditer(text))
        if not orders:
            return []
        start = orders[-1].start()
    section = text[start:]
    order = _RUN_ORDER.search(section)
    if order is None:
        return []
    rows = []
    for line in section[order.end():].splitlines()[1:]:
        if line.strip().startswith("="):
            break
        m = _ROW.match(line)
        if m is None:
            continue
        name = re.sub(r"^\[(.*)\](?::\d+)?$", r"\1", m.group(9))
        rows.append({"op": name, "type": m.group(1), "ms": float(m.group(4)), "first_ms": float(m.group(3)),
                     "percent": float(m.group(5)), "calls": int(m.group(8))})
    return sorted(rows, key=lambda r: -r["ms"])


def parse(text: str) -> dict:
    """benchmark_model's output -> raw values for bench.stats.device_run: load_ms (Init),
    first_ms, warmup and runs (counts), summary_ms (the regular runs' statistics in ms, plus
    warmup_avg and inference_avg), memory_footprint_mb (init, overall, peak where printed),
    op_profile (with --enable_op_profiling=true). No per-run samples: times_ms is empty."""
    m = _TIMINGS.search(text)
    if m:
        init_us, first_us, warm_us, avg_us = (float(g) for g in m.groups())
    else:
        old = _OLD_TIMINGS.search(text)
        if old is None:
            tail = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise EdgepackError(f"benchmark_model printed no inference timings; its last line: {tail[0][:200]}")
        warm_us, init_us, avg_us = (float(g) for g in old.groups())
        first_us = None
    stats = _stats(text)
    regular = stats[-1] if stats else {}
    summary = {k: (v if k == "count" else v / 1e3) for k, v in regular.items()}
    summary.update(warmup_avg=warm_us / 1e3, inference_avg=avg_us / 1e3)
    if first_us is None and "first" in regular:
        first_us = regular["first"]  # the old format prints no first inference: the regular runs' first
    raw = {"runner": "benchmark_model", "load_ms": init_us / 1e3, "first_ms": first_us / 1e3 if first_us else None,
           "warmup": int(stats[0]["count"]) if len(stats) > 1 else 0, "runs": int(regular.get("count", 0)),
           "times_ms": [], "summary_ms": summary}
    footprint = _FOOTPRINT.search(text)
    if footprint:
        raw["memory_footprint_mb"] = {"init": float(footprint.group(1)), "overall": float(footprint.group(2))}
        peak = _PEAK.search(text)
        if peak:
            raw["memory_footprint_mb"]["peak"] = float(peak.group(1))
    ops = op_table(text)
    if ops:
        raw["op_profile"] = ops
    return raw
