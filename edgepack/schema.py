"""YAML files read through strict pydantic models (target profiles, recipes): every mistake
becomes one line naming the field, with close-name suggestions for typos."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edgepack.errors import EdgepackError, close_names, excerpt

M = TypeVar("M", bound=BaseModel)

MAX_YAML_BYTES = 1 << 20  # profiles and recipes are a few KB; 1 MB is far past any real one
MAX_ALIAS_EXPANSION = 10_000  # values that aliases may add on top of the file's own


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses documents whose aliases expand past MAX_ALIAS_EXPANSION values.

    Why not count aliases: a 600-byte "billion laughs" uses only ~90 of them; the blow-up is in
    what they expand to once validation, error messages or resume-key hashing walk the data. So
    the composed node graph (shared nodes, cheap) is measured before anything is constructed, and
    refused when its expanded size exceeds the file's own nodes by the budget. Anchors and merge
    keys (`<<: *defaults`) of a sane size keep working; recursive aliases are refused."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that expands (through shared alias nodes) far past its own size."""
    sizes: dict[int, int] = {}
    cap = MAX_ALIAS_EXPANSION + 2 * len(_distinct_nodes(root))
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        kids = _children(node)
        if done:
            active.discard(id(node))
            sizes[id(node)] = min(cap + 1, 1 + sum(sizes[id(k)] for k in kids))
            if sizes[id(node)] > cap:
                raise yaml.constructor.ConstructorError(
                    None, None, f"aliases expand to more than {cap} values (refused: at most "
                    f"{MAX_ALIAS_EXPANSION} beyond the file's own)", node.start_mark)
            continue
        if id(node) in active:
            raise yaml.constructor.ConstructorError(None, None, "recursive alias", node.start_mark)
        active.add(id(node))
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _distinct_nodes(root: yaml.Node) -> set[int]:
    """ids of the nodes the file itself holds (each shared node once)."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(_children(node))
    return seen


def read_yaml_text(path: Path, what: str) -> str:
    """The file's text, refused past MAX_YAML_BYTES before it is read or parsed."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise EdgepackError(f"{path}: cannot read {what} file ({e.strerror})") from None
    if size > MAX_YAML_BYTES or len(raw) > MAX_YAML_BYTES:
        raise EdgepackError(f"{path}: {what} file is {max(size, len(raw)):,} bytes; "
                            f"refused above {MAX_YAML_BYTES:,} (is it the right file?)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EdgepackError(f"{path}: {what} file is not UTF-8 text (byte {e.start})") from None


MAX_DEPTH = 100  # profiles and recipes nest a few levels; PyYAML composes recursively


def _check_depth(text: str) -> None:
    """Refuse nesting past MAX_DEPTH from the token stream (the scanner is iterative), before PyYAML
    composes it recursively: a RecursionError is not a bound one can count on, since any library
    in the process may have raised the recursion limit."""
    opens = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken, yaml.BlockSequenceStartToken,
             yaml.BlockMappingStartToken)
    closes = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)
    depth = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, opens):
            depth += 1
            if depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested too deeply (more than {MAX_DEPTH} levels)")
        elif isinstance(token, closes):
            depth -= 1


def load_bounded_yaml(text: str, loader: type = BoundedLoader):
    """yaml.load with the depth and alias budgets; deep nesting is a YAML error."""
    try:
        _check_depth(text)
        return yaml.load(text, Loader=loader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except ValueError as e:  # an integer of thousands of digits: Python refuses to convert it
        raise yaml.YAMLError(f"a value cannot be read: {(str(e).splitlines() or ['?'])[0][:200]}") from None


class _UniqueKeyLoader(BoundedLoader):
    """PyYAML keeps the last of two equal keys silently; in a profile that is a typo to report."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {excerpt(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping; syntax errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise EdgepackError(f"{what} file not found: {path}")
    try:
        data = load_bounded_yaml(read_yaml_text(path, what), _UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise EdgepackError(f"{path}{line}: YAML syntax error: {problem[:300]}") from None
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
        where = where if len(where) <= 200 else where[:197] + "..."  # keys are input too
        if e["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown field{suggested[e['loc']]}")
        elif e["type"] == "missing":
            if e["loc"] not in suggested:
                parts.append(f"{where}: required field is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            if e["type"] in ("literal_error", "enum") or e["type"].endswith(("_type", "_parsing")):
                msg += f" (got {excerpt(got)})"
            msg = msg if len(msg) <= 400 else msg[:397] + "..."  # custom validators may quote input
            parts.append(f"{where}: {msg}" if where else msg)
    more = f"; and {len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more
