"""Registry of runtimes. Modules are imported on first use so a missing extra costs nothing."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import NamedTuple

from edgepack.backends.base import Backend
from edgepack.errors import EdgepackError, close_names


class Entry(NamedTuple):
    module: str
    cls: str
    extra: str  # pip extra that installs the runtime ("" = core dependency)
    suffixes: tuple[str, ...]  # artifact files this runtime loads
    requires: tuple[str, ...]  # modules the runtime needs (the backend modules import them lazily)


REGISTRY: dict[str, Entry] = {
    "onnxruntime": Entry("edgepack.backends.onnxruntime", "OnnxRuntimeBackend", "", (".onnx",), ("onnxruntime",)),
    "openvino": Entry("edgepack.backends.openvino", "OpenVinoBackend", "openvino", (".xml",), ("openvino",)),
    "tflite": Entry("edgepack.backends.tflite", "TfliteBackend", "tflite", (".tflite",), ("ai_edge_litert",)),
    "tvm": Entry("edgepack.backends.tvm", "TvmBackend", "tvm", (".so",), ("tvm",)),
}


def get_backend(name: str) -> Backend:
    if name not in REGISTRY:
        raise EdgepackError(f"unknown backend {name!r}{close_names(name, REGISTRY)}; "
                            f"available: {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    hint = f"pip install 'edgepack[{entry.extra}]'" if entry.extra else "reinstall edgepack"
    missing = [m for m in entry.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgepackError(f"backend {name!r} is not installed ({', '.join(missing)}): {hint}")
    try:
        return getattr(importlib.import_module(entry.module), entry.cls)()
    except ImportError as e:
        raise EdgepackError(f"backend {name!r} is not installed ({e.name}): {hint}")


def backend_for_artifact(path: Path) -> Backend:
    """The backend whose artifact suffix matches `path`."""
    for name, entry in REGISTRY.items():
        if path.suffix.lower() in entry.suffixes:
            return get_backend(name)
    raise EdgepackError(f"{path}: no backend recognises {path.suffix or 'this'} files; pass --backend NAME")
