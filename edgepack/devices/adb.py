"""The Transport protocol (devices/base.py) over Android's `adb` tool: phones reached by serial.

    t = AdbTransport("R58M123ABC")                      # adb -s R58M123ABC ...
    t.push(job_folder, t.job_dir("job-1"))               # /data/local/tmp/edgepack/job-1
    rc, err = t.run(["./benchmark_model", "--graph=m.tflite"], timeout_s=120, on_line=print)
    t.pull(t.job_dir("job-1") + "/result.json", Path("result.json"))
    t.remove(t.job_dir("job-1"))

Why these choices:
- /data/local/tmp is the one folder a non-rooted phone lets `adb` write and execute in.
- The exit status comes back through `; echo <marker>=$?`: adb before Android 7 (no shell
  protocol v2) always exits 0 whatever the command did, and merges its stderr into stdout. A
  missing marker means the connection dropped mid-command: DeviceLost, nothing complete.
- The command runs in the background on the phone and prints its pid first, so a deadline can
  kill it there (killing the local adb process alone leaves it running on the phone).
- One command string for the phone's shell, every word quoted (shlex.quote): adb joins its
  arguments with spaces and hands them to /system/bin/sh.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable

from edgepack.devices.base import DeviceLost
from edgepack.errors import EdgepackError

ROOT = "/data/local/tmp/edgepack"
RC_MARKER = "__edgepack_rc="
PID_MARKER = "__edgepack_pid="
# what adb says when the phone went away (unplugged, rebooted, authorization revoked)
LOST = ("error: device", "no devices/emulators found", "error: closed", "protocol fault", "unauthorized")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
COPY_TIMEOUT_S = 600


class AdbTransport:
    """Files and commands to one phone through `adb -s SERIAL`."""

    def __init__(self, serial: str, adb: str = "adb", root: str = ROOT):
        if not serial or any(c.isspace() for c in serial):
            raise EdgepackError(f"adb: a device serial has no spaces and is not empty, got {serial!r}")
        if not root.startswith("/") or root.rstrip("/") in ("", "/data", "/data/local", "/data/local/tmp"):
            raise EdgepackError(f"adb: the work folder must be a folder of its own under /, got {root!r}")
        self.serial, self.adb, self.root = serial, adb, root.rstrip("/")
        self.name = f"adb:{serial}"
        self._checked = False

    def job_dir(self, job: str) -> str:
        """The phone folder of one job: ROOT/<job>."""
        if not job or "/" in job or job in (".", ".."):
            raise EdgepackError(f"adb: a job name is one path component, got {job!r}")
        return f"{self.root}/{job}"

    def argv(self, *args: str) -> list[str]:
        """The host command line for `adb -s SERIAL ARGS`."""
        return [self.adb, "-s", self.serial, *args]

    def _tool(self) -> str:
        found = shutil.which(self.adb)
        if found is None:
            raise EdgepackError(f"{self.name}: the adb tool ({self.adb}) is not installed or not on PATH; install "
                                "Android platform-tools (Debian: apt-get install adb) or give its path in devices.yaml")
        return found

    def _call(self, args: list[str], timeout_s: float = COPY_TIMEOUT_S) -> subprocess.CompletedProcess:
        self._tool()
        try:
            return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DeviceLost(f"{self.name}: adb {args[0]} did not finish within {timeout_s:.0f} s") from None

    def check(self) -> None:
        """The phone is connected and authorized (`adb get-state` says "device"), else one line."""
        if self._checked:
            return
        done = self._call(["get-state"], timeout_s=30)
        state = done.stdout.strip()
        if done.returncode != 0 or state != "device":
            said = _last_line(done.stderr or done.stdout) or f"state {state or 'unknown'}"
            raise EdgepackError(f"{self.name}: no usable phone with that serial ({said}); "
                                "see `adb devices`")
        self._checked = True

    def push(self, local_dir: Path, remote_dir: str) -> None:
        self.check()
        entries = sorted(str(p) for p in Path(local_dir).iterdir())
        self._ok(self._call(["shell", shell_line(["mkdir", "-p", remote_dir])]), f"mkdir {remote_dir}")
        if entries:
            self._ok(self._call(["push", *entries, remote_dir + "/"]), f"push to {remote_dir}")

    def pull(self, remote_path: str, local_path: Path) -> None:
        self.check()
        self._ok(self._call(["pull", remote_path, str(local_path)]), f"pull {remote_path}")

    def remove(self, remote_dir: str) -> None:
        """Best effort, and only inside this transport's work folder."""
        if not remote_dir.startswith(self.root + "/") or "/../" in remote_dir + "/":
            raise EdgepackError(f"{self.name}: refusing to remove {remote_dir!r}: not inside {self.root}")
        try:
            self._call(["shell", shell_line(["rm", "-rf", remote_dir])], timeout_s=60)
        except (EdgepackError, OSError):
            pass

    def _ok(self, done: subprocess.CompletedProcess, what: str) -> None:
        if done.returncode != 0:
            text = _last_line(done.stderr or done.stdout) or f"exit {done.returncode}"
            kind = DeviceLost if any(s in text for s in LOST) else EdgepackError
            raise kind(f"{self.name}: {what} failed: {text}")

    def run(self, argv: list[str], timeout_s: float, on_line: Callable[[str], None] | None = None,
            env: dict[str, str] | None = None) -> tuple[int, str]:
        self.check()
        proc = subprocess.Popen(self.argv("shell", background_line(argv, env)), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        state = {"pid": None, "rc": None}
        expired = threading.Event()

        def fire():  # kill it on the phone first: the local adb alone may leave it running there
            expired.set()
            self._kill(state["pid"])
            proc.kill()

        timer = threading.Timer(timeout_s, fire)
        timer.daemon = True
        timer.start()
        err = threading.Thread(target=lambda: state.update(stderr=proc.stderr.read()), daemon=True)
        err.start()
        try:
            for line in proc.stdout:
                _route(line.rstrip("\n"), state, on_line)
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # interrupted (Ctrl-C): neither adb nor the command may outlive us
                self._kill(state["pid"])
                proc.kill()
                proc.wait()
        err.join(5)
        return self._finish(state, expired.is_set(), timeout_s)

    def _finish(self, state: dict, expired: bool, timeout_s: float) -> tuple[int, str]:
        stderr = state.get("stderr") or ""
        if expired:
            raise EdgepackError(f"{self.name}: the command did not finish within {timeout_s:.0f} s (killed)")
        if state["rc"] is None:
            said = _last_line(stderr)
            said = f" ({said})" if said else ""
            raise DeviceLost(f"{self.name}: connection lost before the command finished{said}")
        return state["rc"], stderr

    def _kill(self, pid: int | None) -> None:
        if pid is not None:
            try:
                self._call(["shell", shell_line(["kill", "-9", str(pid)])], timeout_s=30)
            except (EdgepackError, OSError):
                pass


def shell_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    """One command for the phone's /system/bin/sh: every word quoted, `env` as NAME=value words."""
    for key in env or {}:
        if not ENV_NAME.match(key):
            raise EdgepackError(f"adb: {key!r} is not an environment variable name")
    words = [f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items()] + [shlex.quote(str(a)) for a in argv]
    return " ".join(words)


def background_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    """The command in the background, its pid printed first, its exit status printed last:
    `CMD & echo PID=$!; wait $!; echo RC=$?` (stdin from /dev/null: adb shell's stdin is not its)."""
    return (f"{shell_line(argv, env)} </dev/null & p=$!; echo {PID_MARKER}$p; wait $p; echo {RC_MARKER}$?")


def parse_marker(line: str, marker: str) -> int | None:
    """N from a `MARKERN` line (None for any other line); tolerates the \\r old adb adds."""
    text = line.strip()
    if text.startswith(marker) and text[len(marker):].lstrip("-").isdigit():
        return int(text[len(marker):])
    return None


def _route(line: str, state: dict, on_line: Callable[[str], None] | None) -> None:
    """One stdout line of the phone's command: our pid/rc markers, else the command's own output."""
    pid, rc = parse_marker(line, PID_MARKER), parse_marker(line, RC_MARKER)
    if pid is not None:
        state["pid"] = pid
    elif rc is not None:
        state["rc"] = rc
    elif on_line is not None:
        on_line(line.rstrip("\r"))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
