"""Signals that no library can swallow.

The CLI turns SIGTERM (like SIGINT) into KeyboardInterrupt so staged outputs are removed on the
way out. Third-party code with bare `except:` clauses (OpenVINO's converter, for one) can catch
that exception and carry on, and the compile would then finish and exit 0. The handler installed
here also records that a signal arrived; `check()`, called after each library call that might
have eaten the exception and before an output is published, raises it again.
"""

from __future__ import annotations

import signal
import threading

_received: int | None = None  # the signal number, once one arrived


def _handler(signum, frame):
    """Record the signal, then take the Ctrl-C path (KeyboardInterrupt)."""
    global _received
    _received = signum
    raise KeyboardInterrupt


def install(signals=(signal.SIGTERM, signal.SIGINT)) -> bool:
    """Record and raise on `signals` (SIGTERM and SIGINT). Only the main thread may set signal
    handlers; elsewhere (a library caller's worker thread) nothing changes and False is returned."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in signals:
        signal.signal(sig, _handler)
    return True


def requested() -> bool:
    """Whether a signal arrived since install() (or the last reset())."""
    return _received is not None


def check() -> None:
    """Raise KeyboardInterrupt if a signal arrived, even if someone swallowed the first one."""
    if _received is not None:
        raise KeyboardInterrupt(f"signal {signal.Signals(_received).name} received")


def reset() -> None:
    """Forget a recorded signal (tests; a long-lived host process that handled it)."""
    global _received
    _received = None
