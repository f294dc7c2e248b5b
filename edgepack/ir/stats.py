"""Static numbers about an ONNX model: ops, parameters, MACs per layer, size on disk.

These feed `edgepack inspect` and the source-model section of report.json, so they must be
cheap (one pass over the nodes after shape inference on a weightless copy) and honest about
what they could not count (`unknown_shape_nodes`, `macs_assumed_dims`).

What counts as a parameter: every constant tensor the graph stores, wherever it lives -
initializers, `Constant` nodes (Paddle and some TF exports keep weights there) and
`ConstantOfShape` nodes whose shape input is itself a constant (the caffe2 "light" models in the
onnx wheel build every weight that way at run time; the tensor is still a weight of fixed size).
Subgraphs of If/Loop/Scan are included. Only weight-like dtypes count as params (floats and the
<=8-bit integers that quantized weights use); wider integers and bools are shape constants,
indices and masks, reported separately as `int_elements` so they don't inflate `params`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgepack.errors import EdgepackError, close_names
from edgepack.ir.spec import assumed_shape, graph_inputs, graph_outputs


def _bits(*pairs) -> dict[int, int]:
    # getattr: older onnx releases lack the newest dtypes
    return {getattr(TensorProto, n): b for n, b in pairs if hasattr(TensorProto, n)}


# dtypes whose tensors are weights, with their storage width in bits
_PARAM_BITS = _bits(
    ("FLOAT", 32), ("DOUBLE", 64), ("FLOAT16", 16), ("BFLOAT16", 16),
    ("FLOAT8E4M3FN", 8), ("FLOAT8E4M3FNUZ", 8), ("FLOAT8E5M2", 8), ("FLOAT8E5M2FNUZ", 8),
    ("FLOAT8E8M0", 8), ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6), ("FLOAT4E2M1", 4),
    ("INT8", 8), ("UINT8", 8), ("INT4", 4), ("UINT4", 4), ("INT2", 2), ("UINT2", 2),
)
# dtypes that are shape constants / indices / masks, not weights
_INT_TYPES = set(_bits(("INT16", 0), ("UINT16", 0), ("INT32", 0), ("UINT32", 0),
                       ("INT64", 0), ("UINT64", 0), ("BOOL", 0)))

# op_type -> index of the weight W, for the conv family
_CONV_W = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1}
# op_type -> (index of A, index of B) for the matmul family
_MATMUL_AB = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
_MAC_OPS = set(_CONV_W) | set(_MATMUL_AB) | {"ConvTranspose", "Gemm", "FusedGemm"}


def format_count(n: float) -> str:
    """Compact count for tables: 950, 3.50M, 300.8M, 4.11G (3-4 significant digits)."""
    n = float(n)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.2f}{unit}" if abs(v) < 10 else f"{v:.1f}{unit}"
    return str(int(n))


def _numel(dims) -> int:
    return math.prod(int(d) for d in dims)


def _shape_of(vi: onnx.ValueInfoProto):
    """Tuple of ints, with None for unknown dims; None when the rank is unknown."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)


