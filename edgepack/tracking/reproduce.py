"""`edgepack reproduce RUN_ID`: run a recorded compile, profile or recipe again, compare.

The run's stored request (the command line, the API's keyword arguments, or the recipe with
its paths made absolute) is run again into a new folder, untracked, from the directory it was
first run in; then every hash (source, stage models, artifacts) and metric the run recorded is
set beside the new one: hashes must be equal, accuracy and fidelity within `--tolerance`,
sizes, params and MACs equal, latency within `--latency-tolerance` (relative: timing on a
shared machine is noise, reported rather than trusted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from edgepack.errors import EdgepackError
from edgepack.tracking import models
from edgepack.tracking.record import COMMAND, LEVEL, PARENT
from edgepack.tracking.runs import find_run
from edgepack.tracking.store import Store

EXACT = ("size_bytes", "params", "macs")
CLOSE = ("accuracy", "accuracy_drop", "fidelity_cosine", "fidelity_agreement")
TIMED = ("p50_ms",)


def stored_request(store: Store, run) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = store.download_artifacts(run.info.run_id, "edgepack/request.json", tmp)
        except Exception:
            raise EdgepackError(f"run {run.info.run_id[:8]} has no stored request (not an edgepack parent run?)") from None
        return json.loads(Path(path).read_text())


def _without_output(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("-o", "--output"):
            skip = True
        elif not a.startswith(("--output=", "--tracking-uri=")) and a != "--no-track":
            out.append(a)
    return out


def rerun(req: dict, outdir: Path) -> Path:
    """Run the request again into `outdir`; returns its report.json."""
    cwd = req.get("cwd") or "."
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if req.get("recipe") is not None:
        recipe = outdir.parent / f"{outdir.name}.recipe.json"
        recipe.write_text(json.dumps(req["recipe"]))
        argv = ["run", str(recipe), "-o", str(outdir)]
    elif req.get("argv"):
        argv = [*_without_output(req["argv"]), "-o", str(outdir)]
    elif req.get("request") is not None:
        call = {**req["request"], "output_dir": str(outdir), "force": False, "progress": False, "track": False}
        code = f"import edgepack, json, sys; edgepack.{req['command']}(**json.loads(sys.argv[1]))"
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(call)], cwd=cwd, env=env, text=True,
                              capture_output=True)
        return _report(proc, outdir)
    else:
        raise EdgepackError("the run stored neither a command line, a request nor a recipe: nothing to rerun")
    proc = subprocess.run([sys.executable, "-m", "edgepack", *argv, "--no-track", "--no-progress"], cwd=cwd,
                          env=env, text=True, capture_output=True)
    return _report(proc, outdir)


def _report(proc, outdir: Path) -> Path:
    path = outdir / "report.json"
    if not path.is_file():
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise EdgepackError(f"the rerun failed (exit {proc.returncode}): {last}")
    return path


def recorded(store: Store, run) -> dict[str, object]:
    """What the run recorded, by item name: stage and artifact metrics and model hashes."""
    out = {}
    children = store.search_runs([store.experiment_id], filter_string=f"tags.`{PARENT}` = '{run.info.run_id}'")
    for child in children:
        kind = child.data.tags.get(LEVEL)
        if kind == "artifact":
            _artifact_items(out, child)
        elif kind == "stage":
            stage = child.data.tags.get("edgepack.stage")
            prefix = "stage." if stage == "emit" else ""  # emit's own metrics are its compile's; the row's are stage.*
            for k in (*EXACT, *CLOSE, *TIMED):
                if prefix + k in child.data.metrics:
                    out[f"{stage}.{k}"] = child.data.metrics[prefix + k]
            outs = store.get_run(child.info.run_id).outputs
            if stage != "emit" and outs and outs.model_outputs:
                m = store.get_logged_model(outs.model_outputs[0].model_id)
                out[f"{stage}.model sha256"] = m.tags.get(models.SHA_TAG)
            for grandchild in store.search_runs([store.experiment_id],
                                                filter_string=f"tags.`{PARENT}` = '{child.info.run_id}'"):
                _artifact_items(out, grandchild)
    if "source_sha256" in run.data.params:
        out["source sha256"] = run.data.params["source_sha256"]
    return out


def _artifact_items(out: dict, run) -> None:
    backend = run.data.params.get("backend", "artifact")
    if "sha256" in run.data.params:
        out[f"{backend} artifact sha256"] = run.data.params["sha256"]
    for k in (*EXACT, *CLOSE, *TIMED):
        if k in run.data.metrics:
            out[f"{backend}.{k}"] = run.data.metrics[k]


def fresh(report_path: Path) -> dict[str, object]:
    """The same items, from the rerun's reports."""
    r, out = json.loads(report_path.read_text()), {}
    if r["command"] == "run":
        for row in r["rows"]:
            if row.get("model") in ("no teacher",):
                continue
            stage = row["stage"]
            for k in (*EXACT, "accuracy", "p50_ms"):
                if row.get(k) is not None:
                    out[f"{stage}.{k}"] = row[k]
            if row.get("drop") is not None:
                out[f"{stage}.accuracy_drop"] = row["drop"]
        for stage in sorted(report_path.parent.iterdir()):
            record = stage / "stage.json"
            if record.is_file():
                data = json.loads(record.read_text())
                if "model.onnx" in (data.get("files") or {}):
                    out[f"{data['kind']}.model sha256"] = data["files"]["model.onnx"]
                if (stage / "report.json").is_file():
                    out.update(fresh(stage / "report.json"))
        return out
    if r["command"] == "compile":
        out["source sha256"] = r["source"]["sha256"]
    for a in r["artifacts"]:
        b = a["backend"]
        out[f"{b} artifact sha256"] = a["sha256"]
        out[f"{b}.size_bytes"] = a["size_bytes"]
        for k in ("accuracy", "accuracy_drop"):
            if a.get(k) is not None:
                out[f"{b}.{k}"] = a[k]
        if a.get("fidelity"):
            out[f"{b}.fidelity_cosine"] = a["fidelity"]["cosine"]
            if a["fidelity"].get("agreement") is not None:
                out[f"{b}.fidelity_agreement"] = a["fidelity"]["agreement"]
        if a.get("latency_ms"):
            out[f"{b}.p50_ms"] = a["latency_ms"]["p50"]
    return out


