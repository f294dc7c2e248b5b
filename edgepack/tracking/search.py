"""A search in tracking: one parent run per search, one child run per trial under it.

The search is identified by its output folder and spec (`search.key`, a tag on the parent): a
resumed search finds its run again and reopens it instead of starting another, so one search
is one run however often it was interrupted. The search tells every finished trial again when
it resumes (one it finished while the recorder was not listening would otherwise be missing);
each child run carries `edgepack.trial_key` (the target and a digest of the point), and a point
whose key is already under the parent is not recorded twice: a child run per distinct point
(the sampler proposing a known point again is a cached trial in the study, not a new run).
Two processes resuming the same search at once (two recorders, each with its own view of what
is recorded) find or make the search's run, and check and record each point, under one lock
per search and store, checking the store again inside it: the second finds the first's run.

Everything is read from the events and the files the search wrote (search.json, pareto.md/png,
each trial's report.json), the same ones a user reads.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from edgepack.tracking.record import COMMAND, LEVEL, PARENT, flat, metric_name

SEARCH_KEY = "edgepack.search_key"
TRIAL_KEY = "edgepack.trial_key"
TAG_MAX = 5000
# run settings a resume may change (MLflow params cannot): tags, not params
MUTABLE = ("trials", "workers")


@contextmanager
def search_lock(rec, search_key: str):
    """Held while finding or making the search's run and while checking and recording a point:
    one lock file per search beside the store's recorder slots (this machine's processes that
    write to this store; flock, so a killed holder releases it)."""
    from edgepack.fsutil import file_lock
    from edgepack.tracking import _slot_dir

    with file_lock(_slot_dir(rec.s.uri) / f"search-{search_key[:64]}.lock"):
        yield


def open_parent(rec, m: dict, tags: dict) -> str:
    """The search's run: the one an earlier run of this search made, reopened, else a new one
    with the spec as params (under the search's lock: two processes starting it at once make one)."""
    rec.search_key = m["search"]["key"]
    with search_lock(rec, rec.search_key):
        return _open_parent(rec, m, tags)


def _open_parent(rec, m: dict, tags: dict) -> str:
    info = m["search"]
    found = rec.s.search_runs([rec.s.experiment_id], filter_string=f"tags.`{SEARCH_KEY}` = '{info['key']}'",
                              max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        run_id = found[0].info.run_id
        rec.s.update_run(run_id, status="RUNNING")
        rec.open.append(run_id)
        rec.recorded = recorded(rec, run_id)
    else:
        run_id = rec.run(m.get("name") or "search", {**tags, SEARCH_KEY: info["key"]})
        spec = {k: v for k, v in (info.get("spec") or {}).items() if k not in MUTABLE}
        rec.log(run_id, params=flat(spec))
    rec.s.log_dict(run_id, info.get("spec") or {}, "edgepack/search-spec.json")
    rec.log(run_id, tags={"edgepack.trials_requested": info.get("trials"),
                          "edgepack.output_dir": info.get("output_dir", "")})
    return run_id


def recorded(rec, parent: str) -> set[str]:
    """The trial keys already recorded under `parent`."""
    keys, token = set(), None
    while True:
        page = rec.s.search_runs([rec.s.experiment_id], filter_string=f"tags.`{PARENT}` = '{parent}'",
                                 max_results=1000, page_token=token)
        keys |= {r.data.tags[TRIAL_KEY] for r in page if TRIAL_KEY in r.data.tags}
        token = page.token
        if not token:
            return keys


def log_trial(rec, data: dict) -> None:
    """One point's trial as a child run: params = the point's knobs, metrics = its figures (and their
    95% intervals), tags = its verdict; its compile report as an artifact where it has one."""
    key = str(data["key"])
    if key in rec.recorded:
        return
    with search_lock(rec, rec.search_key or rec.parent):
        if _under_parent(rec, key):  # another process of this search recorded it meanwhile
            rec.recorded.add(key)
            return
        _log_trial(rec, data, key)
    rec.recorded.add(key)


def _under_parent(rec, key: str) -> bool:
    found = rec.s.search_runs([rec.s.experiment_id], max_results=1,
                              filter_string=f"tags.`{PARENT}` = '{rec.parent}' and tags.`{TRIAL_KEY}` = '{key}'")
    return bool(found)


def _log_trial(rec, data: dict, key: str) -> None:
    """The child run itself (its key tag set as it is made: a point half-recorded by a killed
    recorder is still found, never recorded twice)."""
    tags = {LEVEL: "trial", COMMAND: "search", TRIAL_KEY: key, "edgepack.trial": data.get("trial"),
            "edgepack.target": data.get("target"), "edgepack.feasible": data.get("feasible"),
            "edgepack.cached": data.get("cached"), "edgepack.status": data.get("status"),
            "edgepack.misses": json.dumps(data.get("misses") or {}, sort_keys=True)}
    for extra in ("device", "device_skipped"):
        if data.get(extra):
            tags[f"edgepack.{extra}"] = str(data[extra])[:TAG_MAX]
    run_id = rec.run(f"trial {data.get('trial')} {data.get('target')}", {k: str(v) for k, v in tags.items()},
                     rec.parent)
    values = data.get("values") or {}
    metrics = {metric_name(k): float(v) for k, v in values.items() if _number(v)}
    if "p50_ms" in values:
        metrics["p50_ci95_ms"] = float(data.get("ci95_ms") or 0.0)
    if "host_p50_ms" in values:
        metrics["host_p50_ci95_ms"] = float(data.get("host_ci95_ms") or 0.0)
    rec.log(run_id, params=data.get("params") or {}, metrics=metrics)
    info = rec.start.get("search") or {}
    rec.s.log_dict(run_id, {"command": "search", "cwd": rec.start.get("cwd"), "spec": info.get("spec"),
                            "target": data.get("target"), "point": data.get("params"), "trial": data.get("trial"),
                            "key": key}, "edgepack/request.json")  # what `edgepack reproduce` reruns
    report = data.get("report")
    if report and rec._path(report).is_file():
        _log_report(rec, run_id, rec._path(report))
    rec.close(run_id)


def _log_report(rec, run_id: str, report: Path) -> None:
    """The trial's report; for a recipe trial also each stage's record (stage.json, and the emit
    stage's compile report) in its folder's name beside it, as the flow's folder holds them: the
    model and artifact hashes `edgepack reproduce` compares a rerun with."""
    rec.s.log_artifact(run_id, str(report), "edgepack")
    if json.loads(report.read_text()).get("command") != "run":
        return
    for stage in sorted(p for p in report.parent.iterdir() if (p / "stage.json").is_file()):
        for name in ("stage.json", "report.json"):
            if (stage / name).is_file():
                rec.s.log_artifact(run_id, str(stage / name), f"edgepack/{stage.name}")


def log_result(rec, data: dict) -> None:
    """The search's outcome on its run: per target the chosen point (tags, `chosen.*` metrics,
    its report), the front (trial numbers, size), pareto.md and pareto.png; and search.json."""
    path = rec._path(data["path"])
    targets = json.loads(path.read_text()).get("targets") or []
    rec.s.log_artifact(rec.parent, str(path), "search")
    metrics, tags = {}, {}
    for t in targets:
        name = metric_name(str(t["target"]))
        prefix = "" if len(targets) == 1 else f"{name}."
        metrics[f"{prefix}front_size"] = float(len(t.get("front") or []))
        metrics[f"{prefix}trials"] = float(len(t.get("trials") or []))
        tags[f"edgepack.front.{name}"] = json.dumps([r["trial"] for r in t.get("front") or []])
        tags[f"edgepack.feasible.{name}"] = t.get("feasible")
        chosen = t.get("chosen")
        if chosen:
            metrics.update({f"{prefix}chosen.{metric_name(k)}": float(v) for k, v in chosen["values"].items()
                            if _number(v)})
            tags.update({f"edgepack.chosen.{name}": chosen["trial"], f"edgepack.chosen_reason.{name}": t.get("reason"),
                         f"edgepack.chosen_point.{name}": json.dumps(chosen["point"], sort_keys=True)})
        else:
            tags[f"edgepack.closest.{name}"] = json.dumps([r["trial"] for r in t.get("closest") or []])
        folder = (data.get("folders") or {}).get(t["target"])
        files = [Path(folder) / n for n in ("pareto.md", "pareto.png", "chosen/report.json")] if folder else []
        for f in files:
            if f.is_file():
                rec.s.log_artifact(rec.parent, str(f), f"search/{Path(folder).name}" +
                                   ("/chosen" if f.parent.name == "chosen" else ""))
    rec.log(rec.parent, metrics=metrics, tags={k: str(v)[:TAG_MAX] for k, v in tags.items()})


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
