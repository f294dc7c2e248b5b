"""Registry of runtimes: the one list of backend names edgepack knows.

Target profiles validate `runtimes[].backend` and `runtimes[].options` against it, so importing
this module must stay cheap: the entries name their modules, which are imported on first use (a
missing extra costs nothing), and hold only the light options models.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pydantic import ValidationError

from edgepack.backends.options import (
    BackendOptions,
    OnnxRuntimeOptions,
    OpenVinoOptions,
    TfliteOptions,
    TvmOptions,
)
from edgepack.errors import EdgepackError, close_names
from edgepack.schema import condense

if TYPE_CHECKING:
    from edgepack.backends.base import Backend


class Entry(NamedTuple):
    module: str
    cls: str
    extra: str  # pip extra that installs the runtime ("" = core dependency)
    suffixes: tuple[str, ...]  # artifact files this runtime loads
    requires: tuple[str, ...]  # modules the runtime needs (the backend modules import them lazily)
    options: type[BackendOptions]  # what a profile's runtimes[].options may hold for it
    # pip distributions that provide the runtime on a device, the one to install first (a device's
    # probe reports their versions; a missing runtime is named by its package)
    packages: tuple[str, ...] = ()


REGISTRY: dict[str, Entry] = {
    "onnxruntime": Entry("edgepack.backends.onnxruntime", "OnnxRuntimeBackend", "", (".onnx",), ("onnxruntime",),
                         OnnxRuntimeOptions, ("onnxruntime", "onnxruntime-gpu")),
    "openvino": Entry("edgepack.backends.openvino", "OpenVinoBackend", "openvino", (".xml",), ("openvino",),
                      OpenVinoOptions, ("openvino",)),
    "tflite": Entry("edgepack.backends.tflite", "TfliteBackend", "tflite", (".tflite",), ("ai_edge_litert",),
                    TfliteOptions, ("ai-edge-litert",)),
    "tvm": Entry("edgepack.backends.tvm", "TvmBackend", "tvm", (".so",), ("tvm",), TvmOptions, ("apache-tvm",)),
}


def unknown_backend(name: str) -> str:
    """The one-line complaint about a name that is not in the registry, listing those that are."""
    return f"unknown backend {name!r}{close_names(name, REGISTRY)}; available: {', '.join(REGISTRY)}"


def options_model(name: str) -> type[BackendOptions]:
    """The options model backend `name` declares."""
    if name not in REGISTRY:
        raise EdgepackError(unknown_backend(name))
    return REGISTRY[name].options


def validate_options(name: str, options: BackendOptions | Mapping | None) -> BackendOptions:
    """`options` as backend `name`'s options model: defaults for None, a mapping validated (a bad
    key or value is one line naming the field), an instance of the model as it is."""
    model = options_model(name)
    if options is None:
        return model()
    if isinstance(options, BackendOptions) and not isinstance(options, model):
        raise EdgepackError(f"{name} takes {model.__name__}, got {type(options).__name__}")
    try:
        return model.model_validate(options)
    except ValidationError as e:
        raise EdgepackError(f"invalid {name} options: {condense(e, model)}") from None


def get_backend(name: str, options: BackendOptions | Mapping | None = None) -> Backend:
    """Backend `name` holding its validated `options` (defaults when None); an EdgepackError with
    close names for an unknown name and an install hint for a runtime that is not installed.

    Compiling for a target passes that target's settings: `profile.backend_options(name)`."""
    validated = validate_options(name, options)
    entry = REGISTRY[name]
    hint = f"pip install 'edgepack[{entry.extra}]'" if entry.extra else "reinstall edgepack"
    missing = [m for m in entry.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgepackError(f"backend {name!r} is not installed ({', '.join(missing)}): {hint}")
    try:
        return getattr(importlib.import_module(entry.module), entry.cls)(validated)
    except ImportError as e:
        raise EdgepackError(f"backend {name!r} is not installed ({e.name}): {hint}")


def backend_class(name: str) -> type[Backend]:
    """Backend `name`'s class, for what it declares (precisions, consumes_qdq) without its
    runtime: backend modules import their runtime lazily, so this works where it is not installed."""
    if name not in REGISTRY:
        raise EdgepackError(unknown_backend(name))
    entry = REGISTRY[name]
    return getattr(importlib.import_module(entry.module), entry.cls)


def backend_for_artifact(path: Path) -> Backend:
    """The backend whose artifact suffix matches `path` (its options come from the artifact)."""
    for name, entry in REGISTRY.items():
        if path.suffix.lower() in entry.suffixes:
            return get_backend(name)
    kind = f"{path.suffix} files" if path.suffix else "files without a suffix"
    raise EdgepackError(f"{path}: no backend recognises {kind}; pass --backend NAME")
