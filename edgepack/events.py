"""Events: what compile and the flow tell the world while they work.

The compiler and the pipeline never print: they emit events (a step done, a stage done, an
artifact built, a report written) to the listeners they were given. The terminal view is one
listener; tracking and search are others. On a terminal the console listener prints styled
lines and progress bars; in a log (CI, nohup, a pipe) it prints one plain line per event with
the elapsed time, so a 15-minute INT8 search is never silent.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Kind = Literal["step", "stage_done", "artifact", "report", "note"]


@dataclass(frozen=True)
class Event:
    kind: Kind
    message: str  # one line a person can read
    elapsed_s: float  # since the Events object started (the command's clock)
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable details (JSON-safe)


class Listener(Protocol):
    def __call__(self, event: Event) -> None: ...


class Events:
    """Fans events out to listeners; also hands out progress callbacks for long loops."""

    def __init__(self, *listeners: Listener, progress: bool = False):
        self.listeners = list(listeners)
        self.show_progress = progress
        self.t0 = time.perf_counter()

    def emit(self, kind: Kind, message: str, **data) -> Event:
        event = Event(kind, message, round(time.perf_counter() - self.t0, 3), data)
        for listener in self.listeners:
            listener(event)
        return event

    def step(self, message: str, **data) -> Event:
        return self.emit("step", message, **data)

    @contextmanager
    def progress(self, label: str, total: int):
        """Yield `advance(done)`; a bar on an interactive terminal when progress is on."""
        from edgepack.ui import progress_bar

        with progress_bar(label, total, self.show_progress) as advance:
            yield advance


def silent() -> Events:
    """No listener: for library callers that want no output."""
    return Events()


class ConsoleListener:
    """Events on stderr: styled on a terminal, one plain timestamped line otherwise."""

    def __init__(self, console=None):
        from edgepack.ui import console as default

        self.console = console or default

    def __call__(self, event: Event) -> None:
        if self.console.is_terminal:
            self.console.print(event.message, markup=False, highlight=False)
        else:
            self.console.file.write(f"[{event.elapsed_s:8.1f}s] {event.message}\n")
            self.console.file.flush()


def console_events(progress: bool = True) -> Events:
    """What the CLI and the flat API use: the console view, with bars when `progress`."""
    return Events(ConsoleListener(), progress=progress)

