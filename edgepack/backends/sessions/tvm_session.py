"""Apache TVM (Relax VM) session: `model.so` plus its `model.json` sidecar. Imports nothing from
edgepack.

On a board, set TVM_USE_RUNTIME_LIB=1 before this is imported: `import tvm` then loads only
TVM's runtime library instead of the 240 MB compiler.

Threads: TVM's CPU thread pool reads TVM_NUM_THREADS when it starts, so `open_session` sets it
before the first inference and also reconfigures a pool that is already running
(`runtime.config_threadpool`), so every `open_session(threads=N)` runs with N threads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine

SIDECAR = "model.json"


class SessionError(Exception):
    """A failure the user can fix (bad file, wrong inputs), in one line."""


def read_sidecar(artifact: str | Path) -> dict:
    path = Path(artifact).with_name(SIDECAR)
    if not path.is_file():
        raise SessionError(f"{artifact}: {SIDECAR} missing beside it (it holds the I/O names and target)")
    return json.loads(path.read_text())


def set_threads(threads: int) -> None:
    threads = max(1, int(threads))
    os.environ["TVM_NUM_THREADS"] = str(threads)  # read when the pool starts
    config = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if config is not None:  # a pool may already be running with another count
        config(1, threads)  # 1 = kBig: the big cores, `threads` of them


def _flatten(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    result = []
    for item in out:
        result.extend(_flatten(item))
    return result


class Session:
    def __init__(self, vm, meta: dict):
        self.vm, self.meta = vm, meta
        self._main = vm[meta.get("entry", "main")]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[s["name"]], dtype=s["dtype"]))
                    for s in self.meta["inputs"]]
        except KeyError as e:
            raise SessionError(f"TVM artifact needs input {e.args[0]!r}; got {', '.join(feeds)}") from None
        return _flatten(self._main(*args))

    def inputs(self) -> list[dict]:
        return [{"name": s["name"], "shape": list(s["shape"]), "dtype": s["dtype"]} for s in self.meta["inputs"]]


def open_session(artifact: str, threads: int) -> Session:
    meta = read_sidecar(artifact)
    set_threads(threads)
    return Session(VirtualMachine(tvm.runtime.load_module(str(artifact)), tvm.cpu()), meta)
