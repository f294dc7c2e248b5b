"""`edgepack lineage show MODEL|ARTIFACT`: where a model came from, stage by stage.

Online, the walk follows MLflow's own records: a model's source run, that run's input models
and datasets, and on to the teacher (whose model carries the weights it started from). The
start is a registered model (NAME, NAME/VERSION, NAME@ALIAS), a logged model id (m-...), or
an artifact file (found by its sha256). Offline (`--offline`, a folder, or no store), the same
chain is read from the reports and stage.json files a compile or recipe run wrote.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgepack.errors import EdgepackError
from edgepack.fsutil import sha256_file
from edgepack.tracking import models

MAX_DEPTH = 50


def resolve(store, target: str) -> str:
    """The logged model id a MODEL|ARTIFACT argument names."""
    path = Path(target)
    if path.is_file():
        found = models.find(store, sha256_file(path))
        if found is None:
            raise EdgepackError(f"{target}: no tracked model has these bytes")
        return found
    if re.fullmatch(r"m-[0-9a-f]{32}", target):
        return target
    name, _, alias = target.partition("@")
    name, _, version = name.partition("/")
    if alias:
        v = store.get_model_version_by_alias(name, alias)
    elif version:
        v = store.get_model_version(name, version)
    else:
        from edgepack.tracking.registry import versions

        v = versions(store, name)[-1]
    if not v.source.startswith("models:/"):
        raise EdgepackError(f"{target}: its source {v.source} is not a logged model")
    return v.source.removeprefix("models:/")


def walk(store, model_id: str, depth: int = 0, seen: set | None = None) -> dict:
    """One model and, recursively, the models and data its producing run took."""
    seen = seen if seen is not None else set()
    m = store.get_logged_model(model_id)
    node = {"model_id": model_id, "name": m.name, "type": m.model_type, "role": m.tags.get(models.ROLE_TAG),
            "sha256": m.tags.get(models.SHA_TAG), "weights": m.tags.get("edgepack.weights"),
            "weights_sha256": m.tags.get("edgepack.weights_sha256"), "run": None, "datasets": [], "inputs": []}
    if not m.source_run_id or model_id in seen or depth >= MAX_DEPTH:
        return node
    seen.add(model_id)
    run = store.get_run(m.source_run_id)
    node["run"] = {"run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status}
    runs = [run]
    parent = run.data.tags.get("mlflow.parentRunId")
    if parent and run.data.tags.get("edgepack.level") == "artifact":  # its data may sit on its stage run
        runs.append(store.get_run(parent))
    for r in runs:
        for d in r.inputs.dataset_inputs:
            entry = {"name": d.dataset.name, "digest": {t.key: t.value for t in d.tags}.get("edgepack.sha256",
                                                                                          d.dataset.digest),
                     "context": {t.key: t.value for t in d.tags}.get("mlflow.data.context"),
                     "source": json.loads(d.dataset.source or "{}").get("uri")}
            if entry not in node["datasets"]:
                node["datasets"].append(entry)
    inputs = [i.model_id for i in run.inputs.model_inputs] or (
        [i.model_id for i in runs[-1].inputs.model_inputs] if len(runs) > 1 else [])
    node["inputs"] = [walk(store, i, depth + 1, seen) for i in dict.fromkeys(inputs) if i != model_id]
    return node


def offline(path: Path) -> dict:
    """The chain from the files alone: a run folder's stages, or a compile folder's report."""
    folder = path if path.is_dir() else path.parent
    while not (folder / "report.json").is_file() and folder != folder.parent:
        folder = folder.parent
    if not (folder / "report.json").is_file():
        raise EdgepackError(f"{path}: no report.json in it or above it (not an edgepack output)")
    report = json.loads((folder / "report.json").read_text())
    if report.get("command") == "compile":
        return _compile_node(folder, report)
    if report.get("command") != "run":
        raise EdgepackError(f"{folder}/report.json is a {report.get('command')} report: no lineage in it")
    node = None
    for stage in sorted(p for p in folder.iterdir() if (p / "stage.json").is_file()):
        record = json.loads((stage / "stage.json").read_text())
        files = record.get("files") or {}
        if (stage / "report.json").is_file():
            step = _compile_node(stage, json.loads((stage / "report.json").read_text()))
        else:
            step = {"name": f"{stage.name} ({record['rows'][-1]['model'] if record.get('rows') else record['kind']})",
                    "sha256": files.get("model.onnx"), "files": files, "inputs": [], "datasets": []}
        step["inputs"] = [node] if node is not None else []
        node = step
    return node or {"name": report.get("recipe"), "inputs": []}


def _compile_node(folder: Path, r: dict) -> dict:
    shipped = r["artifacts"][r["selected"]["index"]]
    data = [{"context": "calibration", "name": r.get("data", {}).get("source")}]
    if r.get("accuracy"):
        data.append({"context": "evaluation", "name": r["accuracy"].get("data")})
    return {"name": f"{folder.name}: {shipped['backend']} {shipped['precision']} ({shipped['path']})",
            "sha256": shipped["sha256"], "datasets": data,
            "inputs": [{"name": f"source {r['source']['name']}", "sha256": r["source"]["sha256"], "inputs": [],
                        "datasets": []}]}


def lines(node: dict, depth: int = 0) -> list[str]:
    pad = "  " * depth
    head = f"{pad}{'<- ' if depth else ''}{node.get('name')}"
    if node.get("model_id"):
        head += f"  [{node['model_id']}]"
    if node.get("sha256"):
        head += f"  sha256 {node['sha256'][:12]}"
    if node.get("run"):
        head += f"  (run {node['run']['name']}, {node['run']['run_id'][:8]})"
    out = [head]
    if node.get("weights"):
        out.append(f"{pad}   weights: {node['weights']} sha256 {str(node.get('weights_sha256'))[:12]}")
    for d in node.get("datasets") or []:
        digest = f" sha256 {str(d['digest'])[:12]}" if d.get("digest") else ""
        out.append(f"{pad}   data ({d.get('context')}): {d.get('name')}{digest}")
    for child in node.get("inputs") or []:
        out += lines(child, depth + 1)
    return out


def cmd_show(args) -> int:
    path = Path(args.target)
    if args.offline or path.is_dir():
        tree = offline(path)
    else:
        from edgepack.tracking.store import Store

        try:
            store = Store(args.tracking_uri, create=False)
            tree = walk(store, resolve(store, args.target))
        except EdgepackError:
            if not path.is_file():
                raise
            tree = offline(path)  # an artifact never tracked: its folder's reports still tell
    if args.json:
        print(json.dumps(tree, indent=2))
    else:
        print("\n".join(lines(tree)))
    return 0
