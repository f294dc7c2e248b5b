"""ONNX files: load with clear errors; the reference is the untouched graph in ONNX Runtime."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from edgepack.errors import EdgepackError, first_line
from edgepack.frontends import Source


def read_onnx(path: Path) -> onnx.ModelProto:
    """onnx.load with one-line errors for empty, truncated or non-ONNX files."""
    if path.stat().st_size == 0:
        raise EdgepackError(f"{path}: file is empty")
    try:
        model = onnx.load(str(path))
    except onnx.checker.ValidationError as e:  # external data outside the model's folder, among others
        raise EdgepackError(f"{path}: refused: {first_line(e)}")
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        raise EdgepackError(f"{path}: not a readable ONNX model (truncated or another format): {first_line(e)}")
    except Exception as e:  # protobuf and the external-data loader raise more types on hostile bytes
        raise EdgepackError(f"{path}: not a readable ONNX model: {type(e).__name__}: {first_line(e)}")
    if not model.graph.node and not model.graph.output:
        # protobuf happily parses many random byte strings into an empty message
        raise EdgepackError(f"{path}: not an ONNX model (no graph inside)")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise EdgepackError(f"{path}: invalid ONNX model: {first_line(e)}")
    except Exception as e:  # the checker's C++ side raises plain errors on some malformed graphs
        raise EdgepackError(f"{path}: invalid ONNX model: {type(e).__name__}: {first_line(e)}")
    return model


def from_file(path: Path) -> Source:
    model = read_onnx(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Source(model, "onnx", path.stem, digest, reference_runner(model), str(path))


def from_proto(model: onnx.ModelProto) -> Source:
    digest = hashlib.sha256(model.SerializeToString()).hexdigest()
    return Source(model, "onnx", model.graph.name or "model", digest, reference_runner(model))


def _session(model: onnx.ModelProto):
    """ONNX Runtime on the graph as given. Duplicate node names (valid ONNX, refused by ORT) are
    renamed in a copy, which changes no output; any other refusal is the user's model, in one line."""
    from edgepack.ir.canonical import name_nodes
    from edgepack.runtime import ort_runner

    names = [n.name for n in model.graph.node if n.name]
    if len(names) != len(set(names)):
        model = onnx.ModelProto.FromString(model.SerializeToString())
        name_nodes(model)
    try:
        return ort_runner(model, optimize=False)
    except Exception as e:
        raise EdgepackError(f"ONNX Runtime cannot load the model: {first_line(e)}")


def reference_runner(model: onnx.ModelProto):
    """Run the graph as given, ORT graph optimisations off, so it is an independent reference.

    The session is created on first use: `inspect` loads sources without running them.
    """

    state = {}

    def run(feeds):
        if "runner" not in state:
            state["runner"] = _session(model)
        return state["runner"](feeds)

    return run
