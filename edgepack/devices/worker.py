"""The one program every device runs: load one artifact through a session module, then write its
outputs for the given feeds and/or time it. Never imported by edgepack.

Standalone on purpose: stdlib + numpy + the session module named in the config (a file, loaded
by path), nothing of edgepack, so it runs unchanged in a fresh host process, on the emulated
board and (later) on a real one or from a bundle. A fresh process is also what makes load time,
first-inference time and peak RSS mean something: nothing of the compiler (torch, onnxslim,
earlier sessions) is resident or warm.

    python worker.py config.json

config: session (path of the session module), artifact, threads, inputs (npz of feeds, keys
"<feed>__<input name>"), n_feeds, warmup, runs, result (JSON written at the end), outputs
(optional npz path: every feed's outputs, keys "<feed>__<output index>"). Progress goes to
stdout as JSON lines {"progress": i, "total": n}, after one {"first_ms": ms} (the first inference).
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


def _feeds(path: str, n: int) -> list[dict]:
    with np.load(path) as data:
        return [{k.split("__", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}__")} for i in range(n)]


def _timed(session, feeds: list[dict], warmup: int, runs: int) -> list[float]:
    """Milliseconds of each run after `warmup` untimed ones, feeds taken in turn."""
    total, times = warmup + runs, []
    for i in range(total):
        feed = feeds[i % len(feeds)]
        t0 = time.perf_counter_ns()
        session.run(feed)
        elapsed = (time.perf_counter_ns() - t0) / 1e6
        if i >= warmup:
            times.append(elapsed)
        if i % max(1, total // 50) == 0 or i == total - 1:
            print(json.dumps({"progress": i + 1, "total": total}), flush=True)
    return times


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
    times = _timed(session, feeds, int(cfg.get("warmup", 0)), int(cfg.get("runs", 0)))
    result = {
        "import_ms": import_ms, "load_ms": load_ms, "first_ms": first_ms, "times_ms": times,
        "rss_before_load_bytes": rss_before, "rss_after_bytes": _rss(),
        # ru_maxrss is KiB on Linux: the high-water mark of this whole process
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "outputs": [{"shape": list(np.shape(y)), "dtype": str(np.asarray(y).dtype)} for y in first],
    }
    Path(cfg["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
