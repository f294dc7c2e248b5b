"""Runs in a fresh process: load one artifact, time it, report JSON. Never imported by the parent.

A fresh process is what makes load time, first-inference time and peak RSS mean something:
nothing of the compiler (torch, onnxslim, earlier sessions) is resident or warm.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    import numpy as np
    import psutil

    proc = psutil.Process()
    t0 = time.perf_counter()
    from edgepack.backends import get_backend

    backend = get_backend(cfg["backend"])
    data = np.load(cfg["inputs"])
    feeds = [{k.split("__", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}__")}
             for i in range(cfg["n_feeds"])]
    import_ms = (time.perf_counter() - t0) * 1e3
    rss_before = proc.memory_info().rss

    t0 = time.perf_counter()
    session = backend.load(Path(cfg["artifact"]), cfg["threads"])
    load_ms = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    backend.run(session, feeds[0])
    first_ms = (time.perf_counter() - t0) * 1e3

    total = cfg["warmup"] + cfg["runs"]
    times = []
    for i in range(total):
        feed = feeds[i % len(feeds)]
        t0 = time.perf_counter_ns()
        backend.run(session, feed)
        elapsed = (time.perf_counter_ns() - t0) / 1e6
        if i >= cfg["warmup"]:
            times.append(elapsed)
        if i % max(1, total // 50) == 0 or i == total - 1:
            print(json.dumps({"progress": i + 1, "total": total}), flush=True)

    result = {
        "import_ms": import_ms,
        "load_ms": load_ms,
        "first_ms": first_ms,
        "times_ms": times,
        "rss_before_load_bytes": rss_before,
        "rss_after_bytes": proc.memory_info().rss,
        # ru_maxrss is KiB on Linux: the high-water mark of this whole process
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    Path(cfg["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
