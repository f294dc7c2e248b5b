"""Typed descriptions of a graph's inputs and outputs, shared by every stage."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from edgepack.errors import EdgepackError

# One sample of every input together may not exceed this: parity, calibration and timing hold many
# samples, so a declared 100000x100000x100000 input must be refused before anything is allocated.
INPUT_BUDGET_ENV = "EDGEPACK_MAX_INPUT_BYTES"
DEFAULT_INPUT_BUDGET = 1 << 30


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one graph input/output. A dim is an int or a symbolic name."""

    name: str
    shape: tuple
    dtype: str  # numpy dtype name, e.g. "float32"

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def _value_info_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
    except (KeyError, TypeError, ValueError):  # a non-tensor (sequence, map) or undefined element type
        raise EdgepackError(f"graph value {vi.name!r} has element type {tt.elem_type}, not a tensor type "
                            "edgepack can feed or compare")
    return TensorSpec(vi.name, tuple(dims), dtype)


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Real inputs of the graph (initializers listed as inputs by old exporters are skipped)."""
    inits = {i.name for i in model.graph.initializer}
    return [_value_info_spec(v) for v in model.graph.input if v.name not in inits]


def graph_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [_value_info_spec(v) for v in model.graph.output]


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse CLI `name:1,3,224,224` items into {name: shape}; a bare `1,3,224,224` is keyed "".

    The "" key means "the model's only input", so single-input models need no input name.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, _, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not shape or any(d <= 0 for d in shape):
            raise EdgepackError(
                f"--input-shape {item!r}: expected [NAME:]D1,D2,... with positive integers, "
                "e.g. input:1,3,224,224"
            )
        shapes[name] = shape
    return shapes


def match_shapes(names: list[str], shapes: dict[str, tuple] | None) -> dict[str, tuple]:
    """Key user-given shapes by real input names; unknown names are an error."""
    shapes = dict(shapes or {})
    if "" in shapes:
        if len(names) != 1:
            raise EdgepackError(
                f"the model has {len(names)} inputs {names}: name each one, e.g. --input-shape {names[0]}:..."
            )
        shapes[names[0]] = shapes.pop("")
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise EdgepackError(f"--input-shape names {unknown} are not model inputs; inputs are {names}")
    return shapes


def input_budget() -> int:
    """Bytes one sample of the inputs may take (EDGEPACK_MAX_INPUT_BYTES overrides the 1 GiB default)."""
    import os

    text = os.environ.get(INPUT_BUDGET_ENV, "")
    try:
        return int(text) if text else DEFAULT_INPUT_BUDGET
    except ValueError:
        raise EdgepackError(f"{INPUT_BUDGET_ENV}={text[:40]!r}: expected a number of bytes")


def check_input_size(name: str, shape: tuple, dtype: str = "float32") -> None:
    """Refuse an input whose one sample would not fit the memory budget, before it is allocated:
    a typo such as `--input-shape 1,3,224224,224` must cost a line, not the machine's memory."""
    if any(isinstance(d, int) and d == 0 for d in shape):
        raise EdgepackError(f"input {name!r} has a zero-size dimension {list(shape)}: there is nothing to run; "
                            "give a positive size with --input-shape")
    nbytes = math.prod(int(d) for d in shape if isinstance(d, int) and d > 0) * np.dtype(dtype).itemsize
    budget = input_budget()
    if nbytes > budget:
        raise EdgepackError(f"input {name!r} of shape {list(shape)[:8]} ({dtype}) needs {_human(nbytes)} per sample, "
                            f"over the {_human(budget)} input budget (set {INPUT_BUDGET_ENV} to raise it)")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def resolve_shape(spec: TensorSpec, override: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """A concrete shape for `spec` within the input budget: the override if given, else the
    declared shape with an unknown batch (leading) dim taken as 1. Any other unknown dim is an
    error naming it: a graph whose image size or sequence length was silently set to 1 compiles
    into an artifact that cannot run real inputs, with MACs, parity and latency of a 1x1 image."""
    shape, _ = resolve_shapes([spec], {spec.name: override} if override is not None else None)
    return shape[spec.name]


def resolve_shapes(specs: list[TensorSpec], overrides: dict | None = None) -> tuple[dict, list[str]]:
    """({input: concrete shape}, notes on what was assumed) for all inputs at once, so that one
    error names every input left open and shows a ready --input-shape line for all of them."""
    overrides = overrides or {}
    shapes, notes, open_inputs = {}, [], []
    for spec in specs:
        if spec.name in overrides:
            shapes[spec.name] = _overridden(spec, tuple(overrides[spec.name]))
            continue
        if any(isinstance(d, int) and d == 0 for d in spec.shape):
            check_input_size(spec.name, spec.shape, spec.dtype)  # refuses the zero-size dim
        if open_dims(spec):
            open_inputs.append(spec)
            continue
        shapes[spec.name] = tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec.shape)
        if unknown_dims(spec):
            notes.append(f"input {spec.name!r}: batch dimension {spec.shape[0]!r} taken as 1 "
                         "(give --input-shape to choose another)")
    if open_inputs:
        raise EdgepackError(open_dims_message(open_inputs, specs, overrides))
    for spec in specs:
        check_input_size(spec.name, shapes[spec.name], spec.dtype)
    return shapes, notes