def _subgraphs(node: onnx.NodeProto):
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _collect_shapes(graph: onnx.GraphProto, out: dict) -> dict:
    """name -> shape from value infos, initializers and Constant nodes, subgraphs included."""
    for vi in (*graph.input, *graph.output, *graph.value_info):
        s = _shape_of(vi)
        if s is not None:
            out[vi.name] = s
    for t in graph.initializer:
        out[t.name] = tuple(t.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = tuple(a.t.dims)
        for g in _subgraphs(node):
            _collect_shapes(g, out)
    return out


_BIG = 1024  # elements; weight tensors this large are never read by shape inference


def _copy_fields(src, dst, skip: tuple) -> None:
    """Copy a message field by field, leaving out the (heavy) fields in `skip`."""
    for fd, val in src.ListFields():
        if fd.name in skip:
            continue
        if hasattr(val, "extend"):  # repeated field
            getattr(dst, fd.name).extend(val)
        elif hasattr(val, "CopyFrom"):  # message field
            getattr(dst, fd.name).CopyFrom(val)
        else:
            setattr(dst, fd.name, val)


def _skeleton(model: onnx.ModelProto, input_shapes: dict | None):
    """A light copy for shape inference, and the input dims it had to assume.

    Serializing a 100 MB model is most of the cost of `infer_shapes`, so large weight tensors
    (initializers and top-level Constant nodes) become typed graph inputs: inference needs their
    shape, never their values. Integer tensors stay, as data propagation reads them (Reshape
    targets...). Symbolic input dims are fixed from `input_shapes`, else taken as 1.
    """
    specs = graph_inputs(model)
    overrides = dict(input_shapes or {})
    for name in overrides:
        if name not in {s.name for s in specs}:
            raise EdgepackError(f"input_shapes names unknown input {name!r}"
                                + close_names(name, [s.name for s in specs]))
    changes, assumed = {}, {}
    for spec in specs:
        shape = assumed_shape(spec, overrides.get(spec.name))
        if shape != spec.shape:
            changes[spec.name] = shape
            if spec.name not in overrides:
                assumed[spec.name] = list(shape)

    light = onnx.ModelProto()
    _copy_fields(model, light, skip=("graph",))
    g, src = light.graph, model.graph
    _copy_fields(src, g, skip=("initializer", "node"))
    if light.ir_version < 4:  # IR 3 lists every initializer as an input already
        light.ir_version = 4
    listed = {vi.name for vi in src.input}

    def as_input(name: str, t: onnx.TensorProto) -> bool:
        if t.data_type not in _PARAM_BITS or _numel(t.dims) < _BIG:
            return False
        if name not in listed:
            g.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
        return True

    g.initializer.extend(t for t in src.initializer if not as_input(t.name, t))
    g.node.extend(n for n in src.node if not (
        n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
        and as_input(n.output[0], n.attribute[0].t)))

    for vi in g.input:
        if vi.name in changes:
            for d, v in zip(vi.type.tensor_type.shape.dim, changes[vi.name]):
                d.Clear()
                d.dim_value = int(v)
    if changes:  # value infos recorded for the symbolic shapes could contradict the fixed ones
        del g.value_info[:]
        for vi in g.output:
            if vi.type.HasField("tensor_type"):
                vi.type.tensor_type.ClearField("shape")
    return light, assumed


def _infer(model: onnx.ModelProto):
    """Shape-inferred copy of the model, or None when onnx cannot infer it."""
    for data_prop in (True, False):
        try:
            return onnx.shape_inference.infer_shapes(model, data_prop=data_prop)
        except Exception:  # noqa: BLE001 - any failure just means "fewer shapes known"
            continue
    return None


_FOLD_ROUNDS = 8  # each round lets a Shape see through one more level of dynamic-axis code
_SMALL = 4096  # elements: shape arithmetic is this small, activations and weights are not
# ops whose output can outgrow their inputs: folded only after a size check
_GROWS = {"ConstantOfShape", "Expand", "Tile", "Range"}
_FOLDABLE = _GROWS | {
    "Constant", "Identity", "Cast", "Shape", "Size", "Gather", "GatherElements", "Unsqueeze",
    "Squeeze", "Concat", "Slice", "Split", "Reshape", "Flatten", "Transpose", "Neg", "Abs",
    "Floor", "Ceil", "Add", "Sub", "Mul", "Div", "Mod", "Min", "Max", "Equal", "Less",
    "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Where", "ReduceProd",
    "ReduceSum", "ReduceMin", "ReduceMax", "NonZero", "CumSum", "Clip", "Trilu",
}


def _grown_size(node: onnx.NodeProto, args: list) -> int:
    op = node.op_type
    if op == "ConstantOfShape":
        return _numel(args[0].tolist())
    if op == "Expand":
        return _numel(np.broadcast_shapes(args[0].shape, tuple(args[1].tolist())))
    if op == "Tile":
        return _numel(np.multiply(args[0].shape, args[1]).tolist())
    start, limit, delta = (float(a) for a in args[:3])  # Range
    return max(0, math.ceil((limit - start) / delta)) if delta else _SMALL + 1


def _fold_shape_math(light: onnx.ModelProto, shapes: dict):
    """`light` with its small shape arithmetic evaluated into initializers, or None.

    onnx's data propagation stops at patterns exporters emit for dynamic axes (BERT's
    position ids: Slice(buffer, 0, Gather(Shape(ids), 1))), leaving every later shape unknown.
    With the input dims fixed these are plain constants: evaluating them (onnx.reference, only
    nodes whose inputs are all known and small) lets a second inference see through.
    """
    from onnx.reference import ReferenceEvaluator

    g = light.graph
    opsets = {o.domain: o.version for o in light.opset_import}
    values = {t.name: numpy_helper.to_array(t) for t in g.initializer
              if t.data_type in _INT_TYPES and _numel(t.dims) <= _SMALL}
    keep, folded = [], []
    for node in g.node:
        ins = [i for i in node.input if i]
        out = None
        if node.op_type == "Shape" and ins:
            src = values[ins[0]].shape if ins[0] in values else shapes.get(ins[0])
            if _known(src):
                at = {a.name: a.i for a in node.attribute}
                out = [np.array(src[at.get("start", 0):at.get("end", len(src))], np.int64)]
        elif (node.op_type in _FOLDABLE and node.domain in ("", "ai.onnx")
              and all(i in values for i in ins)):
            args = [values[i] for i in ins]
            if node.op_type not in _GROWS or _grown_size(node, args) <= _SMALL:
                try:
                    out = ReferenceEvaluator(node, opsets=opsets).run(None, dict(zip(ins, args)))
                except Exception:  # noqa: BLE001 - leave it to the runtime
                    out = None
        if out is None or len(out) != len(node.output) or any(
                np.asarray(v).size > _SMALL for v in out):
            keep.append(node)
            continue
        for name, v in zip(node.output, out):
            values[name] = np.asarray(v)
            folded.append(numpy_helper.from_array(values[name], name))
    if not folded:
        return None
    folded_model = onnx.ModelProto()
    _copy_fields(light, folded_model, skip=("graph",))
    _copy_fields(g, folded_model.graph, skip=("node",))
    folded_model.graph.node.extend(keep)
    folded_model.graph.initializer.extend(folded)
    return folded_model


def _unknown_macs(graph: onnx.GraphProto, shapes: dict) -> int:
    return sum(1 for n in graph.node if n.op_type in _MAC_OPS and _node_macs(n, shapes.get) is None)


def _known(shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _node_macs(node: onnx.NodeProto, shape) -> int | None:
    """Multiply-accumulates of one node, None if a needed shape is unknown. Bias adds excluded."""
    op, ins = node.op_type, node.input

    def s(i):
        return shape(ins[i]) if i < len(ins) and ins[i] else None

    y = shape(node.output[0])
    if op in _CONV_W:
        w = s(_CONV_W[op])
        # W is (M, C/group, *kernel): each output element costs C/group * prod(kernel)
        return _numel(y) * _numel(w[1:]) if _known(y) and _known(w) else None
    if op == "ConvTranspose":
        x, w = s(0), s(1)
        # W is (C, M/group, *kernel): each input element scatters into M/group * prod(kernel)
        return _numel(x) * _numel(w[1:]) if _known(x) and _known(w) else None
    if op in ("Gemm", "FusedGemm"):
        a = s(0)
        if not (_known(a) and _known(y)) or len(a) != 2:
            return None
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        return _numel(y) * (a[0] if trans_a else a[1])
    if op in _MATMUL_AB:
        ia, ib = _MATMUL_AB[op]
        a, b = s(ia), s(ib)
        if not (_known(a) and _known(b)) or not a or not b:
            return None
        k = a[-1]
        if k != (b[-2] if len(b) > 1 else b[0]):
            return None  # inconsistent shapes: don't guess
        if not _known(y):  # numpy matmul semantics, broadcasting the batch dims
            m = a[-2] if len(a) > 1 else 1
            n = b[-1] if len(b) > 1 else 1
            ba, bb = a[:-2], b[:-2]
            r = max(len(ba), len(bb))
            ba, bb = (1,) * (r - len(ba)) + ba, (1,) * (r - len(bb)) + bb
            y = tuple(max(p, q) for p, q in zip(ba, bb)) + (m, n)
        return _numel(y) * k
    return 0


def _tensor_elems(t: onnx.TensorProto) -> int:
    if t.data_type == TensorProto.STRING:
        return 0
    return _numel(t.dims)


def _external_files(model: onnx.ModelProto) -> set[str]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    files = set()
    for t in _get_all_tensors(model):
        if uses_external_data(t):
            files.update(e.value for e in t.external_data if e.key == "location")
    return files


def _size_on_disk(model: onnx.ModelProto, path: Path, param_bytes: int) -> tuple[int, list]:
    """Bytes of the .onnx file plus the external-data files it points to."""
    size = path.stat().st_size
    files = _external_files(model)
    if not files and size < param_bytes // 2:
        # loaded with its external data pulled in: the file on disk still points at it
        files = _external_files(onnx.load(str(path), load_external_data=False))
    names = sorted(files)
    for f in names:
        p = path.parent / f
        if p.is_file():
            size += p.stat().st_size
    return size, names


class _Walk:
    """One pass over every node (subgraphs included), accumulating counts."""

    def __init__(self, shapes: dict):
        self.shapes = shapes
        self.hist: dict[str, int] = {}
        self.init_params = self.const_params = self.cos_params = 0
        self.param_bytes = self.int_elements = 0
        self.const_elems: dict[str, int] = {}  # constant tensor name -> param elements
        self.const_tensors: dict[str, onnx.TensorProto | list] = {}
        self.layers: list[dict] = []
        self.unknown: list[str] = []
        self.count = 0

    def shape(self, name):
        return self.shapes.get(name)

    def add_tensor(self, name: str, data_type: int, elems: int) -> int:
        """Account one constant tensor; returns the param elements it adds."""
        if data_type in _PARAM_BITS:
            self.param_bytes += (elems * _PARAM_BITS[data_type] + 7) // 8
            self.const_elems[name] = elems
            return elems
        if data_type in _INT_TYPES:
            self.int_elements += elems
        return 0

    def graph(self, g: onnx.GraphProto):
        for t in g.initializer:
            self.init_params += self.add_tensor(t.name, t.data_type, _tensor_elems(t))
            self.const_tensors[t.name] = t
        for node in g.node:
            self.node(node)

    def constant(self, node: onnx.NodeProto):
        out = node.output[0]
        for a in node.attribute:
            if a.name == "value":
                self.const_params += self.add_tensor(out, a.t.data_type, _tensor_elems(a.t))
                self.const_tensors[out] = a.t
            elif a.name == "sparse_value":  # stored values are the parameters
                v = a.sparse_tensor.values
                self.const_params += self.add_tensor(out, v.data_type, _tensor_elems(v))
            elif a.name in ("value_float", "value_floats"):
                n = 1 if a.name == "value_float" else len(a.floats)
                self.const_params += self.add_tensor(out, TensorProto.FLOAT, n)
            elif a.name in ("value_int", "value_ints"):
                self.add_tensor(out, TensorProto.INT64, 1 if a.name == "value_int" else len(a.ints))
                self.const_tensors[out] = [a.i] if a.name == "value_int" else list(a.ints)

    def constant_of_shape(self, node: onnx.NodeProto):
        """A ConstantOfShape fed by a constant shape is a fixed-size stored weight."""
        src = self.const_tensors.get(node.input[0]) if node.input else None
        if src is None:
            return  # shape computed at run time: a buffer, not a parameter
        dtype = next((a.t.data_type for a in node.attribute if a.name == "value"),
                     TensorProto.FLOAT)
        try:
            dims = src if isinstance(src, list) else numpy_helper.to_array(src).tolist()
            elems = _numel(dims)
        except Exception:  # noqa: BLE001 - e.g. external data not loaded: use inferred shape
            out = self.shape(node.output[0])
            if not _known(out):
                return
            elems = _numel(out)
        self.cos_params += self.add_tensor(node.output[0], dtype, elems)

    def node(self, node: onnx.NodeProto):
        op = node.op_type
        self.hist[op] = self.hist.get(op, 0) + 1
        self.count += 1
        if op == "Constant":
            self.constant(node)
        elif op == "ConstantOfShape":
            self.constant_of_shape(node)
        elif op in _MAC_OPS and node.output:
            name = node.name or f"{op}_{self.count - 1}"
            macs = _node_macs(node, self.shape)
            if macs is None:
                self.unknown.append(name)
            else:
                out = self.shape(node.output[0])
                self.layers.append({
                    "name": name,
                    "op_type": op,
                    "macs": int(macs),
                    "output_shape": list(out) if out is not None else None,
                    "params": sum(self.const_elems.get(i, 0) for i in set(node.input) if i),
                })
        for g in _subgraphs(node):
            self.graph(g)


def _sorted_desc(d: dict) -> dict:
    return dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))


