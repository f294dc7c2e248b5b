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
        self.pool = multiprocessing.get_context("spawn").Pool(workers)
        self.done: queue.Queue = queue.Queue()
        self.pending = 0

    def submit(self, ticket: int, job: Job) -> None:
        self.pending += 1
        self.pool.apply_async(_evaluate, (job,), callback=lambda fig: self.done.put((ticket, fig, None)),
                              error_callback=lambda e: self.done.put((ticket, None, e)))

    def next_done(self) -> tuple[int, dict]:
        ticket, fig, error = self.done.get()
        self.pending -= 1
        if error is not None:
            raise error
        return ticket, fig

    def close(self) -> None:
        """Stop the workers: at once when trials are still running (an interrupt must not leave
        compiles behind it), else let them exit."""
        if self.pending:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()


def _evaluate(job: Job) -> dict:
    """A pool worker's trial. While it runs, SIGTERM (the pool's terminate) takes the Ctrl-C
    path so the compile's staged output is removed; then the worker exits quietly."""
    import os
    import signal

    from edgepack import interrupt

    interrupt.install()
    try:
        return evaluate(job)
    except KeyboardInterrupt:
        os._exit(130)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def make_executor(kind: str, workers: int, devices: set[str]) -> Executor:
    """"local" (default), "ray" (a local Ray instance) or "ray://ADDRESS" (a cluster)."""
    if kind == "local":
        return LocalPool(workers)
    if kind == "ray" or kind.startswith("ray://"):
        from edgepack.search.ray import RayExecutor

        return RayExecutor(None if kind == "ray" else kind, workers, devices)
    from edgepack.errors import EdgepackError

    raise EdgepackError(f"unknown executor {kind[:80]!r}: use local, ray or ray://ADDRESS")
