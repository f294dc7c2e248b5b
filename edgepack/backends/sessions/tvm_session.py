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
import re
import time
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
    def __init__(self, vm, meta: dict, lib=None):
        self.vm, self.meta, self.lib = vm, meta, lib
        self._main = vm[meta.get("entry", "main")]

    def _args(self, feeds: dict[str, np.ndarray]) -> list:
        try:
            return [tvm.runtime.tensor(np.ascontiguousarray(feeds[s["name"]], dtype=s["dtype"]))
                    for s in self.meta["inputs"]]
        except KeyError as e:
            raise SessionError(f"TVM artifact needs input {e.args[0]!r}; got {', '.join(feeds)}") from None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return _flatten(self._main(*self._args(feeds)))

    def op_profile(self, feeds: list[dict[str, np.ndarray]], runs: int) -> list[dict]:
        """Per-call times of the Relax VM: TVM 0.27's VM has no profiler of its own, but its
        instrument hook is called before and after every Call instruction (a kernel or a VM
        builtin), and CPU kernels run synchronously, so the wall time between the two is the
        call's. A second VM over the same library carries the hook (the timed VM never does);
        each time includes the hook's own overhead (about a microsecond)."""
        vm = VirtualMachine(self.lib, tvm.cpu())
        spans: dict[str, dict] = {}
        started: list[int] = []

        def instrument(func, symbol, before, ret, *args):
            if before:
                started.append(time.perf_counter_ns())
            elif started:
                op = spans.setdefault(str(symbol), {"ns": 0, "calls": 0})
                op["ns"] += time.perf_counter_ns() - started.pop()
                op["calls"] += 1
            return 0  # VMInstrumentReturnKind.NO_OP

        main = vm[self.meta.get("entry", "main")]
        main(*self._args(feeds[0]))  # untimed, like the timed runs' warm-up
        vm.set_instrument(instrument)
        for i in range(runs):
            main(*self._args(feeds[i % len(feeds)]))
        n = max(1, runs)
        return [{"op": sym, "type": call_type(sym), "ms": v["ns"] / 1e6 / n, "calls": v["calls"] / n}
                for sym, v in spans.items()]

    def inputs(self) -> list[dict]:
        return [{"name": s["name"], "shape": list(s["shape"]), "dtype": s["dtype"]} for s in self.meta["inputs"]]


def call_type(symbol: str) -> str:
    """A VM call's kind: "vm.builtin" for the VM's own functions, else the kernel's name without
    the numeric suffix TVM adds to repeated fused functions (fused_conv2d_add_relu3 -> ..._relu)."""
    return "vm.builtin" if symbol.startswith("vm.builtin.") else re.sub(r"\d+$", "", symbol)


def open_session(artifact: str, threads: int) -> Session:
    meta = read_sidecar(artifact)
    set_threads(threads)
    lib = tvm.runtime.load_module(str(artifact))
    return Session(VirtualMachine(lib, tvm.cpu()), meta, lib)
