"""Where trials run: a local process pool by default (no Ray needed), or Ray (search/ray.py).

Both take `Job`s and hand back (ticket, figures) as trials finish, in whatever order. Compiles
are safe side by side (no process-global state in the compiler); each pool worker is a fresh
`spawn`ed process, so no torch or runtime threads are inherited from a forked parent.
"""

from __future__ import annotations

import multiprocessing
import queue
from typing import Protocol

from edgepack.search.evaluate import Job, evaluate


class Executor(Protocol):
    def submit(self, ticket: int, job: Job) -> None: ...
    def next_done(self) -> tuple[int, dict]: ...
    def close(self) -> None: ...


class LocalPool:
    """`workers` spawned processes; results arrive through a queue as each trial ends."""

    def __init__(self, workers: int):
        from edgepack import interrupt

        # a terminated worker takes the Ctrl-C path: its compile's staged output is removed
        self.pool = multiprocessing.get_context("spawn").Pool(workers, initializer=interrupt.install)
        self.done: queue.Queue = queue.Queue()

    def submit(self, ticket: int, job: Job) -> None:
        self.pool.apply_async(evaluate, (job,), callback=lambda fig: self.done.put((ticket, fig, None)),
                              error_callback=lambda e: self.done.put((ticket, None, e)))

    def next_done(self) -> tuple[int, dict]:
        ticket, fig, error = self.done.get()
        if error is not None:
            raise error
        return ticket, fig

    def close(self) -> None:
        """Stop the workers now (an interrupt must not leave compiles running behind it)."""
        self.pool.terminate()
        self.pool.join()


def make_executor(kind: str, workers: int, devices: set[str]) -> Executor:
    """"local" (default), "ray" (a local Ray instance) or "ray://ADDRESS" (a cluster)."""
    if kind == "local":
        return LocalPool(workers)
    if kind == "ray" or kind.startswith("ray://"):
        from edgepack.search.ray import RayExecutor

        return RayExecutor(None if kind == "ray" else kind, workers, devices)
    from edgepack.errors import EdgepackError

    raise EdgepackError(f"unknown executor {kind[:80]!r}: use local, ray or ray://ADDRESS")
