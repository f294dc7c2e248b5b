"""Apache TVM (Relax VM) session: `model.so` plus its `model.json` sidecar. Imports nothing from
edgepack.

On a board, set TVM_USE_RUNTIME_LIB=1 before this is imported: `import tvm` then loads only
TVM's runtime library instead of the 240 MB compiler.

Threads: TVM's CPU thread pool belongs to the thread that runs inference and is sized when first
used; `open_session(threads=N)` sizes the calling thread's pool through TVM's API
(`runtime.config_threadpool`), never through TVM_NUM_THREADS in the process's environment (a
compile in another thread of the same process must not see it change).
"""

from __future__ import annotations

import json
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
    """Run this thread's TVM inference on `threads` threads. TVM sizes a thread's pool from a
    per-thread concurrency that `config_threadpool` sets from its CPU list (else from
    $TVM_NUM_THREADS or half the logical cores), so the list is passed with `threads` entries:
    that sizes a new pool and reconfigures a running one."""
    threads = max(1, int(threads))
    config = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if config is not None:
        # 1 = kBig: the big cores, `threads` of them (kBig uses the list's length, not its ids)
        config(1, threads, [str(i) for i in range(threads)])


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
