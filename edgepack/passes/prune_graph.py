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

`analyze` walks the nodes once in graph order; what each op means for channels is a rule in
`RULES` (op type -> handler), and an op without a rule blocks every group it consumes.
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


class _State:
    """What the walk over the graph accumulates: groups (merged through a union-find), the layout of
    every channel-carrying tensor, and the slices/attributes a removal implies."""

    def __init__(self, model: onnx.ModelProto):
        self.inits = {t.name: t for t in model.graph.initializer}
        self.shapes = _shapes(model)
        self.users: dict[str, list] = {}
        for n in model.graph.node:
            for i, name in enumerate(n.input):
                if name:
                    self.users.setdefault(name, []).append((n, i))
        self.uf = _UF()
        self.groups: dict[int, Group] = {}
        self.layouts: dict[str, Layout] = {}
        self.slices: list[Slice] = []
        self.attrs: list = []
        self.node_group: dict[str, int] = {}

    def new_group(self, size: int) -> int:
        gid = len(self.groups)
        self.groups[gid] = Group(gid, size)
        self.uf.add(gid)
        return gid

    def block(self, layout: Layout | None, reason: str):
        """Mark every group on `layout` unprunable, with `reason`."""
        if layout is None:
            return
        for gid, _ in layout.segments:
            if gid is not None:
                self.groups[self.uf.find(gid)].reasons.append(reason)

    def member(self, layout: Layout, node, role: str):
        for gid, _ in layout.segments:
            if gid is not None:
                self.groups[self.uf.find(gid)].members.append((node.name, role))

    def const(self, name: str) -> bool:
        return name in self.inits

    def weight_shared(self, name: str) -> bool:
        return len(self.users.get(name, [])) > 1

    def union(self, a: Layout, b: Layout, why: str) -> bool:
        """Merge the groups of two layouts segment by segment; False if they do not line up."""
        if a.axis != b.axis or len(a.segments) != len(b.segments) or \
                any(sa != sb for (_, sa), (_, sb) in zip(a.segments, b.segments)):
            return False
        for (ga, _), (gb, _) in zip(a.segments, b.segments):
            if (ga is None) != (gb is None):
                # one side is fixed: the other side must stay whole too
                self.block(Layout(a.axis, [(ga if ga is not None else gb, 0)]), why)
                continue
            if ga is not None:
                ra, rb = self.uf.find(ga), self.uf.find(gb)
                if ra != rb:
                    self.uf.parent[rb] = ra
                    self.groups[ra].producers += self.groups[rb].producers
                    self.groups[ra].members += self.groups[rb].members
                    self.groups[ra].reasons += self.groups[rb].reasons
        return True

    def produce(self, node, out_axis: int, w_index: int, w_axis: int, bias_index=None, role="filters") -> Layout:
        """A new group for the output channels of `node` (weight `w_index`, channels on `w_axis`)."""
        size = int(self.inits[node.input[w_index]].dims[w_axis])
        gid = self.new_group(size)
        lay = Layout(out_axis, [(gid, size)])
        self.groups[gid].producers.append((node.name, w_index, w_axis))
        self.groups[gid].members.append((node.name, role))
        self.slices.append(Slice(node.name, w_index, w_axis, lay, role))
        if bias_index is not None and len(node.input) > bias_index and node.input[bias_index]:
            self._bias(node, bias_index, lay)
        if self.weight_shared(node.input[w_index]):
            self.block(lay, f"{node.name}: weight {node.input[w_index]} is shared with another node")
        self.layouts[node.output[0]] = lay
        self.node_group[node.name] = gid
        return lay

    def _bias(self, node, index: int, lay: Layout):
        b = node.input[index]
        shape = self.shapes.get(b)
        if not self.const(b):
            self.block(lay, f"{node.name}: bias is not a constant")
        elif shape and shape[-1] == lay.width:
            self.slices.append(Slice(node.name, index, len(shape) - 1, lay, "bias"))
        elif shape and shape[-1] != 1:
            self.block(lay, f"{node.name}: bias shape {list(shape)} not per-channel")

    def resolved(self) -> Analysis:
        """The analysis with every gid replaced by its union-find root."""
        find = self.uf.find

        def root(lay: Layout) -> Layout:
            return Layout(lay.axis, [(find(gid) if gid is not None else None, s) for gid, s in lay.segments])

        for sl in self.slices:
            sl.layout = root(sl.layout)
        attrs = [(n, kind, root(lay), extra) for n, kind, lay, extra in self.attrs]
        node_group = {n: find(gid) for n, gid in self.node_group.items()}
        roots = {}
        for gid in self.groups:
            r = find(gid)
            roots.setdefault(r, self.groups[r])
        out_groups = []
        for _, grp in sorted(roots.items()):
            seen = set()
            grp.members = [m for m in grp.members if not (m in seen or seen.add(m))]
            grp.reasons = list(dict.fromkeys(grp.reasons))
            out_groups.append(grp)
        return Analysis(out_groups, self.slices, attrs, node_group)


