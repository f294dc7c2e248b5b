"""An emulated ARM64 board: an aarch64 Python in a sysroot, run by qemu user emulation.

It answers "does the cross-compiled artifact run on ARM and compute the right numbers?" without
hardware. This module builds the board and runs Python on it; running an artifact there is
edgepack.devices.QemuDevice (the same worker and session modules as on the host). It does NOT answer "how fast is it on a board": qemu user emulation is 35-250x slower
than native, so every time measured here is labelled emulated and must never be reported as
board latency.

Built once under ~/.cache/edgepack/board (or $EDGEPACK_BOARD_DIR), each step behind its own
stamp so a second call is instant and a failed call resumes where it stopped:

1. host tools (Debian): qemu-user-static and the aarch64 cross toolchain (apt-get, root only)
2. sysroot: Debian arm64 python3.11 + C/C++ runtime libraries, downloaded with a private apt
   configuration (the host's dpkg never learns about arm64) and unpacked with `dpkg -x`
3. byte-compiled stdlib (the host's 3.11 writes the same .pyc format; halves emulated start-up)
4. a fake ARM /proc/cpuinfo in the sysroot (ONNX Runtime and LiteRT parse it and crash on x86's)
5. aarch64 wheels (numpy, TVM runtime, LiteRT, ONNX Runtime) in a --target folder
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from edgepack.errors import EdgepackError
from edgepack.fsutil import file_lock

QEMU = "qemu-aarch64-static"
CROSS_CXX = "aarch64-linux-gnu-g++"
HOST_APT_PACKAGES = ("qemu-user-static", "gcc-aarch64-linux-gnu", "g++-aarch64-linux-gnu")
BOARD_DEBS = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1", "libgomp1")
# Pinned where edgepack pins the host side, so the board runs the same runtime versions.
BOARD_WHEELS = ("numpy>=2.0", "apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1",
                "ai-edge-litert==2.3.0", "onnxruntime==1.32.0")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")
BOARD_CORES = 4  # what the fake /proc/cpuinfo announces
EMULATED_NOTE = ("qemu user-mode emulation on an x86-64 host: 35-250x slower than a real board; "
                 "proves the artifact runs on aarch64 and computes the right numbers, not its speed")


def default_root() -> Path:
    env = os.environ.get("EDGEPACK_BOARD_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgepack" / "board"


def _recipe_key() -> str:
    """Changes when what goes into the board changes, so an old board is rebuilt, not reused."""
    text = json.dumps([BOARD_DEBS, BOARD_WHEELS, WHEEL_PLATFORMS, _CPUINFO_STANZA, 1])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Board:
    root: Path
    setup_s: float = 0.0  # seconds ensure_board spent building (0 when it was ready)
    steps: dict = field(default_factory=dict)

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def python(self) -> Path:
        return self.sysroot / "usr" / "bin" / "python3.11"

    def command(self, *args: str) -> list[str]:
        """The argv that runs the board's python with `args`."""
        return [_which(QEMU), "-L", str(self.sysroot), str(self.python), *args]

    def env(self, extra: dict | None = None) -> dict:
        """A clean environment: nothing of the host's Python or library paths leaks in."""
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.root), "LANG": "C.UTF-8",
               "PYTHONPATH": str(self.site), "PYTHONNOUSERSITE": "1",
               # load only TVM's runtime library; `import tvm` otherwise loads the 240 MB compiler
               "TVM_USE_RUNTIME_LIB": "1", "OMP_NUM_THREADS": "1", "TVM_NUM_THREADS": "1"}
        env.update({k: str(v) for k, v in (extra or {}).items()})
        return env

    def run_python(self, script: str, args: list[str] | tuple = (), timeout: float = 600,
                   env: dict | None = None, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        """Run Python source `script` on the emulated board; output captured as text."""
        with tempfile.TemporaryDirectory(prefix="board-", dir=self._tmp()) as tmp:
            path = Path(tmp) / "script.py"
            path.write_text(script)
            try:
                return subprocess.run(self.command(str(path), *map(str, args)), capture_output=True,
                                      text=True, timeout=timeout, env=self.env(env), cwd=cwd or tmp)
            except subprocess.TimeoutExpired:
                raise EdgepackError(f"emulated board: script did not finish within {timeout:.0f} s") from None

    def deploy_dir(self) -> contextlib.AbstractContextManager:
        """A fresh folder the board can read, removed afterwards: what a deployment copies lands
        there (edgepack.devices.QemuDevice runs the worker in it)."""
        return _scratch(self._tmp())

    def _tmp(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path


def ensure_board(root: str | Path | None = None, progress=None) -> Board:
    """The emulated board, built on first use (a few minutes, ~250 MB download) and reused after."""
    root = Path(root).expanduser() if root else default_root()
    root.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda msg: None)
    board = Board(root)
    ready = root / ".ready"
    key = _recipe_key()
    if ready.is_file() and ready.read_text().strip() == key and board.python.is_file() and _have_host_tools():
        return board
    t0 = time.perf_counter()
    with file_lock(root / ".lock"):
        if ready.is_file() and ready.read_text().strip() == key and _have_host_tools():
            return board  # another process built it while we waited
        ready.unlink(missing_ok=True)
        for name, step in (("host tools", _host_tools), ("sysroot", _sysroot), ("cpuinfo", _cpuinfo),
                           ("wheels", _wheels)):
            stamp = root / f".step-{name.replace(' ', '-')}"
            # host tools are re-checked every time: a cached board may outlive the apt installs
            if step is not _host_tools and stamp.is_file() and stamp.read_text().strip() == key:
                continue
            say(f"board: {name}")
            s0 = time.perf_counter()
            step(board)
            board.steps[name] = round(time.perf_counter() - s0, 1)
            stamp.write_text(key)
        _smoke_test(board)
        ready.write_text(key)
    board.setup_s = time.perf_counter() - t0
    return board


# ---------------------------------------------------------------- build steps

def _have_host_tools() -> bool:
    return all(shutil.which(t) for t in (QEMU, CROSS_CXX))


def _host_tools(board: Board) -> None:
    if _have_host_tools():
        return
    cmd = f"apt-get update && apt-get install -y {' '.join(HOST_APT_PACKAGES)}"
    if os.geteuid() != 0:
        raise EdgepackError(f"board: {QEMU} / {CROSS_CXX} missing; install them as root: {cmd}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _check(["apt-get", "update", "-qq"], "host tools (apt-get update)", env=env)
    _check(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *HOST_APT_PACKAGES],
           "host tools (apt-get install)", env=env)
    if not _have_host_tools():
        raise EdgepackError(f"board: host tools: {QEMU} or {CROSS_CXX} still not on PATH after {cmd}")


def _sysroot(board: Board) -> None:
    apt = board.root / "apt"
    shutil.rmtree(apt, ignore_errors=True)
    for d in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (apt / d).mkdir(parents=True)
    (apt / "state" / "status").write_text("")
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        shutil.copy(sources, apt / "sources.list.d" / "debian.sources")
    elif Path("/etc/apt/sources.list").is_file():
        shutil.copy("/etc/apt/sources.list", apt / "sources.list.d" / "debian.list")
    else:
        raise EdgepackError("board: sysroot: no Debian apt sources on this host (/etc/apt/sources.list.d/debian.sources)")
    conf = apt / "apt.conf"
    conf.write_text("\n".join([
        f'Dir::State "{apt}/state";',
        f'Dir::State::status "{apt}/state/status";',
        f'Dir::Cache "{apt}/cache";',
        f'Dir::Etc::sourcelist "{apt}/sources.list";',
        f'Dir::Etc::sourceparts "{apt}/sources.list.d";',
        f'Dir::Etc::preferencesparts "{apt}/preferences.d";',
        'Dir::Etc::trustedparts "/etc/apt/trusted.gpg.d";',
        'APT::Architecture "arm64";',
        'APT::Architectures { "arm64"; };',
        'APT::Sandbox::User "root";',  # private folders under $HOME: no _apt user needed
        'Debug::NoLocking "true";',  # never touches the host's dpkg database, so no host lock
        "",
    ]))
    env = {**os.environ, "APT_CONFIG": str(conf), "DEBIAN_FRONTEND": "noninteractive"}
    _check(["apt-get", "update", "-qq"], "sysroot (arm64 apt-get update)", env=env)
    _check(["apt-get", "install", "-y", "-qq", "--download-only", "--no-install-recommends", *BOARD_DEBS],
           "sysroot (arm64 apt-get download)", env=env)
    debs = sorted((apt / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise EdgepackError("board: sysroot: apt downloaded no arm64 packages")
    partial = board.root / "sysroot.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for deb in debs:
        _check(["dpkg", "-x", str(deb), str(partial)], f"sysroot (dpkg -x {deb.name})")
    if not (partial / "usr" / "bin" / "python3.11").is_file():
        raise EdgepackError("board: sysroot: usr/bin/python3.11 missing after unpacking the arm64 packages")
    _check([_host_python311(), "-m", "compileall", "-q", "-j0", str(partial / "usr" / "lib" / "python3.11")],
           "sysroot (compileall)", ok_codes=(0, 1))  # 1: a few test files that don't compile on purpose
    shutil.rmtree(board.sysroot, ignore_errors=True)
    partial.rename(board.sysroot)
    shutil.rmtree(apt / "cache" / "archives", ignore_errors=True)  # the .debs: 30 MB no longer needed


_CPUINFO_STANZA = """processor\t: {i}
BogoMIPS\t: 250.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""


def _cpuinfo(board: Board) -> None:
    # qemu -L serves SYSROOT/proc/cpuinfo to the guest instead of the host's x86 one: a Cortex-A72.
    proc = board.sysroot / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text("\n".join(_CPUINFO_STANZA.format(i=i) for i in range(BOARD_CORES)))


def _wheels(board: Board) -> None:
    partial = board.root / "site.partial"
    shutil.rmtree(partial, ignore_errors=True)
    platforms = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    _check([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(partial),
            "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *platforms,
            *BOARD_WHEELS], "wheels (pip install --platform aarch64)")
    shutil.rmtree(board.site, ignore_errors=True)
    partial.rename(board.site)


def _smoke_test(board: Board) -> None:
    proc = board.run_python("import platform, numpy; print(platform.machine(), numpy.__version__)", timeout=300)
    if proc.returncode != 0 or "aarch64" not in proc.stdout:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise EdgepackError(f"board: smoke test failed: {lines[-1] if lines else proc.returncode}")


# ---------------------------------------------------------------- helpers

def _which(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise EdgepackError(f"{tool} not found: run edgepack.board.ensure_board() (or apt-get install "
                            f"{' '.join(HOST_APT_PACKAGES)})")
    return path


def _host_python311() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if not found:
        raise EdgepackError("board: a host python3.11 is needed to byte-compile the board's stdlib")
    return found


def _check(cmd: list[str], step: str, env: dict | None = None, ok_codes=(0,)) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    except FileNotFoundError:
        raise EdgepackError(f"board: {step} failed: {cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise EdgepackError(f"board: {step} failed: no result after 30 min") from None
    if proc.returncode not in ok_codes:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith(("E:", "ERROR", "error"))]
        why = (errs or lines or [f"exit code {proc.returncode}"])[-1]
        raise EdgepackError(f"board: {step} failed: {why.strip()[:300]}")


@contextlib.contextmanager
def _scratch(parent: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="deploy-", dir=parent) as tmp:
        yield Path(tmp)


