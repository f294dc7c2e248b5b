"""Trials as Ray tasks: the only module that imports ray (an optional extra: `pip install edgepack[ray]`).

`ray` alone starts a local instance with `ray.init(num_cpus=workers)` (Ray removed `local_mode`);
`ray://ADDRESS` joins a cluster. Boards are Ray custom resources named `device:NAME`, one unit
each: a trial compiles and is timed on this host without it, and only the timing on the board
runs as a task of its own that asks for that resource, so it waits until the board is free
instead of two trials timing on it at once, and a trial not worth the board's time never asks
(the waiting trial's CPU is lent back while it waits: Ray does so for a task blocked in get).
"""

from __future__ import annotations

import os
import sys

from edgepack.errors import EdgepackError
from edgepack.search.evaluate import Job, evaluate


def _ray():
    try:
        import ray
    except ImportError:
        raise EdgepackError("--executor ray needs Ray: pip install 'edgepack[ray]'") from None
    return ray


def device_resource(name: str) -> str:
    return f"device:{name}"


class RayExecutor:
    def __init__(self, address: str | None, workers: int, devices: set[str]):
        ray = self.ray = _ray()
        self.started = not ray.is_initialized()
        if self.started and address is None:
            # a local instance: its workers import edgepack (and anything the driver imports from
            # its own path, such as an injected timing strategy) from the driver's sys.path
            path = os.pathsep.join(p for p in sys.path if p)
            ray.init(num_cpus=workers, resources={device_resource(d): 1 for d in devices},
                     include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
        elif self.started:
            ray.init(address=address, log_to_driver=False)
        self.task = ray.remote(_evaluate)
        self.pending: dict = {}  # ObjectRef -> ticket

    def submit(self, ticket: int, job: Job) -> None:
        ref = self.task.options(num_cpus=1).remote(job)
        self.pending[ref] = ticket

    def next_done(self) -> tuple[int, dict]:
        done, _ = self.ray.wait(list(self.pending), num_returns=1)
        ticket = self.pending.pop(done[0])
        return ticket, self.ray.get(done[0])

    def close(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


def _evaluate(job: Job) -> dict:
    """A trial as a Ray task: its device timings, if any, as a task holding the board."""
    ray = _ray()

    def claim_device(fn):
        board = ray.remote(_call).options(num_cpus=1, resources={device_resource(job.device): 1})
        return ray.get(board.remote(fn))

    return evaluate(job, claim_device)


def _call(fn):
    return fn()