@dataclass
class _At:
    """One node as a rule sees it: its inputs' layouts (None = no tracked channels) and output shape."""

    node: onnx.NodeProto
    ins: list
    oshape: tuple | None

    @property
    def x(self) -> Layout | None:
        return self.ins[0] if self.ins else None

    @property
    def out(self) -> str | None:
        return self.node.output[0] if self.node.output else None


def analyze(model: onnx.ModelProto) -> Analysis:
    """Groups of jointly-prunable channels, and every slice/attribute their removal implies."""
    st = _State(model)
    for vi in model.graph.input:  # graph inputs: fixed channels
        s = st.shapes.get(vi.name)
        if s and len(s) >= 2 and s[1]:
            st.layouts[vi.name] = Layout(1, [(None, s[1])])
    for node in model.graph.node:
        out = node.output[0] if node.output else None
        at = _At(node, [st.layouts.get(i) if i else None for i in node.input], st.shapes.get(out) if out else None)
        rule = RULES.get(node.op_type)
        if rule is None or not rule(st, at):
            for lay in at.ins:
                st.block(lay, f"{node.name}: consumed by {node.op_type}, which pruning does not understand")
    for vi in model.graph.output:
        st.block(st.layouts.get(vi.name), f"reaches graph output {vi.name}")
    return st.resolved()


# --------------------------------------------------------------------------- per-op rules
# Each rule returns True when it understood the node (it then recorded its layouts, slices and
# reasons itself); False sends the node to the fallback, which blocks every group it consumes.

def _conv(st: _State, at: _At) -> bool:
    """Conv with a constant weight: dense (a link in a conv chain), depthwise, or grouped (blocked)."""
    node = at.node
    if len(node.input) < 2 or not st.const(node.input[1]):
        return False
    w = st.shapes[node.input[1]]
    grp = _attr(node, "group", 1)
    x = at.x
    if grp == 1:
        _conv_chain(st, at)
    elif x is not None and grp == w[0] == x.width and w[1] == 1:  # depthwise, multiplier 1
        _depthwise(st, at)
    else:
        st.block(x, f"{node.name}: grouped conv (group={grp}) is not depthwise")
    return True


def _conv_chain(st: _State, at: _At):
    """A dense conv consumes its input's channels and produces a new group."""
    node, x = at.node, at.x
    w = st.shapes[node.input[1]]
    if x is not None and x.axis == 1 and x.width == w[1]:
        st.slices.append(Slice(node.name, 1, 1, x, "in-channels"))
        st.member(x, node, "in-channels")
        if st.weight_shared(node.input[1]):
            st.block(x, f"{node.name}: weight shared with another node")
    elif x is not None:
        st.block(x, f"{node.name}: input channels do not match its weight")
    st.produce(node, 1, 1, 0, 2)


