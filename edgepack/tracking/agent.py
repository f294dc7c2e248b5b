"""The recorder process: `python -m edgepack.tracking.agent`, started by tracking.session().

Reads one JSON message a line on stdin (start, events, end) and records them in the store
named by $MLFLOW_TRACKING_URI. It imports MLflow and opens the store while the command works,
at low priority so it does not disturb the timings. A failure costs one warning line on the
command's stderr and nothing else; stdin closing without an `end` (the command was killed)
marks the runs KILLED, never FINISHED.
"""

from __future__ import annotations

import json
import os
import sys


def _silence_stderr() -> int:
    """A private copy of stderr for our one warning line; libraries' chatter goes nowhere."""
    from edgepack.tracking import DEBUG_ENV

    keep = os.dup(2)
    if not os.environ.get(DEBUG_ENV):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    return keep


def _warm() -> None:
    """MLflow scans every installed distribution (~1 s) the first time it logs a model; done
    here, while the command still works, rather than when the report is ready."""
    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
    except Exception:
        pass


def main() -> int:
    try:
        os.nice(int(os.environ.get("EDGEPACK_TRACK_NICE", "10")))
    except OSError:
        pass
    err = _silence_stderr()
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")

    def warn(text: str) -> None:
        os.write(err, f"edgepack: warning: tracking: {text}; the local reports are complete\n".encode())

    try:
        from edgepack.tracking.recorder import RunRecorder
        from edgepack.tracking.store import Store

        rec = RunRecorder(Store(uri))
        _warm()
    except Exception as e:
        warn(f"{uri}: {_line(e)}: this run is not recorded")
        sys.stdin.buffer.read()  # let the command write on; its result does not depend on us
        return 0
    failed = False
    for line in sys.stdin.buffer:
        if failed:
            continue
        try:
            rec.handle(json.loads(line))
        except Exception as e:
            failed = True
            warn(f"{uri}: recording stopped ({_line(e)})")
            _give_up(rec)
    if not failed and not rec.ended:  # no `end`: the command was killed
        try:
            rec.end("KILLED", "the command stopped before it reported")
        except Exception as e:
            warn(f"{uri}: {_line(e)}")
    return 0


def _give_up(rec) -> None:
    """After a failure, close what is open as FAILED (best effort: the store may be gone)."""
    try:
        rec.end("FAILED", "recording failed")
    except Exception:
        pass


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


if __name__ == "__main__":
    sys.exit(main())
