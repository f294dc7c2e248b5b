"""Experiment tracking: every compile, profile and recipe run recorded in MLflow, on by default.

Tracking is one Events listener. The compiler, the pipeline and the search never import this
package; they emit events, and the listener here forwards them (as JSON lines) to a recorder
process (`tracking/agent.py`) that holds MLflow. A separate process because importing MLflow
and opening its store costs ~2.5 s on a 2-core machine: started with the command, at low
priority, it is ready by the time the work reports, and a compile pays only for the last
writes. It also outlives a killed command long enough to mark its run KILLED.

Where runs go: `--tracking-uri`, else `$MLFLOW_TRACKING_URI`, else a SQLite store and an
artifact folder in the working directory: `./mlruns-edgepack/mlflow.db` and
`./mlruns-edgepack/artifacts/` (see them with
`mlflow ui --backend-store-uri sqlite:///mlruns-edgepack/mlflow.db`).
`--no-track` or `EDGEPACK_NO_TRACK=1` skips tracking. Nothing here may fail the work: a store
that is locked or unreachable costs one warning line, and the local reports are written as
always. Only modules of this package import `mlflow`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

DEFAULT_DIR = "mlruns-edgepack"  # in the working directory: mlflow.db + artifacts/
EXPERIMENT = "edgepack"
NO_TRACK_ENV = "EDGEPACK_NO_TRACK"
WAIT_ENV = "EDGEPACK_TRACK_WAIT_S"  # how long a command waits for its record to be written
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
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONWARNINGS": "ignore"}
        try:  # its own session: a Ctrl-C or SIGTERM to the command's group must not kill the record
            proc = subprocess.Popen([sys.executable, "-m", "edgepack.tracking.agent"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as e:
            warn(f"cannot start the recorder ({e.strerror or e}); this run is not recorded")
            return None
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
        wait = wait_s if wait_s is not None else float(os.environ.get(WAIT_ENV, "120"))
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
    status, error, wait = "FINISHED", None, None
    try:
        yield rec
    except KeyboardInterrupt:
        status, wait = "KILLED", 15.0
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
