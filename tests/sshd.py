"""A throwaway OpenSSH server on 127.0.0.1 for the device tests (Debian's openssh-server).

Everything it uses lives in one private folder: host key, the user's key, authorized_keys, the
pid file and its own sshd_config (`UsePAM no`, `StrictModes no` because the keys sit under /tmp,
`Subsystem sftp internal-sftp`), on a free port. It runs in the foreground (-D) as our child and
is stopped by its PID. Used through a fixture in the test module, never imported by conftest.

    python tests/sshd.py --install     # what `make sshd` runs: apt-get install what is missing, as root

--install also installs the other tools the device tests use (pgrep for the dropped-connection
test, Debian's `adb` for the real-adb test), each package only when its tool is missing.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
# each tool the device tests run -> the Debian package that provides it
OPENSSH = {SSHD: "openssh-server", "ssh": "openssh-client", "scp": "openssh-client",
           "ssh-keygen": "openssh-client", "pgrep": "procps"}
TOOLS = {**OPENSSH, "adb": "adb"}


def missing_packages(tools: dict[str, str]) -> list[str]:
    """The packages whose tool is not here (an absolute path checked as a file, a name on PATH)."""
    absent = [t for t in tools if not (Path(t).is_file() if t.startswith("/") else shutil.which(t))]
    return sorted({tools[t] for t in absent})


def ensure_tools(tools: dict[str, str] = TOOLS) -> str | None:
    """None when every tool is here (apt-get installs the missing ones' packages when we are root),
    else one line saying what is missing and how to install it."""
    missing = missing_packages(tools)
    if not missing:
        return None
    cmd = f"apt-get install -y {' '.join(missing)}"
    if os.geteuid() != 0:
        return f"{', '.join(missing)} missing; install as root: {cmd}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                 *missing]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            return f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    still = missing_packages(tools)
    return f"{', '.join(still)} still missing after {cmd}" if still else None


def ensure_openssh() -> str | None:
    """What the sshd fixture needs (installed when missing and we are root), else why not."""
    return ensure_tools(OPENSSH)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """start() -> a listening sshd; stop() ends it by PID. `user_key` logs in as `user`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = self.folder / "host_key"
        self.user_key = self.folder / "user_key"
        self.proc: subprocess.Popen | None = None

    def _keys(self) -> None:
        for key in (self.host_key, self.user_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgepack-test", "-f", str(key)],
                               check=True, capture_output=True)
        (self.folder / "authorized_keys").write_text(Path(f"{self.user_key}.pub").read_text())
        os.chmod(self.user_key, 0o600)

    def _config(self) -> Path:
        config = self.folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.folder / 'sshd.pid'}", f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp",
            "MaxSessions 64", "MaxStartups 64", "LogLevel ERROR", "",
        ]))
        return config

    def start(self) -> Sshd:
        self._keys()
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # its privilege-separation folder
        log = open(self.folder / "sshd.log", "w")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self._config())], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.folder / 'sshd.log').read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("sshd did not listen within 15 s")

    def known_hosts_line(self) -> str:
        kind, key = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {key}\n"

    def sessions(self) -> list[int]:
        """PIDs of the per-connection sshd processes (children of the listener)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def drop_connections(self) -> list[int]:
        """Kill every connection's sshd process: the client sees the link die mid-command."""
        pids = self.sessions()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    if "--install" in sys.argv:
        why = ensure_tools()
        print(f"device test tools ({', '.join(sorted(set(TOOLS.values())))}): {why or 'ready'}")
        sys.exit(1 if why and os.geteuid() == 0 else 0)  # not root: the tests that need them skip
