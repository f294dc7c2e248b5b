"""Accuracy control: put the quantized layers that cost the metric most per MAC back to float
until the drop fits the budget.

Layers are ranked by their measured effect on the metric, not by a proxy: the quantized nodes
are cut into contiguous groups (in graph order, so a group is a stretch of the network), each
group alone is kept float and the metric re-measured. Calibration is cached by the Quantizer,
so each trial costs one re-quantization and one evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from edgepack.errors import EdgepackError
from edgepack.ir.stats import model_stats
from edgepack.passes.metrics import Evaluator, drop
from edgepack.passes.quantize import Quantizer, quantized_nodes
from edgepack.passes.speed import kinds_of
from edgepack.runtime import ort_runner

MAX_GROUPS = 12


@dataclass
class ControlResult:
    model: onnx.ModelProto
    score: float
    drop: float
    met: bool
    kept_float: list[dict] = field(default_factory=list)  # node, op_type, group, gain, reason
    steps: list[dict] = field(default_factory=list)
    ranking: list[dict] = field(default_factory=list)


def _groups(model: onnx.ModelProto, names: set[str], n_groups: int) -> list[tuple[str, list[onnx.NodeProto]]]:
    """Candidate groups: contiguous stretches of the graph, and every layer kind as a whole
    (one kind, e.g. the Mul/Add inside GELU, can hurt everywhere while the matmuls are fine)."""
    nodes = [n for n in model.graph.node if n.name in names]
    size = max(1, -(-len(nodes) // n_groups))
    groups = [(f"{nodes[i].name} .. {nodes[min(i + size, len(nodes)) - 1].name}", nodes[i:i + size])
              for i in range(0, len(nodes), size)]
    kinds = kinds_of(model, names)
    if len(kinds) > 1:
        by_name = {n.name: n for n in nodes}
        groups += [(f"all {k} layers", [by_name[n] for n in members]) for k, members in sorted(kinds.items())]
    return groups


def _rank(trial, qmodel: onnx.ModelProto, score: float, keep_float, model: onnx.ModelProto,
          progress) -> list[dict]:
    """Each group of `qmodel`'s INT8 layers alone kept float: the metric it gains, and its share
    of the MACs. Groups that buy the most metric per MAC moved to float come first. By gain alone,
    MobileNetV2 (cosine budget 0.01) floated 'all Conv layers' first: 93% of the MACs in float and
    INT8 slower than FP32; by gain per MAC the same budget was met with 22% of the MACs in float."""
    groups = _groups(model, quantized_nodes(qmodel) - set(keep_float), MAX_GROUPS)
    macs = {layer["name"]: layer["macs"] for layer in model_stats(model)["layers"]}
    total = sum(macs.values()) or 1
    ranking = []
    for i, (label, group) in enumerate(groups):
        try:
            _, g_score, _ = trial([n.name for n in group])
            ranking.append({"group": label, "nodes": [n.name for n in group], "gain": g_score - score,
                            "mac_share": sum(macs.get(n.name, 0) for n in group) / total})
        except EdgepackError:  # a quantizer that raises with this group float: it cannot go float
            pass
        if progress:
            progress(i + 1, len(groups))
    # MAC-free groups (Add, pooling) still cost Q/DQ moves: priced as the cheapest group with MACs
    floor = min((r["mac_share"] for r in ranking if r["mac_share"] > 0), default=1.0)
    return sorted(ranking, key=lambda r: -r["gain"] / max(r["mac_share"], floor))


def _trial(quantizer, evaluator: Evaluator, base_score: float, relative: bool, keep_float: list[str]):
    """trial(extra) -> (model, score, drop) with `keep_float` + `extra` left in float."""
    def trial(extra: list[str]):
        model = quantizer.quantize(list(keep_float) + extra)
        score = evaluator.score(ort_runner(model))
        return model, score, drop(base_score, score, relative)
    return trial


def rank(quantizer, evaluator: Evaluator, base_score: float, relative: bool, keep_float: list[str],
         progress=None) -> list[dict]:
    """The ranking `control` would measure on `quantizer`, on its own: for a quantizer of the same
    graph that is slow to run per group (NNCF) when `control` did not need one here."""
    trial = _trial(quantizer, evaluator, base_score, relative, keep_float)
    qmodel, score, _ = trial([])
    return _rank(trial, qmodel, score, keep_float, quantizer.model, progress)


def control(quantizer: Quantizer, evaluator: Evaluator, base_score: float, max_drop: float,
            relative: bool, keep_float: list[str], progress=None,
            ranking: list[dict] | Callable[[], list[dict]] | None = None) -> ControlResult:
    """Quantize with `keep_float`; if the drop exceeds `max_drop`, rank groups of layers by the
    metric gained when each alone stays float (or take `ranking`, measured on another quantizer of
    the same graph; a callable is asked only when it is needed), then return groups to float, best
    first, until the budget is met. If it never is, the best model seen is returned with
    met=False. `quantizer`: anything with `model` and `quantize(keep_float)` (edgepack's
    Quantizer, NncfQuantizer)."""
    trial = _trial(quantizer, evaluator, base_score, relative, keep_float)
    model, score, d = trial([])
    steps = [{"kept_float": len(keep_float), "score": score, "drop": d}]
    best = ControlResult(model, score, d, d <= max_drop, steps=steps)
    if best.met:
        return best
    if ranking is None:
        ranking = _rank(trial, model, score, keep_float, quantizer.model, progress)
    elif callable(ranking):
        ranking = ranking()
    best.ranking = ranking
    floated: list[dict] = []
    op_type = {n.name: n.op_type for n in quantizer.model.graph.node}
    for r in ranking:
        new = [n for n in r["nodes"] if n not in {f["node"] for f in floated}]
        if not new:  # a kind group can be covered by stretches already returned to float
            continue
        floated += [{"node": n, "op_type": op_type[n], "group": r["group"], "gain": r["gain"],
                     "reason": f"accuracy: keeping '{r['group']}' ({r['mac_share']:.0%} of the MACs) float "
                               f"alone gained {r['gain']:+.4f}"}
                    for n in new]
        try:
            model, g_score, d = trial([f["node"] for f in floated])
        except EdgepackError as e:  # NNCF has raised on some float scopes: that group stays INT8
            floated = floated[:-len(new)]
            steps.append({"kept_float": len(keep_float) + len(floated), "group": r["group"], "error": str(e)})
            continue
        steps.append({"kept_float": len(keep_float) + len(floated), "score": g_score, "drop": d})
        if g_score > best.score:
            best = ControlResult(model, g_score, d, d <= max_drop, list(floated), steps, ranking)
        if d <= max_drop:
            break
    best.steps, best.ranking = steps, ranking
    return best
