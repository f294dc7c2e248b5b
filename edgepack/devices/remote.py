"""A device reached through a Transport (SSH, adb, or this machine): push a job folder, run THE
worker there, bring back raw per-iteration samples and outputs, clean up.

One profile holds the device alone: a host-side file lock per device name (two edgepack
processes on this machine wait for each other) and a device-side `mkdir` lock in the work folder
(`mkdir` is atomic on every POSIX file system: two hosts profiling one board cannot both win).
A device lock whose owner is gone (its process dead on this host, or older than LOCK_STALE_S) is
taken over. Before anything is sent, probe.py says what the device is: an artifact for another
architecture, in a precision its CPU does not compute natively (bf16), or for a runtime the device
lacks is refused in one line, before running.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from edgepack.backends import REGISTRY, get_backend
from edgepack.bench.stats import device_run, summarize
from edgepack.devices import litert_benchmark
from edgepack.devices.base import PROBE, WORKER, batch_of, read_outputs, read_probe, write_job
from edgepack.devices.compat import refusal
from edgepack.devices.local import STARTUP_S, runs_allowance
from edgepack.devices.transports import last_line
from edgepack.errors import EdgepackError
from edgepack.fsutil import file_lock, slug
from edgepack.report.schema import DeviceRun
from edgepack.ui import progress_bar
from edgepack.verify import compare_outputs

LOCK_STALE_S = 6 * 3600  # a device lock older than this is a crashed run's (profiles take minutes)
LOCK_POLL_S = 1.0


def host_lock_dir() -> Path:
    path = Path(os.environ.get("EDGEPACK_LOCK_DIR") or Path(tempfile.gettempdir()) / "edgepack-device-locks")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class RemoteDevice:
    """A device that runs the worker through `transport`. `python` is the device's interpreter
    (a command: a path, or a wrapper with arguments); `env` is added to each job's environment;
    `affinity` (a CPU list such as "2-3") pins jobs with `taskset -c`. An `emulated` device's
    times are labelled so and never reported as latency. `benchmark_model`: LiteRT's binary on the
    device; TFLite artifacts then run through it (devices/litert_benchmark.py), and the device
    needs no Python for them."""

    name: str
    kind: str
    transport: object  # devices.base.Transport
    workdir: str = "/tmp/edgepack"
    python: tuple[str, ...] = ("python3",)
    env: dict = field(default_factory=dict)
    affinity: str | None = None
    emulated: bool = False
    benchmark_model: str | None = None
    timeout_s: float = STARTUP_S
    lock_wait_s: float = 600.0
    _probed: dict | None = field(default=None, repr=False)
    _depth: int = field(default=0, repr=False)

    @property
    def latency_is_real(self) -> bool:
        return not self.emulated

    # ------------------------------------------------------------------ session and lock

    @contextlib.contextmanager
    def session(self):
        """The device held by this process: host lock, one connection, device lock (re-entrant)."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        with file_lock(host_lock_dir() / f"{slug(self.name)}.lock"):
            opener = getattr(self.transport, "open", None)
            if opener:
                opener()
            try:
                self._acquire()
                self._depth = 1
                try:
                    yield self
                finally:
                    self._depth = 0
                    self._release()
            finally:
                closer = getattr(self.transport, "close", None)
                if closer:
                    closer()

    def _lock_path(self) -> str:
        return str(PurePosixPath(self.workdir) / ".lock")

    def _acquire(self) -> None:
        """Take the device-side lock, waiting up to lock_wait_s for another profile to finish; the
        same command probes the device the first time (one command less on every profile)."""
        lock = self._lock_path()
        owner = f"{socket.gethostname()} {os.getpid()} {int(time.time())}"
        # a benchmark_model device may have no Python: probed with it only when a Python job asks
        probe = [] if self._probed is not None or self.benchmark_model else self._probe_argv()
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            lines: list[str] = []
            rc, err = self.transport.run(["sh", "-c", _LOCK_SCRIPT, "sh", self.workdir, lock, owner, *probe],
                                         120 + self.timeout_s / 10, on_line=lines.append)
            answer = next((a.strip() for a in lines if a.startswith(("TAKEN", "BUSY"))), "")
            if answer == "TAKEN":
                break
            if not answer:
                raise EdgepackError(f"{self.name}: cannot use work folder {self.workdir}: {last_line(err, f'exit {rc}')}")
            held_by = answer.split()[1:]
            if held_by[:2] == [socket.gethostname(), str(os.getpid())]:  # waiting for ourselves would never end
                raise EdgepackError(f"{self.name}: its work folder {self.workdir} is held by another device of this "
                                    "same run (one board under two names?): name it once")
            if _stale(held_by):
                self.transport.run(["rm", "-rf", "--", lock], 60)
                continue
            if time.monotonic() >= deadline:
                who = f"{held_by[0]} pid {held_by[1]}" if len(held_by) >= 2 else "another run"
                raise EdgepackError(f"{self.name} is busy: profiled by {who} (lock {lock}); try again when it is done")
            time.sleep(LOCK_POLL_S)
        if probe:
            try:
                self._probed = self._probe_answer(rc, err, lines)
            except BaseException:
                self._release()
                raise

    def _release(self) -> None:
        try:
            self.transport.run(["rm", "-rf", "--", self._lock_path()], 30)
        except EdgepackError:
            pass  # a dropped device keeps a lock its next user sees as stale

    # ------------------------------------------------------------------ what the device is

    def probe(self) -> dict:
        """devices/probe.py's answer, run with the device's Python (asked once per device)."""
        if self._probed is None:
            with self.session():  # taking the lock probes too, unless held already or a benchmark_model device
                if self._probed is None:
                    lines: list[str] = []
                    rc, err = self.transport.run(self._probe_argv(), 120 + self.timeout_s / 10, on_line=lines.append)
                    self._probed = self._probe_answer(rc, err, lines)
        return self._probed

    def _probe_argv(self) -> list[str]:
        return [*self.pin(), *self.python, "-c", PROBE.read_text()]  # pinned: it counts the cores it gets

    def _probe_answer(self, rc: int, err: str, lines: list[str]) -> dict:
        if rc == 127 or (rc != 0 and "not found" in err):
            raise EdgepackError(f"{self.name}: no Python at {' '.join(self.python)!r} on the device "
                                "(set `python:` in devices.yaml)")
        return read_probe(self.name, rc, "\n".join(lines), err)

    def check(self, backend: str, artifact: Path) -> dict:
        """The device's environment, after refusing an artifact it cannot run (one line)."""
        if litert_benchmark.applies(self, backend):
            return litert_benchmark.environment(self)  # TFLite is portable: the binary is all it needs
        env = self.probe()
        runtime = get_backend(backend)
        needs = runtime.deployment(Path(artifact))
        why = refusal(env, self.name, needs["arch"], REGISTRY[runtime.name].packages, needs["minimum_version"],
                      needs["minimum_reason"], Path(artifact).name, needs.get("precision"))
        if why:
            raise EdgepackError(f"{why} (its Python: {' '.join(self.python)})" if "install" in why else why)
        return env

    # ------------------------------------------------------------------ one job

    def job(self, backend: str, artifact: Path, feeds: list[dict], settings: dict, progress: bool = False):
        """Push, run the worker, bring back: (its result, each feed's outputs or None).

        One command runs the worker, then prints its result (and outputs, base64) on stdout and
        removes the job folder: on a board each command costs a channel and a shell start, so a
        profile is four commands (lock + probe, push, run, unlock), not eight."""
        runtime, artifact = get_backend(backend), Path(artifact)
        if not artifact.is_file():
            raise EdgepackError(f"{artifact}: no such file")
        remote = PurePosixPath(self.workdir) / f"job-{uuid.uuid4().hex[:12]}"
        threads = int(settings.get("threads", 1))
        work = int(settings.get("warmup", 0)) + int(settings.get("runs", 0))
        with self.session(), tempfile.TemporaryDirectory(prefix="edgepack-job-") as tmp:
            stage = Path(tmp) / "job"
            stage.mkdir()
            for path in (artifact, *runtime.companions(artifact), WORKER, runtime.session_file()):
                if Path(path).is_file():
                    shutil.copy2(path, stage / Path(path).name)
            _write_remote_job(stage, remote, runtime.session_file().name, artifact.name, feeds, settings)
            self.transport.push(stage, str(remote))
            back: dict[str, str] = {}
            try:
                with progress_bar(f"{backend} on {self.name}", work, progress and work > 0) as advance:
                    rc, err = self.transport.run(
                        ["sh", "-c", _RUN_SCRIPT, "sh", str(remote), "1" if settings.get("outputs") else "",
                         *self.pin(), *self.python], self.timeout_s,
                        on_line=lambda ln: _on_line(ln, advance, work, back),
                        env={**self.env, "OMP_NUM_THREADS": threads, "TVM_NUM_THREADS": threads})
            finally:
                if "cleaned" not in back:  # the script did not get to its own clean-up
                    self.transport.remove(str(remote))
            if rc != 0 or "result" not in back:
                raise EdgepackError(f"{self.name}: {backend} artifact {artifact.name} failed: "
                                    f"{last_line(err, f'exit {rc}')}")
            outputs = None
            if settings.get("outputs"):
                (Path(tmp) / "outputs.npz").write_bytes(base64.b64decode(back.get("outputs", "")))
                outputs = read_outputs(Path(tmp), len(feeds))
        return json.loads(back["result"]), outputs

    def pin(self) -> list[str]:
        return ["taskset", "-c", self.affinity] if self.affinity else []

    # ------------------------------------------------------------------ the Device protocol

    def outputs(self, backend: str, artifact: Path, feeds: list[dict]) -> list[list[np.ndarray]]:
        if not feeds:
            return []
        return self.job(backend, artifact, feeds, {"threads": 1, "outputs": True})[1]

    def time(self, backend: str, artifact: Path, feeds: list[dict], threads: int, warmup: int, runs: int,
             progress: bool = True) -> dict:
        """The report's latency fields (a local-style summary) from one run on the device."""
        if runs < 1 or warmup < 0 or threads < 1 or not feeds:
            raise EdgepackError(f"need feeds, runs >= 1, warmup >= 0, threads >= 1 (got {len(feeds)} feeds, "
                                f"{runs}, {warmup}, {threads})")
        raw, _ = self.job(backend, artifact, feeds, {"threads": threads, "warmup": warmup, "runs": runs}, progress)
        return summarize(raw, threads=threads, warmup=warmup, batch=batch_of(feeds))

    def profile(self, backend: str, artifact: Path, feeds: list[dict], bench, reference: list | None = None,
                progress: bool = True) -> DeviceRun:
        """The whole round trip as a DeviceRun: checked, pushed, run with `bench`'s settings
        (runs, warmup, threads), raw samples and (given host `reference` outputs) parity."""
        if litert_benchmark.applies(self, backend):
            return litert_benchmark.profile(self, backend, Path(artifact), feeds, bench, progress)
        t0 = time.perf_counter()
        settings = {"threads": bench.threads, "warmup": bench.warmup, "runs": bench.runs,
                    "outputs": reference is not None}
        with self.session():
            env = self.check(backend, Path(artifact))
            raw, outs = self.job(backend, Path(artifact), feeds, settings, progress)
        parity = compare_outputs(reference, outs) if reference is not None else None
        return device_run(raw, self.name, self.kind, self.emulated, env, threads=bench.threads,
                          batch=batch_of(feeds), seconds=round(time.perf_counter() - t0, 3), parity=parity)


