"""This host, in a fresh process: the device whose times are real latency.

The worker runs under this interpreter (sys.executable), so it sees the same runtimes, but as a
new process: nothing of the compiler (torch, onnxslim, earlier sessions) is resident or warm.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from edgepack.backends import get_backend
from edgepack.bench.stats import summarize
from edgepack.devices.base import WORKER, batch_of, read_outputs, write_job
from edgepack.errors import EdgepackError
from edgepack.ui import progress_bar


class LocalDevice:
    name = "local"
    latency_is_real = True

    def __init__(self, timeout_s: float = 3600):
        self.timeout_s = timeout_s

    def outputs(self, backend: str, artifact: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        if not feeds:
            return []
        with tempfile.TemporaryDirectory(prefix="edgepack-run-") as tmp:
            tmp = Path(tmp)
            config = write_job(tmp, get_backend(backend).session_file(), Path(artifact).resolve(), feeds,
                               threads=1, outputs=True)
            run_worker([sys.executable, str(WORKER), str(config)], tmp, lambda n: None, self.timeout_s,
                       what=f"{backend} run")
            return read_outputs(tmp, len(feeds))

    def time(self, backend: str, artifact: Path, feeds: list[dict[str, np.ndarray]], threads: int, warmup: int,
             runs: int, progress: bool = True) -> dict:
        """The report's latency section (latency_ms, load_ms, memory_mb, ...), measured in a fresh process."""
        if runs < 1 or warmup < 0 or threads < 1:
            raise EdgepackError(f"need runs >= 1, warmup >= 0, threads >= 1 (got {runs}, {warmup}, {threads})")
        if not feeds:
            raise EdgepackError("no inputs to benchmark with")
        with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
            tmp = Path(tmp)
            config = write_job(tmp, get_backend(backend).session_file(), Path(artifact).resolve(), feeds,
                               threads=threads, warmup=warmup, runs=runs)
            with progress_bar(f"{backend}: timing", warmup + runs, progress) as advance:
                raw = run_worker([sys.executable, str(WORKER), str(config)], tmp, advance, self.timeout_s)
        return summarize(raw, threads=threads, warmup=warmup, batch=batch_of(feeds))


def run_worker(cmd: list[str], folder: Path, advance, timeout_s: float, what: str = "benchmark process",
               env: dict | None = None) -> dict:
    """Run one worker job in `folder` (config.json there); its result.json.

    advance(n) is called with the worker's progress lines. Failures are one line: `what` did not
    finish / failed, with the worker's last stderr line."""
    errfile = folder / "stderr.txt"
    # stderr goes to a file: a chatty runtime must not fill a pipe nobody reads and stall the worker
    with open(errfile, "w") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True, env=env, cwd=folder)
        # a worker hung inside a runtime prints nothing, so reading its stdout would block for
        # ever: the watchdog kills it at the deadline, which ends the read
        expired = threading.Event()
        watchdog = threading.Timer(timeout_s, lambda: (expired.set(), proc.kill()))
        watchdog.start()
        try:
            for line in proc.stdout:
                try:
                    advance(json.loads(line)["progress"])
                except (ValueError, KeyError, TypeError):
                    pass  # libraries may print to stdout; only our JSON lines count
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:  # interrupted: the worker must not outlive us
                proc.kill()
                proc.wait()
        if expired.is_set():
            raise EdgepackError(f"{what} did not finish within {timeout_s:.0f} s")
    result = folder / "result.json"
    if proc.returncode != 0 or not result.exists():
        lines = [ln for ln in errfile.read_text(errors="replace").splitlines() if ln.strip()]
        raise EdgepackError(f"{what} failed: {lines[-1][:300] if lines else f'exit {proc.returncode}'}")
    return json.loads(result.read_text())
