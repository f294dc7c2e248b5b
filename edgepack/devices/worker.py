"""The one program every device runs: load one artifact through a session module, then write its
outputs for the given feeds and/or time it. Never imported by edgepack.

Standalone on purpose: stdlib + numpy + the session module named in the config (a file, loaded
by path), nothing of edgepack, so it runs unchanged in a fresh host process, on the emulated
board, on a real board or phone, and from a bundle. A fresh process is also what makes load
time, first-inference time and peak RSS mean something: nothing of the compiler (torch,
onnxslim, earlier sessions) is resident or warm.

    python worker.py config.json

config: session (path of the session module), artifact, threads, inputs (npz of feeds, keys
"<feed>__<input name>"), n_feeds, warmup, runs, result (JSON written at the end), outputs
(optional npz path: every feed's outputs, keys "<feed>__<output index>"). Optional:
warmup_max (keep warming past `warmup` until the timings settle, at most this many runs;
default `warmup`: a fixed warm-up), settle_window (k, default 5) and settle_tolerance (default
0.05): warm-up has settled when the median of the last k runs is within that fraction of the
median of the k before; op_profile (true: a per-op profile where the runtime offers one, in
separate runs after the timed ones, so it never disturbs them); op_profile_runs (default 10).
Progress goes to stdout as JSON lines {"progress": i, "total": n}, after one {"first_ms": ms}
(the first inference).

result: import_ms, load_ms (cold load), first_ms (first inference), times_ms (every timed run,
in order), warmup_ms (every warm-up run), warmup_done, warmup_settled (None: too few warm-up
runs to tell), rss_before_load_bytes, rss_after_bytes, peak_rss_bytes (high-water mark up to
the end of the timed runs), outputs (shapes, dtypes), threads, and with op_profile either
op_profile ([{op, type, ms, calls}], ms and calls per inference, slowest first) or
op_profile_note (why there is none).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # this folder holds the session module: it must not shadow a runtime's own modules

import numpy as np  # noqa: E402

SETTLE_WINDOW = 5
SETTLE_TOLERANCE = 0.05
OP_PROFILE_RUNS = 10


def _import_session(path: str):
    """The session module from its file (on a board it sits beside this script, not in a package)."""
    name = Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _rss() -> int:
    """Resident set size in bytes: /proc where there is one (Linux, the board), else psutil."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    """High-water mark of this whole process in bytes (ru_maxrss is KiB on Linux, bytes on macOS),
    never below the current RSS: the kernel updates its high-water mark lazily, so right after
    growth ru_maxrss can read a few pages less than /proc's current figure."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(peak if sys.platform == "darwin" else peak * 1024, _rss())


def _feeds(path: str, n: int) -> list[dict]:
    with np.load(path) as data:
        return [{k.split("__", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}__")} for i in range(n)]


def settled(samples: list[float], k: int, tolerance: float) -> bool | None:
    """Whether the median of the last k samples is within `tolerance` (a fraction) of the median
    of the k before; None while there are fewer than 2k samples. Medians, not means: one
    preempted run on a shared core must not keep the warm-up going."""
    if k < 1 or len(samples) < 2 * k:
        return None
    last, before = float(np.median(samples[-k:])), float(np.median(samples[-2 * k:-k]))
    return abs(last - before) <= tolerance * max(before, 1e-12)


class _Runs:
    """Times inferences, feeds taken in turn, and reports progress against a fixed total."""

    def __init__(self, session, feeds: list[dict], total: int):
        self.session, self.feeds, self.total, self.done = session, feeds, max(total, 1), 0

    def one(self, progress: int) -> float:
        feed = self.feeds[self.done % len(self.feeds)]
        t0 = time.perf_counter_ns()
        self.session.run(feed)
        elapsed = (time.perf_counter_ns() - t0) / 1e6
        self.done += 1
        if progress % max(1, self.total // 50) == 0 or progress == self.total:
            print(json.dumps({"progress": progress, "total": self.total}), flush=True)
        return elapsed


def _timed(session, feeds: list[dict], cfg: dict) -> dict:
    """Warm-up (at least `warmup` runs, then until settled or `warmup_max`), then `runs` timed runs."""
    warmup, runs = int(cfg.get("warmup", 0)), int(cfg.get("runs", 0))
    cap = max(warmup, int(cfg.get("warmup_max") or warmup))
    k = int(cfg.get("settle_window") or SETTLE_WINDOW)
    tolerance = float(cfg.get("settle_tolerance") or SETTLE_TOLERANCE)
    loop = _Runs(session, feeds, cap + runs)
    warm: list[float] = []
    state = None
    while len(warm) < cap:
        warm.append(loop.one(len(warm) + 1))
        state = settled(warm, k, tolerance)
        if len(warm) >= warmup and state:
            break
    times = [loop.one(cap + i + 1) for i in range(runs)]
    return {"times_ms": times, "warmup_ms": warm, "warmup_done": len(warm), "warmup_settled": state}


def _op_profile(module, session, cfg: dict, feeds: list[dict]) -> dict:
    """The session's per-op profile, or a note saying why there is none (never invented)."""
    hook = getattr(session, "op_profile", None)
    if hook is None:
        note = getattr(module, "OP_PROFILE_NOTE", None) or f"{Path(cfg['session']).stem} offers no per-op profile"
        return {"op_profile_note": note}
    try:
        ops = hook(feeds, int(cfg.get("op_profile_runs") or OP_PROFILE_RUNS))
    except Exception as e:  # the profile is extra: its failure must not cost the timings
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return {"op_profile_note": f"per-op profile failed: {first}"}
    return {"op_profile": sorted(ops, key=lambda o: -o["ms"])}


def main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    t0 = time.perf_counter()
    module = _import_session(cfg["session"])  # imports the runtime
    feeds = _feeds(cfg["inputs"], cfg["n_feeds"])
    import_ms = (time.perf_counter() - t0) * 1e3
    rss_before = _rss()

    t0 = time.perf_counter()
    session = module.open_session(cfg["artifact"], int(cfg["threads"]))
    load_ms = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    first = session.run(feeds[0])
    first_ms = (time.perf_counter() - t0) * 1e3
    print(json.dumps({"first_ms": first_ms}), flush=True)  # the device scales its deadline by it

    if cfg.get("outputs"):
        outs = [first] + [session.run(f) for f in feeds[1:]]
        np.savez(cfg["outputs"], **{f"{i}__{j}": np.asarray(y) for i, ys in enumerate(outs) for j, y in enumerate(ys)})
    result = {
        "import_ms": import_ms, "load_ms": load_ms, "first_ms": first_ms, **_timed(session, feeds, cfg),
        "rss_before_load_bytes": rss_before, "rss_after_bytes": _rss(), "peak_rss_bytes": _peak_rss(),
        "outputs": [{"shape": list(np.shape(y)), "dtype": str(np.asarray(y).dtype)} for y in first],
        "threads": int(cfg["threads"]),
    }
    if cfg.get("op_profile"):
        result.update(_op_profile(module, session, cfg, feeds))
    Path(cfg["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