# ---------------------------------------------------------------------- helpers

def _stale(owner: list[str]) -> bool:
    """A device lock nobody holds any more: its process is gone from this host, or it is too old."""
    if len(owner) < 3:
        return True  # no owner file: a lock whose creator died between mkdir and echo
    host, pid, since = owner[0], owner[1], owner[2]
    try:
        if time.time() - int(since) > LOCK_STALE_S:
            return True
        if host == socket.gethostname():
            os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return False


def _write_remote_job(stage: Path, remote: PurePosixPath, session: str, artifact: str, feeds: list[dict],
                      settings: dict) -> None:
    """write_job's config, with every path as the device sees it."""
    write_job(stage, remote / session, remote / artifact, feeds, **settings)
    cfg = json.loads((stage / "config.json").read_text())
    for key in ("inputs", "result", "outputs"):
        if cfg.get(key):
            cfg[key] = str(remote / Path(cfg[key]).name)
    (stage / "config.json").write_text(json.dumps(cfg))


# $1 work folder, $2 lock folder, $3 owner line, then (optional) the probe's command, run once the
# lock is taken. mkdir is atomic: of two hosts, one gets TAKEN, the other BUSY and the owner.
_LOCK_SCRIPT = """work=$1; lock=$2; owner=$3; shift 3
mkdir -p "$work" || exit 1
if mkdir "$lock" 2>/dev/null; then echo "$owner" > "$lock/owner"; echo TAKEN
else echo "BUSY $(cat "$lock/owner" 2>/dev/null)"; exit 0; fi
if [ $# -gt 0 ]; then exec "$@"; fi
"""