def judge(key: str, old, new, tol: float, lat_tol: float) -> bool:
    if old is None or new is None:
        return False
    metric = key.rsplit(".", 1)[-1]
    if metric in CLOSE:
        return abs(float(old) - float(new)) <= tol + 1e-12
    if metric in TIMED:
        return abs(float(new) - float(old)) <= lat_tol * abs(float(old)) + 1e-9
    if metric in EXACT:
        return float(old) == float(new)
    return old == new


def compare(before: dict, after: dict, tol: float, lat_tol: float) -> list[dict]:
    rows = []
    for key in sorted(before):
        rows.append({"item": key, "recorded": before[key], "reproduced": after.get(key),
                     "match": judge(key, before[key], after.get(key), tol, lat_tol)})
    return rows


def cmd_reproduce(args) -> int:
    store = Store(args.tracking_uri, create=False)
    run = find_run(store, args.run_id)
    if run.data.tags.get(COMMAND) == "search":  # a search's run or one of its trials: a point is rerun
        from edgepack.tracking.reproduce_search import reproduce_search

        return reproduce_search(store, run, args)
    if run.data.tags.get(PARENT):
        raise EdgepackError(f"run {args.run_id} is a stage of run {run.data.tags[PARENT][:8]}: reproduce that one")
    req = stored_request(store, run)
    outdir = output_dir(args, run)
    print(f"edgepack: rerunning {run.info.run_name} ({run.info.run_id[:8]}) into {outdir}", file=sys.stderr)
    rows = compare(recorded(store, run), fresh(rerun(req, outdir)), args.tolerance, args.latency_tolerance)
    return verdict(args, run, outdir, rows)


def output_dir(args, run) -> Path:
    """The rerun's folder: -o, or a new one under edgepack-out/; never an existing one."""
    outdir = Path(args.output or Path("edgepack-out") / f"reproduce-{run.info.run_id[:8]}-{time.strftime('%Y%m%d-%H%M%S')}")
    outdir = outdir.resolve()
    if outdir.exists():
        raise EdgepackError(f"{outdir} already exists: -o another folder")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    return outdir


def verdict(args, run, outdir: Path, rows: list[dict]) -> int:
    """Show the comparison (table or --json); 0 when every hash and untimed figure matches, else 4."""
    same = sum(r["match"] for r in rows)
    if args.json:
        print(json.dumps({"run_id": run.info.run_id, "output_dir": str(outdir), "items": rows,
                          "matched": same, "total": len(rows)}, indent=2, default=str))
    else:
        _table(rows, run, same)
    hashes = [r for r in rows if "sha256" in r["item"]]
    return 0 if all(r["match"] for r in rows if not r["item"].endswith(TIMED)) or not hashes and not rows else 4


def _table(rows: list[dict], run, same: int) -> None:
    from edgepack.views import out

    t = Table(title=f"reproduce {run.info.run_name} ({run.info.run_id[:8]}): {same} of {len(rows)} match")
    for c in ("item", "recorded", "reproduced", "match"):
        t.add_column(c)
    for r in rows:
        fmt = (lambda v: str(v)[:16] if isinstance(v, str) else f"{v:.6g}" if isinstance(v, float) else str(v))
        t.add_row(r["item"], fmt(r["recorded"]), fmt(r["reproduced"]), "yes" if r["match"] else "NO")
    out.print(t)
