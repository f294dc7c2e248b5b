"""Where an artifact runs: the Device protocol, and the job files every device hands the worker.

A device runs THE worker program (devices/worker.py) with a backend's session module beside it,
so the host, the emulated board and later real boards or bundles compute outputs and timings
with the same code. Only `latency_is_real` says whether a device's times may be reported as
latency (the emulated board's never are).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from edgepack.errors import EdgepackError

WORKER = Path(__file__).resolve().with_name("worker.py")
OPTIONAL_SETTINGS = ("warmup_max", "settle_window", "settle_tolerance", "op_profile", "op_profile_runs")
PROBE = Path(__file__).resolve().with_name("probe.py")  # stdlib only: answers where numpy is missing


@runtime_checkable
class Device(Protocol):
    name: str
    latency_is_real: bool  # False: times are labelled emulated and never reported as latency

    def outputs(self, backend: str, artifact: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Each feed's outputs (ONNX order), computed on this device."""

    def time(self, backend: str, artifact: Path, feeds: list[dict[str, np.ndarray]], threads: int, warmup: int,
             runs: int, progress: bool = True) -> dict:
        """Timings of `runs` inferences after `warmup`, feeds taken in turn."""

    def probe(self) -> dict:
        """The device's environment (report.schema.DeviceEnv fields): architecture, OS, Python,
        CPU, cores, governor and temperature where readable, and each runtime's version (None:
        not installed). Asked before anything is sent to run, so an incompatible device is
        refused with one line instead of failing half-way."""


class DeviceLost(EdgepackError):
    """The connection to a remote device dropped mid-job: one line, and nothing measured on that
    job is recorded as complete."""


@runtime_checkable
class Transport(Protocol):
    """How files and commands reach a remote device. The system OpenSSH client and the `adb`
    tool implement it; devices/remote.RemoteDevice runs the one worker program through it, so
    boards and phones share every step but the wire."""

    name: str  # how the user named it: "ssh://user@host:port", "adb:SERIAL"

    def push(self, local_dir: Path, remote_dir: str) -> None:
        """Copy the files of `local_dir` into `remote_dir` on the device (created if missing)."""

    def run(self, argv: list[str], timeout_s: float, on_line: Callable[[str], None] | None = None,
            env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run `argv` on the device; each stdout line goes to `on_line`; (exit code, stderr text).
        A dropped connection raises DeviceLost; the deadline kills the remote command."""

    def pull(self, remote_path: str, local_path: Path) -> None:
        """Copy one file back from the device."""

    def remove(self, remote_dir: str) -> None:
        """Remove a job folder on the device (best effort)."""


def write_job(folder: Path, session: Path, artifact: Path, feeds: list[dict[str, np.ndarray]],
              **settings) -> Path:
    """Inputs and config.json for one worker run in `folder` (paths as the worker will see them).

    settings: threads, warmup, runs, outputs (True: write every feed's outputs); optional, passed
    through when given (see devices/worker.py): warmup_max, settle_window, settle_tolerance,
    op_profile, op_profile_runs."""
    np.savez(folder / "inputs.npz", **{f"{i}__{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
    cfg = {"session": str(session), "artifact": str(artifact), "threads": int(settings.get("threads", 1)),
           "warmup": int(settings.get("warmup", 0)), "runs": int(settings.get("runs", 0)),
           "inputs": str(folder / "inputs.npz"), "n_feeds": len(feeds), "result": str(folder / "result.json"),
           "outputs": str(folder / "outputs.npz") if settings.get("outputs") else None}
    cfg.update({k: settings[k] for k in OPTIONAL_SETTINGS if settings.get(k) is not None})
    config = folder / "config.json"
    config.write_text(json.dumps(cfg))
    return config


def read_outputs(folder: Path, n_feeds: int) -> list[list[np.ndarray]]:
    """The worker's outputs.npz back as one list of outputs per feed."""
    with np.load(folder / "outputs.npz") as data:
        keys = [tuple(int(p) for p in k.split("__")) for k in data.files]
        return [[data[f"{i}__{j}"] for j in sorted(j for f, j in keys if f == i)] for i in range(n_feeds)]


def batch_of(feeds: list[dict[str, np.ndarray]]) -> int:
    return int(next(iter(feeds[0].values())).shape[0]) if feeds and feeds[0] else 1


def read_probe(device: str, rc: int, stdout: str, stderr: str, key: str = "arch") -> dict:
    """A probe's JSON answer (the last stdout line that is a JSON object holding `key`), or one
    line saying why the device gave none. devices/probe.py's answers hold "arch"."""
    if rc == 0:
        for line in reversed(stdout.strip().splitlines()):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and key in data:
                return data
    lines = [ln for ln in (stderr or stdout or "").splitlines() if ln.strip()]
    raise EdgepackError(f"{device}: the device probe failed: {lines[-1][:300] if lines else f'exit {rc}'}")
