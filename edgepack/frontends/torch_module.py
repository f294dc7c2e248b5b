"""PyTorch frontends: nn.Module, `file.py:factory` (+ weights), TorchScript -> ONNX.

Export uses the TorchScript-based exporter (`dynamo=False`): it handles the CNNs and
transformers we target without onnxscript rewrites, and folds eval-mode BatchNorm into Conv.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx

from edgepack.errors import EdgepackError, first_line
from edgepack.frontends import Source
from edgepack.fsutil import sha256_file
from edgepack.ir.spec import check_input_size, match_shapes

OPSET = 17


def from_module(module, input_shapes: dict | None, name: str, digest: str | None = None,
                path: str | None = None, kind: str = "torch") -> Source:
    import torch

    names = _input_names(module)
    shapes = match_shapes(names, input_shapes)
    missing = [n for n in names if n not in shapes]
    if missing:
        example = " ".join(f"--input-shape {n}:1,3,224,224" for n in missing)
        raise EdgepackError(f"a PyTorch model needs the shape of each input: {example}")
    for n in names:  # refuse before torch allocates (or overflows computing) the example tensor
        check_input_size(n, shapes[n], "int64" if _is_integer_input(n) else "float32")
    module = module.eval()
    args = tuple(_example(torch, n, shapes[n]) for n in names)
    model = export(module, args, names)

    @torch.no_grad()
    def run(feeds):
        out = module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names))
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().numpy() for o in outs]

    return Source(model, kind, name, digest or state_digest(module), run, path)


def export(module, args: tuple, names: list[str]) -> onnx.ModelProto:
    """torch.onnx.export into memory with fixed shapes; failures become one line naming the op."""
    import torch

    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET,
                              input_names=names, do_constant_folding=True)
    except Exception as e:  # the exporter raises many types; the user needs the message only
        raise EdgepackError(f"PyTorch -> ONNX export failed: {first_line(e)}")
    return onnx.load_from_string(buf.getvalue())


def from_factory(text: str, input_shapes: dict | None, weights: str | None) -> Source:
    """`path/to/file.py:factory` -> the nn.Module it returns, with optional weights."""
    module, digest = load_factory(text, weights)
    return from_module(module, input_shapes, name=text.rpartition(":")[2], digest=digest, path=text)


def load_factory(text: str, weights: str | None = None, args: dict | None = None):
    """(nn.Module built by `file.py:factory(**args)`, sha256 of the file and weights)."""
    import torch

    file, _, attr = text.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise EdgepackError(f"{file}: no such file")
    spec = importlib.util.spec_from_file_location(f"edgepack_user_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(mod)
        factory = getattr(mod, attr, None)
        if not callable(factory):
            raise EdgepackError(f"{file} has no callable {attr!r}")
        module = factory(**(args or {}))
    except EdgepackError:
        raise
    except (Exception, SystemExit) as e:  # user code: sys.exit() in a factory must not end edgepack silently
        raise EdgepackError(f"{text} raised {type(e).__name__}: {first_line(e)}")
    finally:
        sys.path.remove(str(path.parent.resolve()))
    if not isinstance(module, torch.nn.Module):
        raise EdgepackError(f"{text} returned a {type(module).__name__}, expected a torch.nn.Module")
    digest = hashlib.sha256(path.read_bytes())
    if weights:
        load_weights(module, Path(weights))
        digest.update(Path(weights).read_bytes())
    return module, digest.hexdigest()


def load_torchscript(path: Path):
    """The TorchScript module in `path`, on the CPU; one clear line when it is not one."""
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise EdgepackError(f"{path}: not a TorchScript archive ({first_line(e, 120)}); "
                            f"for a state_dict use `file.py:factory --weights {path}`")


def from_torchscript(path: Path, input_shapes: dict | None) -> Source:
    return from_module(load_torchscript(path), input_shapes, name=path.stem, digest=sha256_file(path),
                       path=str(path), kind="torchscript")


def load_weights(module, path: Path) -> None:
    import torch

    if not path.is_file():
        raise EdgepackError(f"{path}: no such weights file")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise EdgepackError(f"{path}: cannot load weights safely (weights_only=True): {first_line(e)}")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EdgepackError(f"{path}: expected a state_dict, found a {type(state).__name__}")
    result = _load_state(module, state, path)
    if result.missing_keys or result.unexpected_keys:
        raise EdgepackError(
            f"{path} does not fit the model: {len(result.missing_keys)} missing keys "
            f"{result.missing_keys[:3]}, {len(result.unexpected_keys)} unexpected {result.unexpected_keys[:3]}"
        )


def _load_state(module, state: dict, path: Path):
    """module.load_state_dict, non-strict; tensors of the wrong shape or type (which torch reports as
    a page per key) become one line naming the first mismatch."""
    bad = [k for k, v in state.items() if not hasattr(v, "is_complex") or v.is_complex()]
    if bad:
        raise EdgepackError(f"{path}: {bad[0]!r} is not a real-valued tensor ({type(state[bad[0]]).__name__})")
    try:
        return module.load_state_dict(state, strict=False)
    except Exception as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else first_line(e)
        raise EdgepackError(f"{path} does not fit the model: {detail[:300]}")


def _input_names(module) -> list[str]:
    """Names of forward()'s positional inputs (TorchScript keeps them in the schema)."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:
        return [a.name for a in schema.arguments if a.name != "self"]
    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _is_integer_input(name: str) -> bool:
    # token ids and masks are integers; everything else is treated as float32
    return any(k in name.lower() for k in ("ids", "mask", "token", "index"))


def _example(torch, name: str, shape: tuple):
    if _is_integer_input(name):
        return torch.ones(shape, dtype=torch.int64)
    return torch.randn(shape, dtype=torch.float32)


def state_digest(module) -> str:
    h = hashlib.sha256(type(module).__qualname__.encode())
    for key, tensor in module.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