def _depthwise(st: _State, at: _At):
    """A depthwise conv keeps its input's groups: its filters (and group count) follow them."""
    node, x = at.node, at.x
    st.slices.append(Slice(node.name, 1, 0, x, "depthwise"))
    if len(node.input) > 2 and node.input[2]:
        st.slices.append(Slice(node.name, 2, 0, x, "depthwise bias"))
    st.attrs.append((node.name, "group", x, None))
    st.member(x, node, "depthwise")
    if st.weight_shared(node.input[1]):
        st.block(x, f"{node.name}: weight shared with another node")
    st.layouts[at.out] = Layout(1, list(x.segments))
    for gid, _ in x.segments:
        if gid is not None:
            st.node_group.setdefault(node.name, gid)


def _gemm(st: _State, at: _At) -> bool:
    """A classifier or MLP layer: input features follow the incoming groups, output features are new."""
    node, x = at.node, at.x
    if len(node.input) < 2 or not st.const(node.input[1]) or _attr(node, "transA", 0) != 0:
        return False
    tb = _attr(node, "transB", 0)
    if x is not None:
        a = st.shapes.get(node.input[0])
        if x.axis == 1 and a and len(a) == 2:
            st.slices.append(Slice(node.name, 1, 1 if tb else 0, x, "in-features"))
            st.member(x, node, "in-features")
        else:
            st.block(x, f"{node.name}: Gemm input layout not understood")
    st.produce(node, 1, 1, 0 if tb else 1, 2, role="out-features")
    return True


def _matmul(st: _State, at: _At) -> bool:
    """MatMul with a constant 2-D weight: a linear layer on the last axis (transformer MLPs)."""
    node, x = at.node, at.x
    if not (st.const(node.input[1]) and len(st.shapes[node.input[1]]) == 2
            and at.oshape is not None and len(at.oshape) >= 2):
        return False
    a = st.shapes.get(node.input[0])
    if x is not None:
        if a is not None and x.axis == len(a) - 1:
            st.slices.append(Slice(node.name, 1, 0, x, "in-features"))
            st.member(x, node, "in-features")
        else:
            st.block(x, f"{node.name}: MatMul input channels not on the last axis")
    st.produce(node, len(at.oshape) - 1, 1, 1, None, role="out-features")
    return True


def _elementwise(st: _State, at: _At) -> bool:
    """Activations and pooling pass the channel layout through unchanged."""
    node, x = at.node, at.x
    if x is None:
        return True
    st.layouts[at.out] = Layout(x.axis, list(x.segments))
    if node.op_type == "Clip":  # min/max must be scalars
        for i in (1, 2):
            if len(node.input) > i and node.input[i] and (st.shapes.get(node.input[i]) or ()) not in ((), (1,)):
                st.block(x, f"{node.name}: Clip bounds are not scalars")
    if node.op_type in POOL_4D and x.axis != 1:
        st.block(x, f"{node.name}: pooling over the channel axis")
    return True


def _batchnorm(st: _State, at: _At) -> bool:
    """Scale, bias, mean and variance are per-channel constants: sliced with the group."""
    node, x = at.node, at.x
    if x is None:
        return True
    for i in range(1, 5):
        if not st.const(node.input[i]):
            st.block(x, f"{node.name}: BatchNormalization parameters are not constants")
        else:
            st.slices.append(Slice(node.name, i, 0, x, "batchnorm"))
    st.member(x, node, "batchnorm")
    st.layouts[at.out] = Layout(x.axis, list(x.segments))
    return True


def _residual_join(st: _State, at: _At) -> bool:
    """Add/Mul/...: operands with tracked channels are merged into one group (residual joins);
    constant per-channel operands are sliced; anything else blocks the groups."""
    live = [lay for lay in at.ins if lay is not None]
    if not live:
        return False
    base = live[0]
    rank = len(at.oshape) if at.oshape else None
    ok = rank is not None
    for i, name in enumerate(at.node.input):
        if not _join_operand(st, at, i, base, rank):
            ok = False
    if not ok:
        for lay in live:
            st.block(lay, f"{at.node.name}: operands do not line up channel for channel")
    st.layouts[at.out] = Layout(base.axis, list(base.segments))
    return True


