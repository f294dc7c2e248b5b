"""What every Transport shares: running a command with a deadline while its stdout streams, and
the transport of this machine itself (LocalTransport: "local" and "qemu" devices in devices.yaml
take the same push/run/pull path as a board over SSH, so one code path is tested everywhere).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgepack.devices.local import _Watchdog
from edgepack.errors import EdgepackError

PID_MARK = "@edgepack-pid "  # the first stdout line of a remote job: the PID a deadline kills


@dataclass
class Streamed:
    """How a streamed command ended."""

    returncode: int
    stderr: str
    expired: bool  # the deadline killed it
    allowed_s: float  # the deadline it ran under (after any re-arming)
    pid: int | None  # the remote PID it announced (PID_MARK), if any


def stream(argv: list[str], timeout_s: float, on_line: Callable[[str], object] | None, env: dict | None = None,
           on_pid: Callable[[int], None] | None = None) -> Streamed:
    """Run `argv` here, each stdout line to `on_line`; the deadline kills it.

    `on_line` may return a number of seconds: the deadline then moves to that many seconds from
    now (a worker's first inference tells how long its runs may take). stderr goes to a file,
    never a pipe nobody reads (a chatty runtime would stall the command)."""
    pid = None
    with tempfile.TemporaryFile("w+", errors="replace") as errf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf, text=True,
                                errors="replace", env=env)
        watchdog = _Watchdog(proc, timeout_s)
        try:
            for line in proc.stdout:
                if line.startswith(PID_MARK):
                    pid = int(line[len(PID_MARK):].strip() or 0) or None
                    if on_pid and pid:
                        on_pid(pid)
                    continue
                more = on_line(line) if on_line else None
                if isinstance(more, (int, float)) and not isinstance(more, bool) and more > 0:
                    watchdog.arm(float(more))
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:  # interrupted: the command must not outlive us
                proc.kill()
                proc.wait()
        errf.seek(0)
        return Streamed(proc.returncode, errf.read(), watchdog.expired.is_set(), watchdog.allowed, pid)


def last_line(text: str, default: str = "") -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else default


@dataclass
class LocalTransport:
    """This machine as a device: folders are copied, commands run as child processes.

    base_env: the environment commands start from (None: this process's); the emulated board
    gives its clean one, so nothing of the host's Python leaks into the board's."""

    name: str = "local"
    base_env: dict | None = field(default=None, repr=False)

    def push(self, local_dir: Path, remote_dir: str) -> None:
        shutil.copytree(local_dir, remote_dir, dirs_exist_ok=True)

    def run(self, argv: list[str], timeout_s: float, on_line=None, env: dict | None = None) -> tuple[int, str]:
        full = dict(os.environ if self.base_env is None else self.base_env)
        full.update({k: str(v) for k, v in (env or {}).items()})
        try:
            done = stream(argv, timeout_s, on_line, env=full)
        except FileNotFoundError:
            return 127, f"{argv[0]}: not found"
        if done.expired:
            raise EdgepackError(f"{self.name}: {Path(argv[0]).name} did not finish within {done.allowed_s:.0f} s")
        return done.returncode, done.stderr

    def pull(self, remote_path: str, local_path: Path) -> None:
        try:
            shutil.copyfile(remote_path, local_path)
        except OSError as e:
            raise EdgepackError(f"{self.name}: cannot read {remote_path}: {e.strerror or e}") from None

    def remove(self, remote_dir: str) -> None:
        shutil.rmtree(remote_dir, ignore_errors=True)
