"""ONNX Runtime (CPU execution provider): the artifact is the canonical ONNX graph itself.

Loading and running: backends/sessions/onnxruntime_session.py (edgepack's one set of ONNX Runtime
session options)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

from edgepack.backends.base import Backend


# The first onnxruntime release implementing each ONNX opset (onnxruntime.ai's compatibility
# table); a model stamped with an opset above the table's last row needs the tested release.
FIRST_RELEASE = {12: "1.3", 13: "1.6", 14: "1.8", 15: "1.9", 16: "1.11", 17: "1.12", 18: "1.14", 19: "1.15",
                 20: "1.17", 21: "1.18"}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    session_module = "onnxruntime_session"

    def emit(self, model: onnx.ModelProto, outdir: Path, profile, precision: str = "fp32",
             calib=None) -> Path:
        # ORT applies its own graph optimisations at load time, tuned to the CPU it runs on;
        # baking them in here would tie the artifact to this machine.
        path = outdir / "model.onnx"
        onnx.save(model, str(path))
        return path

    def deployment(self, artifact: Path) -> dict:
        """The graph's opsets and op types, as onnxruntime's reduced-build configuration
        (`domain;opset;Op1,Op2` lines: what `--include_ops_by_config` needs), and the first
        onnxruntime release implementing its opset."""
        model = onnx.load(str(artifact), load_external_data=False)
        opsets = {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}
        used = Counter((n.domain or "ai.onnx", n.op_type) for n in model.graph.node)
        config = [f"{d};{opsets.get(d, 1)};{','.join(sorted(op for dd, op in used if dd == d))}"
                  for d in sorted({d for d, _ in used})]
        opset = opsets.get("ai.onnx", 0)
        minimum = FIRST_RELEASE.get(max(opset, min(FIRST_RELEASE)))
        reason = (f"ONNX opset {opset} is implemented from onnxruntime {minimum} on" if minimum else
                  f"ONNX opset {opset}: no onnxruntime release older than the tested one was checked")
        ops = {f"{op}" if d == "ai.onnx" else f"{d}:{op}": n for (d, op), n in sorted(used.items())}
        return {"arch": "any", "minimum_version": minimum, "minimum_reason": reason,
                "ops": {"format": "onnx", "opsets": opsets, "ops": ops, "reduced_build_config": config}}
