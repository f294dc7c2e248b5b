"""YAML files read through strict pydantic models (target profiles, recipes): every mistake
becomes one line naming the field, with close-name suggestions for typos."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edgepack.errors import EdgepackError, close_names

M = TypeVar("M", bound=BaseModel)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; in a profile that is a typo to report."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping; syntax errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise EdgepackError(f"{what} file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise EdgepackError(f"{path}{line}: YAML syntax error: {problem}") from None
    if data is None:
        raise EdgepackError(f"{path}: {what} file is empty")
    if not isinstance(data, dict):
        raise EdgepackError(f"{path}: expected a mapping of {what} fields, got a {type(data).__name__}")
    return data


def validate(model: type[M], data: Any, where: str, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise EdgepackError(f"{where}: invalid {what}: {condense(e, model)}") from None


def load_yaml_model(path: Path, model: type[M], what: str) -> M:
    return validate(model, read_yaml_mapping(path, what), str(path), what)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model at `loc`, to suggest the intended name for an unknown one."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
        model = getattr(model, "__args__", (model,))[0]  # list[Runtime] -> Runtime
    is_model = isinstance(model, type) and issubclass(model, BaseModel)
    return list(model.model_fields) if is_model else []


def condense(err: ValidationError, root: type[BaseModel], limit: int = 3) -> str:
    """Pydantic's multi-line report -> 'field.path: what is wrong; ...' on one line."""
    errors = err.errors()
    suggested = {}  # a misspelt field also shows up as a missing one; say it once
    for e in errors:
        if e["type"] == "extra_forbidden":
            hint = close_names(str(e["loc"][-1]), _fields_at(root, e["loc"][:-1]))
            suggested[e["loc"]] = hint
            for name in hint.removeprefix(" (did you mean: ").removesuffix("?)").split(", "):
                suggested[(*e["loc"][:-1], name)] = None
    parts = []
    for e in errors:
        where = _loc(e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown field{suggested[e['loc']]}")
        elif e["type"] == "missing":
            if e["loc"] not in suggested:
                parts.append(f"{where}: required field is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            if e["type"] in ("literal_error", "enum") or e["type"].endswith(("_type", "_parsing")):
                msg += f" (got {got!r})"
            parts.append(f"{where}: {msg}" if where else msg)
    more = f"; and {len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more
