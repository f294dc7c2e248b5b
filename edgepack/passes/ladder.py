"""The fallback ladder for onnxruntime's static quantizer: a quantizer bug never ends the INT8 search.

onnxruntime's QDQ quantizer has raised on real graphs: magika's classifier (a Gemm whose bias
is [1, N], not [N]) made its per-channel int32-bias weight-scale adjustment index a row where
it expects a number ("ValueError: The truth value of an array with more than one element is
ambiguous"). When the configured quantization raises, each rung is another way to a QDQ graph,
tried in order, from the one that changes least:

1. the int32-bias weight-scale adjustment off (`QDQDisableWeightAdjustForInt32Bias`): the
   scheme is unchanged; a bias whose scale would be too small for int32 is clipped instead;
2. per-tensor weights (one scale per weight tensor);
3. the scheme as configured, with the node(s) that make it raise left float (found by bisection).

The rung that worked is kept for every later quantization of the same graph (the speed and
accuracy searches quantize it many times, from the same cached calibration). When every rung
fails, the caller's other candidates (NNCF's graph) are what remains.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from edgepack.errors import EdgepackError

CONFIGURED = "as configured"
NO_BIAS_ADJUST = "int32-bias weight-scale adjustment off"
PER_TENSOR = "per-tensor weights"
FLOAT_FAILING = "failing nodes float"
RUNGS = (CONFIGURED, NO_BIAS_ADJUST, PER_TENSOR, FLOAT_FAILING)
MAX_FAILING = 4  # node-local bugs hit a node or two; past this the bug is not node-local

# run(settings, keep_float) -> the quantized model; raises EdgepackError (one line) when it fails
Run = Callable[[dict, list[str]], onnx.ModelProto]


def rung_settings(rung: str, settings: dict) -> dict:
    """onnxruntime.quantization's keyword arguments for `rung` (the configured ones untouched)."""
    if rung == NO_BIAS_ADJUST:
        return {**settings, "extra_options": {**settings["extra_options"], "QDQDisableWeightAdjustForInt32Bias": True}}
    if rung == PER_TENSOR:
        return {**settings, "per_channel": False}
    return settings


class Ladder:
    """Climbs the rungs for one graph; remembers the rung that worked and what failed before it."""

    def __init__(self, settings: dict, quantizable: Callable[[list[str]], list[str]], rungs=RUNGS):
        unknown = set(rungs) - set(RUNGS)
        if unknown or not rungs:
            raise EdgepackError(f"unknown quantizer fallback rung(s) {sorted(unknown)}; known: {', '.join(RUNGS)}")
        self.settings, self.quantizable, self.rungs = settings, quantizable, tuple(rungs)
        self.rung: str | None = None  # the rung that produced the last graph
        self.failed: dict[str, str] = {}  # rung -> its first error line, in the order tried
        self.failing: list[str] = []  # nodes rung FLOAT_FAILING leaves float

    def quantize(self, run: Run, keep_float: list[str]) -> onnx.ModelProto:
        """The graph from the first rung that works, starting at the one that worked last time."""
        start = self.rungs.index(self.rung) if self.rung else 0
        for rung in self.rungs[start:]:
            try:
                model = self._run(rung, run, list(keep_float))
            except EdgepackError as e:
                self.failed[rung] = str(e)
                continue
            self.rung = rung
            return model
        self.rung = None
        raise EdgepackError("onnxruntime's quantizer failed on every fallback rung: " +
                            "; ".join(f"{r}: {e}" for r, e in self.failed.items()))

    def _run(self, rung: str, run: Run, keep_float: list[str]) -> onnx.ModelProto:
        if rung != FLOAT_FAILING:
            return run(rung_settings(rung, self.settings), keep_float)
        if self.failing:  # found for an earlier scope: try those first
            try:
                return run(self.settings, keep_float + self.failing)
            except EdgepackError:
                pass
        self.failing = self._find_failing(run, keep_float)
        return run(self.settings, keep_float + self.failing)

    def _find_failing(self, run: Run, keep_float: list[str]) -> list[str]:
        """The nodes whose quantization raises, by bisection over the nodes the quantizer would
        take, in graph order: the shortest prefix that raises when quantized alone ends with a
        failing node; that node goes float and the search repeats (log2(nodes) quantizations
        per failing node, each from the cached calibration)."""
        def raises(quantized: list[str]) -> bool:
            try:
                run(self.settings, keep_float + failing + [n for n in nodes if n not in quantized])
            except EdgepackError:
                return True
            return False

        nodes, failing = self.quantizable(keep_float), []
        if raises([]):
            raise EdgepackError("it raises with every node float: the bug is not in one node")
        while raises(nodes):
            if len(failing) == MAX_FAILING:
                raise EdgepackError(f"more than {MAX_FAILING} nodes make it raise")
            lo, hi = 0, len(nodes)  # nodes[:lo] quantize, nodes[:hi] raise
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if raises(nodes[:mid]) else (mid, hi)
            failing.append(nodes.pop(hi - 1))
        return failing