# $1 job folder, $2 "1" to send outputs back, then the command that runs Python (taskset, python).
# The worker's exit code is kept; its result and outputs follow on stdout as tagged lines.
_RUN_SCRIPT = """job=$1; want=$2; shift 2
"$@" "$job/worker.py" "$job/config.json"; rc=$?
if [ -f "$job/result.json" ]; then printf '\\n@result '; tr -d '\\n' < "$job/result.json"; echo; fi
if [ -n "$want" ] && [ -f "$job/outputs.npz" ]; then printf '@outputs '
  if command -v base64 >/dev/null; then base64 -w0 "$job/outputs.npz"; echo
  else "$@" -c 'import base64,sys; print(base64.b64encode(open(sys.argv[1],"rb").read()).decode())' "$job/outputs.npz"
  fi; fi
rm -rf -- "$job" && echo @cleaned
exit $rc
"""


def _on_line(line: str, advance, work: int, back: dict | None = None):
    """A worker stdout line: progress, the first inference (-> the runs' allowance in seconds), or
    what the run script sends back (`@result`, `@outputs`, `@cleaned`, kept in `back`)."""
    if back is not None and line.startswith("@"):
        tag, _, value = line.strip().partition(" ")
        back[tag[1:]] = value
        return None
    try:
        msg = json.loads(line)
        if "first_ms" in msg:
            return runs_allowance(work, float(msg["first_ms"])) + 60  # + pulling the results
        if "progress" in msg:
            advance(msg["progress"])
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # libraries may print to stdout; only the worker's JSON lines count
    return None