def unknown_dims(spec: TensorSpec) -> list[int]:
    """Positions of the dims the graph leaves open (symbolic names, -1, or missing)."""
    return [i for i, d in enumerate(spec.shape) if not (isinstance(d, int) and d > 0)]


def open_dims(spec: TensorSpec) -> list[int]:
    """The unknown dims no default may fill: all but the batch (leading) one."""
    return [i for i in unknown_dims(spec) if i != 0]


def open_dims_message(open_inputs: list[TensorSpec], specs: list[TensorSpec], overrides: dict) -> str:
    """One line: each input and its unknown dims, then an --input-shape line ready to paste (the
    example sizes are guesses a user replaces with the real ones)."""
    parts = [f"{s.name!r} {_fmt_dims(s.shape)}: dim " + ", ".join(f"{i} ({s.shape[i]})" for i in open_dims(s))
             for s in open_inputs]
    needed = [s for s in specs if s.name not in overrides and unknown_dims(s)]
    example = " ".join(f"--input-shape {s.name}:" + ",".join(str(d) for d in example_shape(s)) for s in needed)
    return (f"the model leaves input dimensions unknown ({'; '.join(parts)}): give the shape to compile "
            f"for, e.g. {example}")


def example_shape(spec: TensorSpec) -> tuple[int, ...]:
    """A plausible concrete shape for an input with open dims: batch 1, image sides 224 when the
    input looks like an image (a channel dim of 1, 3 or 4 beside two open ones), 128 otherwise."""
    dims = list(spec.shape)
    image = len(dims) == 4 and any(isinstance(dims[i], int) and dims[i] in (1, 3, 4) for i in (1, 3))
    out = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            out.append(d)
        else:
            out.append(1 if i == 0 else 224 if image else 128)
    return tuple(out)


def _fmt_dims(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _overridden(spec: TensorSpec, override: tuple[int, ...]) -> tuple[int, ...]:
    if len(override) != len(spec.shape):
        raise EdgepackError(
            f"input {spec.name!r} has {len(spec.shape)} dims {list(spec.shape)}, "
            f"--input-shape gave {len(override)}"
        )
    for have, want in zip(spec.shape, override):
        if isinstance(have, int) and have > 0 and have != want:
            raise EdgepackError(
                f"input {spec.name!r} has fixed shape {list(spec.shape)}; "
                f"--input-shape {list(override)} does not match it"
            )
    return override


def assumed_shape(spec: TensorSpec, override: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """For counting only (inspect): the override, else open dims taken as 1. Callers must say
    that the counts assume this shape."""
    shape = _overridden(spec, tuple(override)) if override is not None else tuple(
        d if isinstance(d, int) and d > 0 else 1 for d in spec.shape)
    check_input_size(spec.name, shape, spec.dtype)
    return shape


def fixed_batch(specs: list[TensorSpec]) -> int:
    """The graph's fixed batch size: the first input's leading dimension when it is a positive
    integer (canonical graphs have static shapes), else 1."""
    first = specs[0].shape[0] if specs and specs[0].shape else 1
    return int(first) if isinstance(first, int) and first > 0 else 1
