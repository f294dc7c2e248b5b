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
import time
from pathlib import Path

import numpy as np

from edgepack.backends import get_backend
from edgepack.bench.stats import summarize
from edgepack.devices.base import PROBE, WORKER, batch_of, read_outputs, read_probe, write_job
from edgepack.errors import EdgepackError
from edgepack.ui import progress_bar

STARTUP_S = 600  # import the runtime, load the artifact, first inference: big models on a busy machine
RUN_FLOOR_S = 120  # least time allowed for the runs themselves, however fast the first one was
PROBE_S = 120  # the probe reads package metadata only: seconds even on a busy machine
SAFETY = 10  # a run may take this many times the first one (a machine that gets busy meanwhile)


class LocalDevice:
    name = "local"
    latency_is_real = True

    def __init__(self, timeout_s: float = STARTUP_S):
        """timeout_s: the start-up allowance; the runs get their own, scaled to their number."""
        self.timeout_s = timeout_s

    def outputs(self, backend: str, artifact: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        if not feeds:
            return []
        with tempfile.TemporaryDirectory(prefix="edgepack-run-") as tmp:
            tmp = Path(tmp)
            config = write_job(tmp, get_backend(backend).session_file(), Path(artifact).resolve(), feeds,
                               threads=1, outputs=True)
            run_worker([sys.executable, str(WORKER), str(config)], tmp, lambda n: None, self.timeout_s,
                       what=f"{backend} run", work=len(feeds))
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
                raw = run_worker([sys.executable, str(WORKER), str(config)], tmp, advance, self.timeout_s,
                                 work=warmup + runs)
        return summarize(raw, threads=threads, warmup=warmup, batch=batch_of(feeds))

    def probe(self) -> dict:
        """This host as a fresh interpreter sees it (devices/probe.py, the script remote devices run)."""
        try:
            proc = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True, timeout=PROBE_S)
        except subprocess.TimeoutExpired:
            raise EdgepackError(f"{self.name}: the device probe did not answer within {PROBE_S} s") from None
        return read_probe(self.name, proc.returncode, proc.stdout, proc.stderr)


class _Watchdog:
    """Kills `proc` at a deadline that can be moved once the pace of its work is known."""

    def __init__(self, proc: subprocess.Popen, seconds: float):
        self.proc, self.expired = proc, threading.Event()
        self.started, self.allowed, self._timer = time.monotonic(), seconds, None
        self.arm(seconds)

    def arm(self, seconds: float) -> None:
        """Deadline: `seconds` from now (replacing the previous one)."""
        self.cancel()
        self.allowed = time.monotonic() - self.started + seconds
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.expired.set()
        self.proc.kill()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def runs_allowance(work: int, first_ms: float) -> float:
    """Seconds the worker's `work` inferences may take after its first one took `first_ms`: the
    deadline scales with the work asked for instead of a flat hour, with a floor and a safety
    factor so a busy machine never trips it wrongly."""
    return max(RUN_FLOOR_S, work * max(first_ms, 0.0) / 1e3 * SAFETY)


def run_worker(cmd: list[str], folder: Path, advance, timeout_s: float, what: str = "benchmark process",
               env: dict | None = None, work: int | None = None) -> dict:
    """Run one worker job in `folder` (config.json there); its result.json.

    advance(n) is called with the worker's progress lines. timeout_s bounds the start-up (until
    the worker reports its first inference) or, with `work` None, the whole job; given `work`
    (inferences after the first), the deadline then moves to runs_allowance(work, first_ms).
    Failures are one line: `what` did not finish / failed, with the worker's last stderr line."""
    errfile = folder / "stderr.txt"
    # stderr goes to a file: a chatty runtime must not fill a pipe nobody reads and stall the worker
    with open(errfile, "w") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True, env=env, cwd=folder)
        # a worker hung inside a runtime prints nothing, so reading its stdout would block for
        # ever: the watchdog kills it at the deadline, which ends the read
        watchdog = _Watchdog(proc, timeout_s)
        try:
            for line in proc.stdout:
                _on_line(line, advance, watchdog, work)
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:  # interrupted: the worker must not outlive us
                proc.kill()
                proc.wait()
        if watchdog.expired.is_set():
            raise EdgepackError(f"{what} did not finish within {watchdog.allowed:.0f} s")
    result = folder / "result.json"
    if proc.returncode != 0 or not result.exists():
        lines = [ln for ln in errfile.read_text(errors="replace").splitlines() if ln.strip()]
        raise EdgepackError(f"{what} failed: {lines[-1][:300] if lines else f'exit {proc.returncode}'}")
    return json.loads(result.read_text())


def _on_line(line: str, advance, watchdog: _Watchdog, work: int | None) -> None:
    """One stdout line of the worker: progress, or the first inference's time (re-arms the deadline)."""
    try:
        msg = json.loads(line)
        if "first_ms" in msg and work is not None:
            watchdog.arm(runs_allowance(work, float(msg["first_ms"])))
        elif "progress" in msg:
            advance(msg["progress"])
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # libraries may print to stdout; only our JSON lines count
