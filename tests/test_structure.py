"""The code's shape, checked: who may import whom, and how big a function may grow.

Orchestrators call downward only (search -> pipeline -> compiler); passes know nothing of
runtimes or devices; the session modules that run on a board or in a bundle need only numpy
and their runtime. Imports inside functions count too.
"""

from __future__ import annotations

import ast

import pytest

from helpers import ROOT

PACKAGE = ROOT / "edgepack"
MAX_LINES, MAX_PARAMS = 80, 10
# the flat entry points keep the keyword form users like; their bodies only build a request
FLAT_ENTRY_POINTS = {("api.py", "compile"), ("api.py", "profile"), ("compiler/request.py", "from_kwargs")}


def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}


def _imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _violations(prefixes: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for rel, tree in _modules().items():
        if rel.startswith(prefixes):
            bad = sorted(m for m in _imports(tree) if m.startswith(forbidden))
            out += [f"{rel} imports {m}" for m in bad]
    return out


@pytest.mark.parametrize("importers, forbidden", [
    (("compiler/", "pipeline/", "search/"), ("edgepack.tracking",)),  # they emit events instead
    (("compiler/", "pipeline/"), ("edgepack.api", "edgepack.cli", "edgepack.views")),  # no cycle back up
    (("compiler/",), ("edgepack.pipeline", "edgepack.search")),
    (("passes/",), ("edgepack.backends", "edgepack.devices", "edgepack.board", "edgepack.compiler")),
    (("ir/", "frontends/"), ("edgepack.passes", "edgepack.backends", "edgepack.compiler", "edgepack.pipeline")),
])
def test_import_rules(importers, forbidden):
    assert _violations(importers, forbidden) == []


def test_mlflow_is_imported_only_by_tracking():
    """MLflow lives behind one listener: nothing outside edgepack/tracking/ imports it."""
    outside = tuple(rel for rel in _modules() if not rel.startswith("tracking/"))
    assert _violations(outside, ("mlflow",)) == []
    assert any(m.startswith("mlflow") for rel, tree in _modules().items() if rel.startswith("tracking/")
               for m in _imports(tree))


@pytest.mark.parametrize("library, home", [("optuna", "search/study.py"), ("ray", "search/ray.py")])
def test_optional_libraries_have_one_importer(library, home):
    """Optuna and Ray are optional extras, each behind one module: nothing else may import them."""
    importers = sorted(rel for rel, tree in _modules().items()
                       if any(m == library or m.startswith(library + ".") for m in _imports(tree)))
    assert importers == [home]


def test_session_modules_import_nothing_from_edgepack():
    sessions = [rel for rel in _modules() if rel.startswith("backends/sessions/")]
    assert sessions, "no per-backend session modules found"
    assert _violations(tuple(sessions), ("edgepack",)) == []


def test_no_function_is_too_long_or_takes_too_many_parameters():
    rows = []
    for rel, tree in _modules().items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (rel, node.name) in FLAT_ENTRY_POINTS:
                continue
            a = node.args
            params = [x for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES or len(params) > MAX_PARAMS:
                rows.append(f"{rel}:{node.lineno} {node.name}: {lines} lines, {len(params)} parameters")
    assert rows == []


def test_backend_names_have_one_home():
    """The registry is the only list of backend names: no other module spells them as a list."""
    from edgepack.backends import REGISTRY

    names = set(REGISTRY)
    for rel, tree in _modules().items():
        if rel.startswith("backends/__init__"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                assert not (len(values & names) >= 3), f"{rel}:{node.lineno} lists backend names"


def test_report_schemas_shipped_match_the_models():
    """edgepack/report/schemas/*.json are what the models export (python -m edgepack.report.schema)."""
    import json

    from edgepack.report.schema import REPORTS, SCHEMA_DIR, json_schema

    for command in REPORTS:
        shipped = json.loads((SCHEMA_DIR / f"{command}.schema.json").read_text())
        assert shipped == json.loads(json.dumps(json_schema(command))), f"{command}: rerun python -m edgepack.report.schema"


def test_readme_layout_names_only_what_exists():
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    for line in layout.splitlines():
        head = line.strip().split("  ")[0]
        for name in head.replace(",", " ").split():
            if name.endswith(("/", ".py")) and not name.startswith(("(", "#")):
                assert any(PACKAGE.rglob(name.rstrip("/"))) or (ROOT / name.rstrip("/")).exists(), \
                    f"README layout names {name}, which is not in the tree"
