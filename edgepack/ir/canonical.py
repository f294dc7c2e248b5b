"""The canonical graph every pass and backend starts from: checked, static-shaped, simplified.

Simplification (constant folding, Conv+BatchNorm fusion, dead-node removal) is onnxslim's
job; this module only fixes input shapes, upgrades old opsets and records what changed.
"""

from __future__ import annotations

import copy
import math
from collections import Counter

import onnx
from onnx import shape_inference, version_converter

from edgepack.errors import EdgepackError, first_line
from edgepack.ir.spec import graph_inputs, match_shapes, resolve_shapes
from edgepack.logutil import quiet

# Domains whose ops the runtimes implement; anything else (com.example::Foo) needs a custom-op library
# no runtime here loads, so it is refused before the first session is built.
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")

# Opset 13 is the first with per-axis QuantizeLinear (per-channel INT8); 17 adds LayerNormalization.
MIN_OPSET = 13
TARGET_OPSET = 17


def canonicalize(model: onnx.ModelProto, input_shapes: dict | None = None) -> tuple[onnx.ModelProto, dict]:
    """Return (canonical model, info about what was done)."""
    import onnxslim

    check_domains(model)
    check_tensors(model)
    specs = graph_inputs(model)
    shapes = match_shapes([s.name for s in specs], input_shapes)
    static, shape_notes = resolve_shapes(specs, shapes)
    model = with_static_inputs(model, static)
    before = Counter(n.op_type for n in model.graph.node)
    info: dict = {"opset_in": opset_of(model), "shape_notes": shape_notes}
    model = _upgrade_opset(model, info)
    try:
        with quiet("onnxslim"):
            slim = onnxslim.slim(model)
    except Exception as e:  # the simplifier is an optimisation: keep the checked graph if it fails
        slim = model
        info["simplifier_error"] = first_line(e)
    if slim is None:
        slim = model
    try:
        slim = _checked(slim)
    except EdgepackError as e:
        if slim is model:
            raise
        # the simplified graph no longer infers (silero-vad: an LSTM inside an If lost its input
        # rank): the graph as given is kept, and the report says why it was not simplified
        slim = _checked(model)
        info["simplifier_error"] = f"simplified graph refused, kept the graph unsimplified: {e}"
    after = Counter(n.op_type for n in slim.graph.node)
    info.update(
        simplifier=f"onnxslim {onnxslim.__version__}",
        opset=opset_of(slim),
        input_shapes={s.name: list(s.shape) for s in graph_inputs(slim)},
        nodes_before=sum(before.values()),
        nodes_after=sum(after.values()),
        batchnorm_folded=before["BatchNormalization"] - after["BatchNormalization"],
        batchnorm_left=after["BatchNormalization"],  # BN not preceded by a Conv cannot be folded
        ops_removed={k: before[k] - after[k] for k in sorted(before) if before[k] > after[k]},
    )
    return slim, info


def _checked(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape-inferred, uniquely named and checked: a graph that fails here (shapes that contradict
    each other, a malformed attribute) is the user's model, so it ends in one line."""
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:  # InferenceError, or a plain RuntimeError from the C++ side
        raise EdgepackError(f"shape inference failed on the model: {first_line(e)}")
    name_nodes(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise EdgepackError(f"canonical graph failed onnx.checker: {first_line(e)}")
    return model


def check_domains(model: onnx.ModelProto) -> None:
    """Refuse nodes from custom op domains before a runtime is asked to load them: ONNX Runtime
    and the converters raise pages about an unregistered op; the user needs its name."""
    local = {(f.domain, f.name) for f in model.functions}
    for node in _all_nodes(model.graph):
        if node.domain not in KNOWN_DOMAINS and (node.domain, node.op_type) not in local:
            raise EdgepackError(
                f"node {node.name or node.op_type!r} is the custom op {node.domain}::{node.op_type}: no runtime "
                "edgepack targets implements it; export the model with standard ONNX ops")


def check_tensors(model: onnx.ModelProto) -> None:
    """Refuse what onnx.checker lets through but ONNX Runtime rejects with a traceback: an opset
    newer than the installed onnx knows, an unknown element type, an initializer whose bytes do
    not match its shape (a flipped byte, external data of the wrong length)."""
    newest = onnx.defs.onnx_opset_version()
    if opset_of(model) > newest:
        raise EdgepackError(f"the model declares opset {opset_of(model)}; the newest this onnx knows is {newest}")
    known = set(onnx.TensorProto.DataType.values())
    for t in model.graph.initializer:
        if t.data_type not in known or t.data_type == onnx.TensorProto.UNDEFINED:
            raise EdgepackError(f"initializer {t.name!r} has an unknown element type {t.data_type}")
        if t.HasField("raw_data") and t.data_type not in (onnx.TensorProto.STRING,):
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            want = math.prod(t.dims) * itemsize
            if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
                want = (math.prod(t.dims) + 1) // 2
            if len(t.raw_data) != want:
                raise EdgepackError(f"initializer {t.name!r} of shape {list(t.dims)[:8]} holds {len(t.raw_data)} "
                                    f"bytes, expected {want}: the model file is damaged")


def _all_nodes(graph: onnx.GraphProto):
    """Every node, including those in the subgraphs of If/Loop/Scan."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def with_static_inputs(model: onnx.ModelProto, shapes: dict[str, tuple]) -> onnx.ModelProto:
    """A copy of `model` whose inputs have the given concrete shapes."""
    model = copy.deepcopy(model)
    for vi in model.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            for d, value in zip(dims, shapes[vi.name]):
                d.Clear()
                d.dim_value = int(value)
    return model


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name: quantization scopes, reports and pruning plans refer to them."""
    seen: set[str] = set()
    taken = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            name, k = f"{node.op_type}_{i}", 0
            while name in taken:  # a given name may already look like a generated one
                k += 1
                name = f"{node.op_type}_{i}_{k}"
            node.name = name
            taken.add(name)
        seen.add(node.name)


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _upgrade_opset(model: onnx.ModelProto, info: dict) -> onnx.ModelProto:
    if opset_of(model) >= MIN_OPSET:
        return model
    try:
        upgraded = version_converter.convert_version(model, TARGET_OPSET)
        # IR < 4 demands initializers be listed as inputs; opset 17 belongs with IR 8
        upgraded.ir_version = max(upgraded.ir_version, 8)
        onnx.checker.check_model(upgraded)
        info["opset_upgraded_to"] = TARGET_OPSET
        return upgraded
    except Exception as e:  # keep the original opset; later INT8 passes will say what they need
        info["opset_upgrade_error"] = first_line(e)
        return model