def model_stats(model: onnx.ModelProto, path: str | Path | None = None,
                input_shapes: dict[str, tuple] | None = None) -> dict:
    """Ops, params, MACs per layer, size and I/O of `model`, as a JSON-serialisable dict.

    `input_shapes` fixes symbolic input dims for MAC counting; symbolic dims left open are
    taken as 1 and listed in `macs_assumed_dims`. `path` makes `size_bytes` the size on disk
    (with external-data files); without it, the serialized size.
    """
    light, assumed = _skeleton(model, input_shapes)
    inferred = _infer(light)
    shapes = _collect_shapes((inferred or light).graph, {})
    current, unknown = light, _unknown_macs(light.graph, shapes)
    for _ in range(_FOLD_ROUNDS if inferred is not None else 0):
        if not unknown:
            break
        current = _fold_shape_math(current, shapes)
        inferred = _infer(current) if current is not None else None
        if inferred is None:
            break
        shapes.update(_collect_shapes(inferred.graph, {}))
        unknown, before = _unknown_macs(light.graph, shapes), unknown
        if unknown == before:
            break

    walk = _Walk(shapes)
    walk.graph(model.graph)

    macs_by_op: dict[str, int] = {}
    for layer in walk.layers:
        macs_by_op[layer["op_type"]] = macs_by_op.get(layer["op_type"], 0) + layer["macs"]

    external: list[str] = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise EdgepackError(f"model file not found: {os.fspath(p)}")
        size, external = _size_on_disk(model, p, walk.param_bytes)
    else:
        size = model.ByteSize()

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    producer = f"{model.producer_name} {model.producer_version}".strip()
    params = walk.init_params + walk.const_params + walk.cos_params
    return {
        "inputs": [s.to_dict() for s in graph_inputs(model)],
        "outputs": [s.to_dict() for s in graph_outputs(model)],
        "ir_version": int(model.ir_version),
        "opset": opset,
        "producer": producer,
        "nodes": walk.count,
        "op_histogram": _sorted_desc(walk.hist),
        "params": params,
        "params_breakdown": {
            "initializers": walk.init_params,
            "constants": walk.const_params,
            "constant_of_shape": walk.cos_params,
        },
        "int_elements": walk.int_elements,
        "param_bytes": walk.param_bytes,
        "size_bytes": int(size),
        "external_data": external,
        "macs": sum(layer["macs"] for layer in walk.layers),
        "macs_by_op": _sorted_desc(macs_by_op),
        "macs_assumed_dims": assumed,
        "shape_inference": inferred is not None,
        "unknown_shape_nodes": walk.unknown,
        "layers": walk.layers,
    }
