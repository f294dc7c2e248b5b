"""Opening the MLflow store: SQLite made safe for several processes, a server checked first.

SQLite serialises writers; MLflow's first open of a new database runs its schema migrations,
and two processes doing that at once collide ("table already exists"), as do two creating the
same experiment. Opening therefore happens under a file lock beside the database, and every
write goes through `retry`, which backs off while another process holds the database
("database is locked") instead of losing the run. A server is asked for /health with a short
timeout first: MLflow's own client retries an unreachable host for minutes.
"""

from __future__ import annotations

import logging
import os
import random
import time
import urllib.request
from pathlib import Path

from edgepack.errors import EdgepackError
from edgepack.fsutil import file_lock
from edgepack.tracking import EXPERIMENT, tracking_uri

# how long writes keep retrying while the SQLite database is locked ($EDGEPACK_TRACK_LOCK_WAIT_S)
LOCK_WAIT_S = float(os.environ.get("EDGEPACK_TRACK_LOCK_WAIT_S", "120"))


def quiet() -> None:
    """MLflow, alembic and SQLAlchemy speak through logging and progress bars: keep them still
    (the command's own output is the user's)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    for name in ("mlflow", "alembic", "sqlalchemy", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def check_server(uri: str, timeout_s: float = 3.0) -> None:
    """EdgepackError (one line) unless the server answers /health."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
            if r.status == 200:
                return
            raise EdgepackError(f"{uri} answered {r.status}")
    except OSError as e:
        raise EdgepackError(f"unreachable ({getattr(e, 'reason', None) or e})") from None


class Store:
    """An MlflowClient whose every call retries while SQLite is locked, and the experiment."""

    def __init__(self, uri: str | None = None, create: bool = True):
        quiet()
        import mlflow

        self.uri = tracking_uri(uri)
        if not create:  # a reader: runs still being recorded in the background land first
            from edgepack.tracking import settle

            if not settle(self.uri):
                raise EdgepackError(f"{self.uri}: a run is still being recorded after 10 minutes; try again later")
        db = sqlite_path(self.uri)
        if self.uri.startswith(("http://", "https://")):
            check_server(self.uri)
        elif db is not None and not db.exists() and not create:
            raise EdgepackError(f"no runs recorded here: {db} does not exist (run a compile first, or give "
                                "--tracking-uri)")
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(db.with_name(db.name + ".lock")):
                self.client = mlflow.MlflowClient(self.uri, self.uri)
                self.experiment_id = self._experiment(db.parent / "artifacts", create)
        else:
            self.client = mlflow.MlflowClient(self.uri, self.uri)
            self.experiment_id = self._experiment(None, create)
        mlflow.set_experiment(experiment_id=self.experiment_id)  # where flavor log_model() calls put models

    def _experiment(self, artifacts: Path | None, create: bool) -> str:
        exp = retry(self.client.get_experiment_by_name, EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        if not create:
            raise EdgepackError(f"no edgepack runs in {self.uri}")
        location = artifacts.resolve().as_uri() if artifacts is not None else None
        try:
            return retry(self.client.create_experiment, EXPERIMENT, artifact_location=location)
        except Exception:  # another process (on a server) made it first
            return retry(self.client.get_experiment_by_name, EXPERIMENT).experiment_id

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr
        return lambda *a, **k: retry(attr, *a, **k)


def locked(e: BaseException) -> bool:
    text = str(e).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


def retry(fn, *args, wait_s: float = LOCK_WAIT_S, **kwargs):
    """fn(*args, **kwargs), retried with jittered backoff while the SQLite database is locked."""
    deadline, delay = time.monotonic() + wait_s, 0.05
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not locked(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
