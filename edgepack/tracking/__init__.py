"""Experiment tracking: every compile, profile and recipe run recorded in MLflow, on by default.

Tracking is one Events listener. The compiler, the pipeline and the search never import this
package; they emit events, and the listener here forwards them (as JSON lines) to a recorder
process (`tracking/agent.py`) that holds MLflow. A separate process because importing MLflow
and opening its store costs ~2.5 s on a 2-core machine (more than a small compile takes):
started with the command, it works beside it and finishes the record after the command has
returned (`EDGEPACK_TRACK_WAIT_S=N` makes the command wait up to N s for it, e.g. in CI). The
commands that read the store (`runs`, `registry`, `lineage`, `reproduce`) first wait for the
recorders still writing to it (`settle`), and at most SLOTS recorders write to one store at
once. The recorder also outlives a killed command long enough to mark its run KILLED.

Where runs go: `--tracking-uri`, else `$MLFLOW_TRACKING_URI`, else a SQLite store and an
artifact folder in the working directory: `./mlruns-edgepack/mlflow.db` and
`./mlruns-edgepack/artifacts/` (see them with
`mlflow ui --backend-store-uri sqlite:///mlruns-edgepack/mlflow.db`).
`--no-track` or `EDGEPACK_NO_TRACK=1` skips tracking. Nothing here may fail the work: a store
that is locked or unreachable costs one warning line, and the local reports are written as
always. Only modules of this package import `mlflow`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

DEFAULT_DIR = "mlruns-edgepack"  # in the working directory: mlflow.db + artifacts/
EXPERIMENT = "edgepack"
NO_TRACK_ENV = "EDGEPACK_NO_TRACK"
WAIT_ENV = "EDGEPACK_TRACK_WAIT_S"  # how long a command waits for its record to be written (default 0)
SLOTS = 4  # recorders writing to one store at once; a fifth command waits for a free slot before its work
DEBUG_ENV = "EDGEPACK_TRACK_DEBUG"  # keep MLflow's own messages (normally silenced)


def default_uri(cwd: str | Path | None = None) -> str:
    return f"sqlite:///{(Path(cwd or '.') / DEFAULT_DIR / 'mlflow.db').resolve()}"


def tracking_uri(given: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the SQLite store in the working directory.
    A bare path is a folder: its mlflow.db and artifacts/ are used."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    if "://" not in uri and not uri.startswith("sqlite:"):
        return f"sqlite:///{(Path(uri) / 'mlflow.db').resolve()}"
    return uri


def wanted(no_track: bool = False) -> bool:
    return not no_track and os.environ.get(NO_TRACK_ENV, "").strip().lower() in ("", "0", "false", "no")


def warn(message: str) -> None:
    print(f"edgepack: warning: tracking: {message}", file=sys.stderr, flush=True)


class Recorder:
    """The listener: each event as one JSON line to the recorder process."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.broken = proc, False

    @classmethod
    def start(cls, uri: str, start: dict) -> Recorder | None:
        if uri.startswith(("http://", "https://")):  # said now, in one line, not after the work
            from edgepack.errors import EdgepackError
            from edgepack.tracking.store import check_server

            try:
                check_server(uri)
            except EdgepackError as e:
                warn(f"{uri}: {e}: this run is not recorded; the local reports are complete")
                return None
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONWARNINGS": "ignore"}
        slot = take_slot(uri)
        try:  # its own session: a Ctrl-C or SIGTERM to the command's group must not kill the record;
            # it inherits the slot's lock and holds it until the record is written
            proc = subprocess.Popen([sys.executable, "-m", "edgepack.tracking.agent"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, env=env, start_new_session=True, pass_fds=(slot,))
        except OSError as e:
            warn(f"cannot start the recorder ({e.strerror or e}); this run is not recorded")
            return None
        finally:
            os.close(slot)
        rec = cls(proc)
        rec.send({"op": "start", **start})
        return rec

    def send(self, message: dict) -> None:
        if self.broken:
            return
        try:
            self.proc.stdin.write((json.dumps(message, default=str) + "\n").encode())
            self.proc.stdin.flush()
        except (OSError, ValueError):  # the recorder gave up (it said why on stderr)
            self.broken = True

    def __call__(self, event) -> None:
        self.send({"op": "event", "kind": event.kind, "message": event.message, "elapsed_s": event.elapsed_s,
                   "data": event.data})

    def finish(self, status: str, error: str | None = None, wait_s: float | None = None) -> None:
        self.send({"op": "end", "status": status, "error": error})
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        wait = wait_s if wait_s is not None else float(os.environ.get(WAIT_ENV, "0") or 0)
        if wait <= 0:  # the recorder finishes on its own; `edgepack runs ...` wait for it (settle())
            return
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:  # it goes on writing on its own; the work's result stands
            warn(f"still writing the record after {wait:.0f} s; it finishes in the background (pid {self.proc.pid})")


@contextmanager
def session(command: str, start: dict, uri: str | None = None, enabled: bool = True):
    """Record the work done inside the block; yields the listener (None when not tracking).
    The run ends FINISHED, FAILED (an exception) or KILLED (Ctrl-C / SIGTERM)."""
    if not enabled or not wanted():
        yield None
        return
    rec = Recorder.start(tracking_uri(uri), {"command": command, "cwd": os.getcwd(), "time": time.time(), **start})
    if rec is None:
        yield None
        return
    status, error, wait = "FINISHED", None, None  # wait: $EDGEPACK_TRACK_WAIT_S
    try:
        yield rec
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException as e:
        status, error = "FAILED", f"{type(e).__name__}: {e}"[:500]
        raise
    finally:
        rec.finish(status, error, wait)


def listeners(rec) -> tuple:
    """The listeners to add to an Events object: the recorder's, or none."""
    return (rec,) if rec is not None else ()


def recipe_json(recipe) -> dict:
    """A recipe as JSON that `edgepack reproduce` can run again: paths made absolute (its
    folder), anything in memory (a module, arrays) written as its type name."""
    data = json.loads(recipe.model_dump_json(exclude={"base_dir"}, fallback=lambda v: f"<{type(v).__name__}>"))
    data["base_dir"] = str(Path(recipe.base_dir).resolve())
    return data


def _slot_dir(uri: str) -> Path:
    folder = Path(tempfile.gettempdir()) / f"edgepack-recorders-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def take_slot(uri: str) -> int:
    """An open, locked slot file (fd) among SLOTS for this store: a recorder holds one while it
    writes. All taken (a loop of quick compiles): wait for one, so recorders never pile up."""
    folder = _slot_dir(uri)
    fds = [os.open(folder / f"slot-{i}", os.O_CREAT | os.O_RDWR, 0o666) for i in range(SLOTS)]
    chosen = None
    for fd in fds:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            chosen = fd
            break
        except BlockingIOError:
            continue
    if chosen is None:
        chosen = fds[os.getpid() % SLOTS]
        fcntl.flock(chosen, fcntl.LOCK_EX)
    for fd in fds:
        if fd != chosen:
            os.close(fd)
    return chosen


def settle(uri: str | None = None, timeout_s: float = 600.0) -> bool:
    """Wait until no recorder is writing to this store (the commands that read it call this, so
    a run recorded in the background is seen whole); False if one still writes after `timeout_s`."""
    folder = _slot_dir(tracking_uri(uri))
    deadline = time.monotonic() + timeout_s
    for i in range(SLOTS):
        fd = os.open(folder / f"slot-{i}", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.1)
        finally:
            os.close(fd)
    return True
