"""The emulated ARM64 board (edgepack.board): proves a cross-compiled artifact runs on aarch64 and
computes the right numbers. Its times are emulated (35-250x slower than a real board) and are
only ever reported as such, labelled with board.EMULATED_NOTE, never as latency.

Each run "deploys" like a real board would get it: the artifact, its companion files (asked of
its backend), the worker and the backend's session module are copied into a fresh folder, and
the board's Python runs the worker there under qemu.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgepack.backends import get_backend
from edgepack.board import EMULATED_NOTE, Board, ensure_board
from edgepack.devices.base import PROBE, WORKER, read_outputs, read_probe, write_job
from edgepack.devices.local import run_worker
from edgepack.errors import EdgepackError
from edgepack.ui import progress_bar


class QemuDevice:
    name = "qemu-aarch64"
    latency_is_real = False

    def __init__(self, board: Board | None = None, timeout_s: float = 900):
        self._board = board
        self.timeout_s = timeout_s

    @property
    def board(self) -> Board:
        """Built on first use (minutes the first time), then reused."""
        if self._board is None:
            self._board = ensure_board()
        return self._board

    def outputs(self, backend: str, artifact: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        if not feeds:
            return []
        return self._run(backend, Path(artifact), feeds, {"threads": 1, "outputs": True}, False)[1]

    def time(self, backend: str, artifact: Path, feeds: list[dict[str, np.ndarray]], threads: int = 1,
             warmup: int = 0, runs: int = 10, progress: bool = True) -> dict:
        """Emulated times (never latency): {"kind", "emulated": True, "emulated_ms", "note", "outputs"}."""
        if runs < 1 or warmup < 0 or threads < 1 or not feeds:
            raise EdgepackError(f"emulated board: need feeds, runs >= 1, warmup >= 0, threads >= 1 "
                                f"(got {len(feeds)} feeds, {runs}, {warmup}, {threads})")
        raw, _ = self._run(backend, Path(artifact), feeds, {"threads": threads, "warmup": warmup, "runs": runs},
                           progress)
        times = raw["times_ms"]
        emulated = {"first": raw["first_ms"], "runs": len(times),
                    "p50": float(np.percentile(times, 50)) if times else raw["first_ms"],
                    "load": raw["load_ms"], "import": raw["import_ms"]}
        return {"kind": backend, "emulated": True, "emulated_ms": emulated, "note": EMULATED_NOTE,
                "outputs": raw["outputs"]}

    def probe(self) -> dict:
        """The emulated board's environment: the probe script copied there and run by its Python."""
        with self.board.deploy_dir() as tmp:
            shutil.copy2(PROBE, tmp / PROBE.name)
            try:
                proc = subprocess.run(self.board.command(str(tmp / PROBE.name)), capture_output=True, text=True,
                                      timeout=self.timeout_s, env=self.board.env(), cwd=tmp)
            except subprocess.TimeoutExpired:
                raise EdgepackError(f"{self.name}: the device probe did not answer within {self.timeout_s:.0f} s") \
                    from None
        return read_probe(self.name, proc.returncode, proc.stdout, proc.stderr)

    def _run(self, backend: str, artifact: Path, feeds: list[dict], settings: dict, progress: bool) -> tuple:
        """Deploy and run one worker job on the board: (its result, each feed's outputs or None)."""
        runtime = get_backend(backend)
        if not artifact.is_file():
            raise EdgepackError(f"board: {artifact}: no such file")
        with self.board.deploy_dir() as tmp:
            # "deploy": the board sees only what was copied
            for path in (artifact, *runtime.companions(artifact), WORKER, runtime.session_file()):
                if Path(path).is_file():
                    shutil.copy2(path, tmp / Path(path).name)
            config = write_job(tmp, tmp / runtime.session_file().name, tmp / artifact.name, feeds, **settings)
            threads = settings["threads"]
            total = settings.get("warmup", 0) + settings.get("runs", 0)
            with progress_bar(f"{backend}: emulated run", total, progress) as advance:
                raw = run_worker(self.board.command(str(tmp / WORKER.name), str(config)), tmp, advance,
                                 self.timeout_s, what=f"emulated board: {backend} artifact {artifact.name}",
                                 env=self.board.env({"TVM_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}))
            outputs = read_outputs(tmp, len(feeds)) if settings.get("outputs") else None
        return raw, outputs
