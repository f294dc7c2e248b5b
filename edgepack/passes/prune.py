"""Pruning on the canonical ONNX graph: structured (whole channels) and magnitude (single weights).

Structured pruning removes channel groups found by `prune_graph.analyze` (Conv/Gemm/MatMul
outputs joined through elementwise ops, depthwise convs, residual joins, Concat, pooling +
Flatten into a classifier). A channel's importance is the L1 (or L2) norm of its filters summed
over every producer of the group and every depthwise filter it passes through. The canonical
graph has BatchNorm folded into the convs, so the BN scale is already part of those filters.
Kept widths are rounded up to the target's `pruning.channel_multiple`, never below it and never
to zero. The result is the pruned graph (checked, shape-inferred) and a `PrunePlan` - the kept
channel indices per group, as JSON - so a fine-tuning stage can prune the source model alike.

One-shot pruning without fine-tuning loses accuracy; the plan exists so that it can be recovered.

Magnitude pruning zeroes the smallest |w| of each Conv/Gemm/MatMul weight. ONNX Runtime's CPU
kernels are dense: zeros are multiplied like any other number, so no speed-up is expected and the
file only shrinks once compressed (zip/gzip of the .onnx).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from edgepack.errors import EdgepackError, close_names, first_line
from edgepack.passes.prune_graph import Analysis, Group, analyze, layout_index

NORMS = ("l1", "l2")
MODES = ("uniform", "global")
MAGNITUDE_SCOPES = ("global", "layer")
MAGNITUDE_OPS = ("Conv", "Gemm", "MatMul")
SPARSITY_NOTE = ("ONNX Runtime's CPU kernels do not exploit unstructured sparsity: zeroed weights "
                 "are still multiplied, so no speed-up is expected; the model file only shrinks "
                 "when compressed")


# --------------------------------------------------------------------------- analysis


def prune_groups(model: onnx.ModelProto) -> list[Group]:
    """Every channel group of `model`, prunable or not (`Group.reasons` says why not)."""
    return analyze(model).groups


def group_importance(model: onnx.ModelProto, group: Group, norm: str = "l1",
                     analysis: Analysis | None = None) -> np.ndarray:
    """Per-channel importance of `group`: L1/L2 norm of its filters summed over all producers
    and the depthwise filters the channels pass through (BN scale is folded into them)."""
    if norm not in NORMS:
        raise EdgepackError(f"unknown importance norm {norm!r}; use one of {', '.join(NORMS)}")
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    total = np.zeros(group.size, np.float64)

    def add(arr: np.ndarray, axis: int, idx: slice):
        rows = np.moveaxis(arr.astype(np.float64), axis, 0)[idx].reshape(idx.stop - idx.start, -1)
        total[:] += np.abs(rows).sum(1) if norm == "l1" else (rows ** 2).sum(1)

    for name, w_index, axis in group.producers:
        arr = numpy_helper.to_array(inits[nodes[name].input[w_index]])
        add(arr, axis, slice(0, group.size))
    analysis = analysis or analyze(model)
    for sl in analysis.slices:
        if sl.role != "depthwise":
            continue
        off = 0
        for gid, size in sl.layout.segments:
            if gid == group.id:
                add(numpy_helper.to_array(inits[nodes[sl.node].input[sl.index]]), 0, slice(off, off + size))
            off += size
    return total if norm == "l1" else np.sqrt(total)


def kept_width(size: int, ratio: float, multiple: int = 1) -> int:
    """Channels kept out of `size` at `ratio`, rounded up to `multiple`, never below it, never 0."""
    keep = size - math.floor(ratio * size + 1e-9)
    return min(size, max(multiple, math.ceil(max(keep, 1) / multiple) * multiple))


# --------------------------------------------------------------------------- plan


@dataclass
class PrunePlan:
    """Which channels each group keeps. JSON round-trips; group ids are stable for one graph."""

    ratio: float
    mode: str
    norm: str
    channel_multiple: int
    groups: dict = field(default_factory=dict)  # gid -> {"size", "kept", "members", "producers"}
    unprunable: list = field(default_factory=list)  # [{"id", "size", "members", "reasons"}]
    notes: list = field(default_factory=list)

    def kept(self) -> dict[int, list[int]]:
        return {int(g): v["kept"] for g, v in self.groups.items()}

    def summary(self) -> dict:
        before = sum(v["size"] for v in self.groups.values())
        after = sum(len(v["kept"]) for v in self.groups.values())
        return {"groups": len(self.groups), "unprunable_groups": len(self.unprunable),
                "channels_before": before, "channels_after": after,
                "channels_removed": before - after}

    def to_json(self) -> str:
        d = asdict(self)
        d["groups"] = {str(k): v for k, v in self.groups.items()}
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "PrunePlan":
        d = json.loads(text)
        d["groups"] = {int(k): v for k, v in d["groups"].items()}
        return cls(**d)

    def save(self, path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path) -> "PrunePlan":
        try:
            return cls.from_json(Path(path).read_text())
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise EdgepackError(f"cannot read prune plan {path}: {first_line(e)}")


def _check_ratio(ratio, what="pruning ratio") -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise EdgepackError(f"{what} must be a number in [0, 1), got {ratio!r}")
    if not 0.0 <= r < 1.0 or math.isnan(r):
        raise EdgepackError(f"{what} must be in [0, 1), got {ratio}")
    return r


def _node_names(model, names, what, all_names) -> None:
    for name in names:
        if name not in all_names:
            raise EdgepackError(f"{what} node {name!r} is not in the graph{close_names(name, all_names)}")


def _scope(model, overrides, protected, what: str) -> tuple[dict[str, float], list[str]]:
    """Checked per-node ratios and protected node names (names must exist in the graph)."""
    overrides, protected = dict(overrides or {}), list(protected or [])
    all_names = {n.name for n in model.graph.node}
    _node_names(model, overrides, what, all_names)
    _node_names(model, protected, "protected", all_names)
    for name, r in overrides.items():
        _check_ratio(r, f"{what} ratio for {name!r}")
    return overrides, protected


def plan_pruning(model: onnx.ModelProto, ratio: float, *, mode: str = "uniform", norm: str = "l1",
                 channel_multiple: int = 1, overrides: dict[str, float] | None = None,
                 protected: list[str] | None = None, analysis: Analysis | None = None) -> PrunePlan:
    """Choose the kept channels of every prunable group.

    uniform: each group loses `ratio` of its channels. global: channels of all groups are ranked
    by importance normalised by their group's mean, and the lowest `ratio` of all channels go.
    `overrides` (node name -> ratio) sets the ratio of the group a node produces; `protected`
    nodes' groups are kept whole. Widths round up to `channel_multiple`.
    """
    ratio = _check_ratio(ratio)
    if mode not in MODES:
        raise EdgepackError(f"unknown pruning mode {mode!r}; use one of {', '.join(MODES)}")
    if norm not in NORMS:
        raise EdgepackError(f"unknown importance norm {norm!r}; use one of {', '.join(NORMS)}")
    if int(channel_multiple) < 1:
        raise EdgepackError(f"channel multiple must be >= 1, got {channel_multiple}")
    m = int(channel_multiple)
    overrides, protected = _scope(model, overrides, protected, "prune override")
    analysis = analysis or analyze(model)
    by_id = {g.id: g for g in analysis.groups}
    prunable = [g for g in analysis.groups if g.prunable]
    if not prunable:
        reasons = sorted({r for g in analysis.groups for r in g.reasons})
        hint = f": {reasons[0]}" + (f" (and {len(reasons) - 1} more reasons)" if len(reasons) > 1 else "") \
            if reasons else ": no Conv/Gemm/MatMul with constant weights"
        raise EdgepackError(f"nothing prunable in this graph{hint}")

    plan = PrunePlan(ratio, mode, norm, m)
    group_ratio: dict[int, float] = {}
    fixed: set[int] = set()
    for name in protected:
        gid = analysis.node_group.get(name)
        if gid is None:
            plan.notes.append(f"protected {name}: produces no prunable channels")
        else:
            fixed.add(gid)
    for name, r in overrides.items():
        gid = analysis.node_group.get(name)
        if gid is None:
            plan.notes.append(f"override {name}: produces no prunable channels, ignored")
        elif not by_id[gid].prunable:
            plan.notes.append(f"override {name}: group {gid} is not prunable ({by_id[gid].reasons[0]})")
        else:
            group_ratio[gid] = min(group_ratio.get(gid, 1.0), float(r))

    imps = {g.id: group_importance(model, g, norm, analysis) for g in prunable}
    n_prune: dict[int, int] = {}
    for g in prunable:
        if g.id in fixed:
            n_prune[g.id] = 0
        elif g.id in group_ratio or mode == "uniform":
            n_prune[g.id] = math.floor(group_ratio.get(g.id, ratio) * g.size + 1e-9)
    if mode == "global":
        pool = [g for g in prunable if g.id not in n_prune]
        if pool:
            scores = np.concatenate([imps[g.id] / max(imps[g.id].mean(), 1e-12) for g in pool])
            k = math.floor(ratio * scores.size + 1e-9)
            thresh = np.sort(scores)[k - 1] if k > 0 else -np.inf
            for g in pool:
                norm_imp = imps[g.id] / max(imps[g.id].mean(), 1e-12)
                n_prune[g.id] = min(int((norm_imp <= thresh).sum()), g.size - 1)
    for g in prunable:
        keep = min(g.size, max(m, math.ceil(max(g.size - n_prune[g.id], 1) / m) * m))
        order = np.argsort(-imps[g.id], kind="stable")[:keep]
        plan.groups[g.id] = {"size": g.size, "kept": sorted(int(i) for i in order),
                             "producers": [p[0] for p in g.producers],
                             "members": [f"{n} ({r})" for n, r in g.members]}
    plan.unprunable = [{"id": g.id, "size": g.size, "producers": [p[0] for p in g.producers],
                        "reasons": g.reasons} for g in analysis.groups if not g.prunable]
    plan.notes.append("importance = filter norm with BatchNorm already folded into the conv weights")
    return plan


# --------------------------------------------------------------------------- apply


def apply_plan(model: onnx.ModelProto, plan: PrunePlan, analysis: Analysis | None = None) -> onnx.ModelProto:
    """A copy of `model` with the plan's channels removed, shape-inferred and checked."""
    analysis = analysis or analyze(model)
    sizes = {g.id: g.size for g in analysis.groups}
    kept = {}
    for gid, k in plan.kept().items():
        if sizes.get(gid) != len(k) and (gid not in sizes or sizes[gid] != plan.groups[gid]["size"]):
            raise EdgepackError(f"prune plan group {gid} does not match this graph (was it made for another model?)")
        if len(k) < sizes[gid]:
            kept[gid] = k
    if not kept:
        return copy.deepcopy(model)

    def touched(layout) -> bool:
        return any(gid in kept for gid, _ in layout.segments)

    out = copy.deepcopy(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    nodes = {n.name: n for n in g.node}
    users: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            users[name] = users.get(name, 0) + 1
    todo: dict[tuple, list] = {}
    for sl in analysis.slices:
        if touched(sl.layout):
            todo.setdefault((sl.node, sl.index), []).append(sl)
    new_inits = []
    for (node_name, index), sls in todo.items():
        node = nodes[node_name]
        src = node.input[index]
        arr = numpy_helper.to_array(inits[src])
        for sl in sls:
            if arr.shape[sl.axis] != sl.layout.width:
                raise EdgepackError(f"internal: {node_name} input {index} axis {sl.axis} is "
                                    f"{arr.shape[sl.axis]} wide, expected {sl.layout.width}")
            arr = np.take(arr, layout_index(sl.layout, kept), axis=sl.axis)
        if users.get(src, 0) > 1:  # a constant shared with nodes that keep it whole
            name = f"{src}__pruned_{len(new_inits)}"
            node.input[index] = name
        else:
            name = src
            g.initializer.remove(inits[src])
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    g.initializer.extend(new_inits)
    for node_name, kind, layout, extra in analysis.attrs:
        if not touched(layout):
            continue
        node = nodes[node_name]
        width = len(layout_index(layout, kept))
        if kind == "group":
            for a in node.attribute:
                if a.name == "group":
                    a.i = width
        elif kind == "reshape":  # a private copy: the same shape constant may serve other Reshapes
            t = next(t for t in g.initializer if t.name == node.input[1])
            shape = numpy_helper.to_array(t).copy()
            shape[extra] = width
            node.input[1] = f"{t.name}__{node.name}"
            g.initializer.append(numpy_helper.from_array(shape, node.input[1]))
    used = {name for n in g.node for name in n.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    del g.value_info[:]
    try:
        out = shape_inference.infer_shapes(out, strict_mode=True)
        onnx.checker.check_model(out)
    except Exception as e:  # a bug in the analysis, never the user's fault: say where
        raise EdgepackError(f"pruned graph failed checking: {first_line(e)}")
    return out


def prune(model: onnx.ModelProto, ratio: float, *, mode: str = "uniform", norm: str = "l1",
          channel_multiple: int = 1, overrides: dict[str, float] | None = None,
          protected: list[str] | None = None) -> tuple[onnx.ModelProto, PrunePlan]:
    """Structured pruning of a canonical graph: (pruned model, plan). See plan_pruning."""
    analysis = analyze(model)
    plan = plan_pruning(model, ratio, mode=mode, norm=norm, channel_multiple=channel_multiple,
                        overrides=overrides, protected=protected, analysis=analysis)
    return apply_plan(model, plan, analysis), plan


# --------------------------------------------------------------------------- magnitude


def magnitude_prune(model: onnx.ModelProto, ratio: float, *, scope: str = "global",
                    overrides: dict[str, float] | None = None,
                    protected: list[str] | None = None) -> tuple[onnx.ModelProto, dict]:
    """Zero the smallest-|w| `ratio` of each Conv/Gemm/MatMul constant weight ("layer"), or of all
    of them ranked together ("global"). Returns (model, report with per-layer sparsity)."""
    ratio = _check_ratio(ratio, "sparsity")
    if scope not in MAGNITUDE_SCOPES:
        raise EdgepackError(f"unknown sparsity scope {scope!r}; use one of {', '.join(MAGNITUDE_SCOPES)}")
    overrides, protected = _scope(model, overrides, protected, "sparsity override")
    out = copy.deepcopy(model)
    inits = {t.name: t for t in out.graph.initializer}
    layers: dict[str, tuple] = {}  # weight name -> (node name, array)
    for n in out.graph.node:
        if n.op_type in MAGNITUDE_OPS and len(n.input) > 1 and n.input[1] in inits and n.name not in protected:
            arr = numpy_helper.to_array(inits[n.input[1]])
            if arr.dtype.kind == "f" and n.input[1] not in layers:
                layers[n.input[1]] = (n.name, arr.copy())
    if not layers:
        raise EdgepackError("nothing to sparsify: no Conv/Gemm/MatMul with constant float weights")

    def zero_smallest(flat_abs: np.ndarray, k: int) -> np.ndarray:
        mask = np.zeros(flat_abs.size, bool)
        if k > 0:
            mask[np.argpartition(flat_abs, k - 1)[:k]] = True
        return mask

    global_names = [w for w, (node, _) in layers.items() if node not in overrides]
    if scope == "global" and global_names:
        absall = np.concatenate([np.abs(layers[w][1]).ravel() for w in global_names])
        mask = zero_smallest(absall, int(round(ratio * absall.size)))
        off = 0
        for w in global_names:
            arr = layers[w][1]
            arr.ravel()[mask[off:off + arr.size]] = 0  # arr is a contiguous copy: ravel is a view
            off += arr.size
    for w, (node, arr) in layers.items():
        if scope == "layer" or node in overrides:
            r = overrides.get(node, ratio)
            mask = zero_smallest(np.abs(arr).ravel(), int(round(r * arr.size)))
            arr.ravel()[mask] = 0
    report = {"mode": "magnitude", "scope": scope, "requested": ratio, "layers": []}
    zeros = total = 0
    for w, (node, arr) in layers.items():
        inits[w].CopyFrom(numpy_helper.from_array(arr, w))
        z = int((arr == 0).sum())
        zeros, total = zeros + z, total + arr.size
        report["layers"].append({"name": node, "weight": w, "params": int(arr.size),
                                 "sparsity": z / arr.size})
    report["sparsity"] = zeros / total
    report["note"] = SPARSITY_NOTE
    onnx.checker.check_model(out)
    return out, report
