"""Quieting a library's logging for the length of a call, without touching anyone else's.

Compiles may run in threads of one process (sweeps), beside a user's own logging, so nothing here
changes the root logger's level or leaves a level changed after the call:

- a library's named loggers (`logging.getLogger("nncf")` and its children) get `level` for the
  duration and their previous level back on exit. Overlapping uses from several threads are
  reference-counted: the last one out restores the level the first one found.
- some libraries log through the root logger's module functions (onnxruntime.quantization calls
  `logging.warning(...)`): those records are dropped by a filter on the root logger that matches
  only records whose source file lies in the named package, below `level`. Everyone else's
  root-logger records pass untouched.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from contextlib import contextmanager

_lock = threading.Lock()
_saved: dict[str, tuple[int, int]] = {}  # logger name -> (users, level it had before the first)


class _PackageFilter(logging.Filter):
    """Drops root-logger records below a level that come from the source files of given packages."""

    def __init__(self):
        super().__init__()
        self.active: Counter = Counter()  # (path fragment, level) -> users

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname or ""
        return not any(record.levelno < level and frag in path for frag, level in list(self.active))


_filter = _PackageFilter()


def _fragment(package: str) -> str:
    return f"{os.sep}{package.replace('.', os.sep)}{os.sep}"


def _enter(names: tuple[str, ...], level: int) -> None:
    with _lock:
        for name in names:
            users, before = _saved.get(name, (0, logging.getLogger(name).level))
            _saved[name] = (users + 1, before)
            logging.getLogger(name).setLevel(level)
            _filter.active[(_fragment(name), level)] += 1
        if _filter not in logging.getLogger().filters:
            logging.getLogger().addFilter(_filter)


def _exit(names: tuple[str, ...], level: int) -> None:
    with _lock:
        for name in names:
            users, before = _saved[name]
            if users == 1:
                del _saved[name]
                logging.getLogger(name).setLevel(before)
            else:
                _saved[name] = (users - 1, before)
            key = (_fragment(name), level)
            _filter.active[key] -= 1
            if _filter.active[key] <= 0:
                del _filter.active[key]
        if not _filter.active:
            logging.getLogger().removeFilter(_filter)


@contextmanager
def quiet(*packages: str, level: int = logging.ERROR):
    """Only records at `level` or above from `packages` (e.g. "nncf", "onnxruntime.quantization"),
    whether logged on their own loggers or through the root logger, until the block ends."""
    _enter(packages, level)
    try:
        yield
    finally:
        _exit(packages, level)
