"""Channel dependency analysis for structured pruning on the canonical ONNX graph.

A *group* is a set of channels that must be removed together: the output channels of one or
more producers (Conv, Gemm, MatMul with constant weights) joined by residual Add/Mul/Sum, with
every place those channel indices reach - consumer input channels, depthwise filters, per-channel
constants, Concat offsets, the features after GlobalAveragePool+Flatten - recorded as a slice.

Every tensor that carries prunable channels has a *layout*: its channel axis and a list of
segments `(group id or None, size)` along that axis (one segment for a plain conv output, several
after a Concat; None = channels that are not prunable, e.g. from a graph input). Anything the
analysis does not understand marks the groups it touches unprunable, with the reason - the graph
is never rewritten where the rewrite is not known to be exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

# ops that act per element (or per channel-preserving window) and keep the channel axis
UNARY = {
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu", "Tanh",
    "Softplus", "Softsign", "Erf", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Gelu",
    "Mish", "Celu", "ThresholdedRelu", "Identity", "Dropout", "Cast", "Floor", "Ceil", "Round",
    "Sin", "Cos", "Not", "IsNaN", "Sign",
}
POOL_4D = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu"}

Segment = tuple  # (group id | None, size)


@dataclass
class Layout:
    axis: int  # non-negative channel axis
    segments: list  # [(gid | None, size)]

    @property
    def width(self) -> int:
        return sum(s for _, s in self.segments)


@dataclass
class Slice:
    """Take the kept channels of `layout` along `axis` of input `index` of node `node`."""

    node: str
    index: int
    axis: int
    layout: Layout
    role: str  # "filters", "bias", "in-channels", "per-channel", "depthwise", ...


@dataclass
class Group:
    """Channels removed together. `members` are (node name, role) pairs; `reasons` why not prunable."""

    id: int
    size: int
    producers: list = field(default_factory=list)  # (node name, weight input index, channel axis)
    members: list = field(default_factory=list)
    reasons: list = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        return {"id": self.id, "size": self.size, "prunable": self.prunable,
                "producers": [p[0] for p in self.producers],
                "members": [f"{n} ({r})" for n, r in self.members], "reasons": list(self.reasons)}


@dataclass
class Analysis:
    groups: list  # [Group], roots only, prunable or not
    slices: list  # [Slice] (gids resolved to roots)
    attrs: list  # [(node name, "group"|"reshape", Layout, extra)]
    node_group: dict  # node name -> gid of the group its output channels belong to


class _UF:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def add(self, i):
        self.parent[i] = i

    def find(self, i):
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _shapes(model: onnx.ModelProto) -> dict:
    g = model.graph
    out = {}
    for vi in (*g.input, *g.output, *g.value_info):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    for t in g.initializer:
        out[t.name] = tuple(t.dims)
    return out


def analyze(model: onnx.ModelProto) -> Analysis:
    """Groups of jointly-prunable channels, and every slice/attribute their removal implies."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    shapes = _shapes(model)
    users: dict[str, list] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            if name:
                users.setdefault(name, []).append((n, i))
    uf = _UF()
    groups: dict[int, Group] = {}
    layouts: dict[str, Layout] = {}
    slices: list[Slice] = []
    attrs: list = []
    node_group: dict[str, int] = {}

    def new_group(size: int) -> int:
        gid = len(groups)
        groups[gid] = Group(gid, size)
        uf.add(gid)
        return gid

    def block(layout: Layout | None, reason: str):
        if layout is None:
            return
        for gid, _ in layout.segments:
            if gid is not None:
                groups[uf.find(gid)].reasons.append(reason)

    def member(layout: Layout, node, role):
        for gid, _ in layout.segments:
            if gid is not None:
                groups[uf.find(gid)].members.append((node.name, role))

    def const(name):
        return name in inits

    def weight_shared(name) -> bool:
        return len(users.get(name, [])) > 1

    def union(a: Layout, b: Layout, why: str) -> bool:
        if a.axis != b.axis or len(a.segments) != len(b.segments) or \
                any(sa != sb for (_, sa), (_, sb) in zip(a.segments, b.segments)):
            return False
        for (ga, _), (gb, _) in zip(a.segments, b.segments):
            if (ga is None) != (gb is None):
                # one side is fixed: the other side must stay whole too
                block(Layout(a.axis, [(ga if ga is not None else gb, 0)]), why)
                continue
            if ga is not None:
                ra, rb = uf.find(ga), uf.find(gb)
                if ra != rb:
                    uf.parent[rb] = ra
                    groups[ra].producers += groups[rb].producers
                    groups[ra].members += groups[rb].members
                    groups[ra].reasons += groups[rb].reasons
        return True

    def produce(node, out_axis, w_index, w_axis, bias_index=None, role="filters"):
        w = inits[node.input[w_index]]
        size = int(w.dims[w_axis])
        gid = new_group(size)
        lay = Layout(out_axis, [(gid, size)])
        groups[gid].producers.append((node.name, w_index, w_axis))
        groups[gid].members.append((node.name, role))
        slices.append(Slice(node.name, w_index, w_axis, lay, role))
        if bias_index is not None and len(node.input) > bias_index and node.input[bias_index]:
            b = node.input[bias_index]
            if not const(b):
                block(lay, f"{node.name}: bias is not a constant")
            elif shapes.get(b) and shapes[b][-1] == size:
                slices.append(Slice(node.name, bias_index, len(shapes[b]) - 1, lay, "bias"))
            elif shapes.get(b) and shapes[b][-1] != 1:
                block(lay, f"{node.name}: bias shape {list(shapes[b])} not per-channel")
        if weight_shared(node.input[w_index]):
            block(lay, f"{node.name}: weight {node.input[w_index]} is shared with another node")
        layouts[node.output[0]] = lay
        node_group[node.name] = gid
        return lay

    for vi in g.input:  # graph inputs: fixed channels
        s = shapes.get(vi.name)
        if s and len(s) >= 2 and s[1]:
            layouts[vi.name] = Layout(1, [(None, s[1])])

    for node in g.node:
        op = node.op_type
        ins = [layouts.get(x) if x else None for x in node.input]
        x = ins[0] if ins else None
        out = node.output[0] if node.output else None
        oshape = shapes.get(out) if out else None
        handled = False

        if op == "Conv" and len(node.input) > 1 and const(node.input[1]):
            w = shapes[node.input[1]]
            grp = _attr(node, "group", 1)
            if grp == 1:
                if x is not None and x.axis == 1 and x.width == w[1]:
                    slices.append(Slice(node.name, 1, 1, x, "in-channels"))
                    member(x, node, "in-channels")
                    if weight_shared(node.input[1]):
                        block(x, f"{node.name}: weight shared with another node")
                elif x is not None:
                    block(x, f"{node.name}: input channels do not match its weight")
                produce(node, 1, 1, 0, 2)
                handled = True
            elif x is not None and grp == w[0] == x.width and w[1] == 1:  # depthwise, multiplier 1
                slices.append(Slice(node.name, 1, 0, x, "depthwise"))
                if len(node.input) > 2 and node.input[2]:
                    slices.append(Slice(node.name, 2, 0, x, "depthwise bias"))
                attrs.append((node.name, "group", x, None))
                member(x, node, "depthwise")
                if weight_shared(node.input[1]):
                    block(x, f"{node.name}: weight shared with another node")
                layouts[out] = Layout(1, list(x.segments))
                for gid, _ in x.segments:
                    if gid is not None:
                        node_group.setdefault(node.name, gid)
                handled = True
            else:
                block(x, f"{node.name}: grouped conv (group={grp}) is not depthwise")
                handled = True
        elif op == "Gemm" and len(node.input) > 1 and const(node.input[1]) and _attr(node, "transA", 0) == 0:
            tb = _attr(node, "transB", 0)
            if x is not None:
                if x.axis == 1 and shapes.get(node.input[0]) and len(shapes[node.input[0]]) == 2:
                    slices.append(Slice(node.name, 1, 1 if tb else 0, x, "in-features"))
                    member(x, node, "in-features")
                else:
                    block(x, f"{node.name}: Gemm input layout not understood")
            produce(node, 1, 1, 0 if tb else 1, 2, role="out-features")
            handled = True
        elif op == "MatMul" and const(node.input[1]) and len(shapes[node.input[1]]) == 2 and \
                oshape is not None and len(oshape) >= 2:
            a = shapes.get(node.input[0])
            if x is not None:
                if a is not None and x.axis == len(a) - 1:
                    slices.append(Slice(node.name, 1, 0, x, "in-features"))
                    member(x, node, "in-features")
                else:
                    block(x, f"{node.name}: MatMul input channels not on the last axis")
            produce(node, len(oshape) - 1, 1, 1, None, role="out-features")
            handled = True
        elif op in UNARY or op in POOL_4D:
            if x is not None:
                layouts[out] = Layout(x.axis, list(x.segments))
                if op == "Clip":  # min/max must be scalars
                    for i in (1, 2):
                        if len(node.input) > i and node.input[i] and (shapes.get(node.input[i]) or ()) not in ((), (1,)):
                            block(x, f"{node.name}: Clip bounds are not scalars")
                if op in POOL_4D and x.axis != 1:
                    block(x, f"{node.name}: pooling over the channel axis")
            handled = True
        elif op == "BatchNormalization":
            if x is not None:
                for i in range(1, 5):
                    if not const(node.input[i]):
                        block(x, f"{node.name}: BatchNormalization parameters are not constants")
                    else:
                        slices.append(Slice(node.name, i, 0, x, "batchnorm"))
                member(x, node, "batchnorm")
                layouts[out] = Layout(x.axis, list(x.segments))
            handled = True
        elif op in BINARY:
            live = [(i, lay) for i, lay in enumerate(ins) if lay is not None]
            if live:
                base = live[0][1]
                rank = len(oshape) if oshape else None
                ok = rank is not None
                for i, name in enumerate(node.input):
                    lay = ins[i]
                    if lay is not None:
                        if lay is not base and not union(base, lay, f"{node.name}: join with fixed channels"):
                            ok = False
                        continue
                    s = shapes.get(name)
                    if s is None or rank is None:
                        ok = False
                        continue
                    pad = rank - len(s)
                    ax = base.axis - pad
                    if ax < 0 or s[ax] == 1:
                        continue  # broadcast along channels: nothing to slice
                    if s[ax] == base.width and const(name):
                        slices.append(Slice(node.name, i, ax, base, "per-channel"))
                        member(base, node, "per-channel")
                    else:
                        block(base, f"{node.name}: joins a tensor ({name}) whose channels are not tracked")
                if not ok:
                    for _, lay in live:
                        block(lay, f"{node.name}: operands do not line up channel for channel")
                layouts[out] = Layout(base.axis, list(base.segments))
                handled = True
        elif op == "Concat":
            axis = _attr(node, "axis", 0)
            rank = len(oshape) if oshape else None
            if rank is not None and axis < 0:
                axis += rank
            live = [lay for lay in ins if lay is not None]
            if live and rank is not None and all(lay.axis == axis for lay in live):
                segs = []
                for name, lay in zip(node.input, ins):
                    if lay is not None:
                        segs += lay.segments
                    else:
                        s = shapes.get(name)
                        if s is None or s[axis] is None:
                            segs = None
                            break
                        segs.append((None, s[axis]))
                if segs is not None:
                    layouts[out] = Layout(axis, segs)
                    handled = True
            if not handled:
                for lay in live:
                    block(lay, f"{node.name}: Concat not along the channel axis")
                handled = True
        elif op in ("Flatten", "Reshape") and x is not None:
            s = shapes.get(node.input[0])
            flat_ok = (s is not None and oshape is not None and x.axis == 1 and len(oshape) == 2
                       and all(d == 1 for d in s[2:]) and oshape[1] == x.width and oshape[0] == s[0])
            if op == "Flatten":
                flat_ok = flat_ok and _attr(node, "axis", 1) == 1
            if op == "Reshape" and flat_ok:
                if not const(node.input[1]) or weight_shared(node.input[1]):
                    flat_ok = False
                else:
                    target = numpy_helper.to_array(inits[node.input[1]]).tolist()
                    if len(target) != 2 or (target[1] != -1 and target[1] != x.width):
                        flat_ok = False
                    elif target[1] == x.width:
                        attrs.append((node.name, "reshape", x, 1))
            if flat_ok:
                layouts[out] = Layout(1, list(x.segments))
            elif op == "Reshape" and _keeps_last_axis(node, x, s, oshape, inits):
                # transformers reshape [B, T, C] <-> [B*T, C] around their MLPs: channels stay last
                target = numpy_helper.to_array(inits[node.input[1]]).tolist()
                if target[-1] == x.width:
                    attrs.append((node.name, "reshape", x, len(target) - 1))
                layouts[out] = Layout(len(oshape) - 1, list(x.segments))
            else:
                block(x, f"{node.name}: {op} that mixes channels with other dims")
            handled = True

        if not handled:
            for lay in ins:
                block(lay, f"{node.name}: consumed by {op}, which pruning does not understand")

    for vi in g.output:
        block(layouts.get(vi.name), f"reaches graph output {vi.name}")

    # resolve to roots
    roots = {}
    for gid in groups:
        r = uf.find(gid)
        roots.setdefault(r, groups[r])
    for sl in slices:
        sl.layout = Layout(sl.layout.axis, [(uf.find(gid) if gid is not None else None, s)
                                            for gid, s in sl.layout.segments])
    attrs = [(n, kind, Layout(lay.axis, [(uf.find(gid) if gid is not None else None, s)
                                         for gid, s in lay.segments]), extra) for n, kind, lay, extra in attrs]
    node_group = {n: uf.find(gid) for n, gid in node_group.items()}
    out_groups = []
    for r, grp in sorted(roots.items()):
        seen = set()
        grp.members = [m for m in grp.members if not (m in seen or seen.add(m))]
        grp.reasons = list(dict.fromkeys(grp.reasons))
        out_groups.append(grp)
    return Analysis(out_groups, slices, attrs, node_group)


def _keeps_last_axis(node, x, s, oshape, inits) -> bool:
    """A Reshape with a constant target whose last dim is the (last-axis) channel dim, unchanged."""
    if s is None or oshape is None or x.axis != len(s) - 1 or oshape[-1] != s[-1]:
        return False
    if node.input[1] not in inits:
        return False
    target = numpy_helper.to_array(inits[node.input[1]]).tolist()
    # an inferred (-1) channel dim is fine only if nothing else is inferred
    return target[-1] == x.width or (target[-1] == -1 and target.count(-1) == 1)


def layout_index(layout: Layout, kept: dict) -> np.ndarray:
    """Indices along the channel axis that survive, given {gid: kept indices}."""
    parts, off = [], 0
    for gid, size in layout.segments:
        k = kept.get(gid) if gid is not None else None
        parts.append(off + (np.asarray(k, dtype=np.int64) if k is not None else np.arange(size)))
        off += size
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