def _join_operand(st: _State, at: _At, i: int, base: Layout, rank: int | None) -> bool:
    """Record operand `i` of a join against the first tracked operand; False if it does not line up."""
    node, lay, name = at.node, at.ins[i], at.node.input[i]
    if lay is not None:
        return lay is base or st.union(base, lay, f"{node.name}: join with fixed channels")
    s = st.shapes.get(name)
    if s is None or rank is None:
        return False
    ax = base.axis - (rank - len(s))
    if ax < 0 or s[ax] == 1:
        return True  # broadcast along channels: nothing to slice
    if s[ax] == base.width and st.const(name):
        st.slices.append(Slice(node.name, i, ax, base, "per-channel"))
        st.member(base, node, "per-channel")
    else:
        st.block(base, f"{node.name}: joins a tensor ({name}) whose channels are not tracked")
    return True


def _concat(st: _State, at: _At) -> bool:
    """Concat along the channel axis: the output layout is the inputs' segments at their offsets."""
    axis = _attr(at.node, "axis", 0)
    rank = len(at.oshape) if at.oshape else None
    if rank is not None and axis < 0:
        axis += rank
    live = [lay for lay in at.ins if lay is not None]
    if live and rank is not None and all(lay.axis == axis for lay in live):
        segs = _concat_segments(st, at, axis)
        if segs is not None:
            st.layouts[at.out] = Layout(axis, segs)
            return True
    for lay in live:
        st.block(lay, f"{at.node.name}: Concat not along the channel axis")
    return True


def _concat_segments(st: _State, at: _At, axis: int) -> list | None:
    """Segments of the concatenated tensor; untracked inputs become fixed segments (None if unknown)."""
    segs = []
    for name, lay in zip(at.node.input, at.ins):
        if lay is not None:
            segs += lay.segments
            continue
        s = st.shapes.get(name)
        if s is None or s[axis] is None:
            return None
        segs.append((None, s[axis]))
    return segs


def _flatten_reshape(st: _State, at: _At) -> bool:
    """Flatten/Reshape that keep channels whole: pooled features into a Gemm, or a transformer's
    [B, T, C] <-> [B*T, C] around its MLP. Anything else mixes channels with other dims."""
    node, x = at.node, at.x
    if x is None:
        return False
    s = st.shapes.get(node.input[0])
    if _pooled_into_gemm(st, at, s):
        st.layouts[at.out] = Layout(1, list(x.segments))
    elif node.op_type == "Reshape" and _keeps_last_axis(node, x, s, at.oshape, st.inits):
        # transformers reshape [B, T, C] <-> [B*T, C] around their MLPs: channels stay last
        target = numpy_helper.to_array(st.inits[node.input[1]]).tolist()
        if target[-1] == x.width:
            st.attrs.append((node.name, "reshape", x, len(target) - 1))
        st.layouts[at.out] = Layout(len(at.oshape) - 1, list(x.segments))
    else:
        st.block(x, f"{node.name}: {node.op_type} that mixes channels with other dims")
    return True


def _pooled_into_gemm(st: _State, at: _At, s) -> bool:
    """[N, C, 1, ...] -> [N, C] (after global pooling); records the Reshape's target to rewrite."""
    node, x, oshape = at.node, at.x, at.oshape
    if not (s is not None and oshape is not None and x.axis == 1 and len(oshape) == 2
            and all(d == 1 for d in s[2:]) and oshape[1] == x.width and oshape[0] == s[0]):
        return False
    if node.op_type == "Flatten":
        return _attr(node, "axis", 1) == 1
    if not st.const(node.input[1]) or st.weight_shared(node.input[1]):
        return False
    target = numpy_helper.to_array(st.inits[node.input[1]]).tolist()
    if len(target) != 2 or (target[1] != -1 and target[1] != x.width):
        return False
    if target[1] == x.width:
        st.attrs.append((node.name, "reshape", x, 1))
    return True


RULES = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batchnorm,
    "Concat": _concat, "Flatten": _flatten_reshape, "Reshape": _flatten_reshape,
    **{op: _elementwise for op in UNARY | POOL_4D},
    **{op: _residual_join for op in BINARY},
}


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
