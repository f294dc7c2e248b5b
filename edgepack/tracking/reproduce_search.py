"""`edgepack reproduce` on a search's runs: a point is rerun, not the search.

Rerunning a whole search proves little (the sampler's path, the timing noise); what a user acts
on is a point. On the search's run, the point it chose for each target is rerun (the chosen
point's tag names it; the spec is in the run's request); on a trial run, that trial's point (its
own request: spec, target, point). Each rerun is a compile of the point (a recipe search's: the
recipe's whole flow with the point's knobs, every stage computed again) into a new folder, and
is compared with the report the point's trial run stored, as a compile run is compared: hashes
equal, accuracy and fidelity within tolerance, latency reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edgepack.errors import EdgepackError
from edgepack.fsutil import slug
from edgepack.tracking.record import LEVEL, PARENT, metric_name
from edgepack.tracking.reproduce import _report, compare, fresh, output_dir, stored_request, verdict
from edgepack.tracking.search import TRIAL_KEY


def reproduce_search(store, run, args) -> int:
    """Rerun the chosen point(s) of a search run, or the point of a trial run; compare."""
    plans, spec, cwd = _plans(store, run)
    outdir = output_dir(args, run)
    rows = []
    for target, point, child in plans:
        folder = outdir / slug(target) if len(plans) > 1 else outdir
        print(f"edgepack: rerunning trial {child.data.tags.get('edgepack.trial')} [{target}] {json.dumps(point)} "
              f"of {run.info.run_name} ({run.info.run_id[:8]}) into {folder}", file=sys.stderr)
        before = _recorded_point(store, child)
        after = fresh(_rerun_point(spec, cwd, target, point, folder))
        prefix = f"{target}: " if len(plans) > 1 else ""
        rows += [r | {"item": prefix + r["item"]}
                 for r in compare(before, after, args.tolerance, args.latency_tolerance)]
    return verdict(args, run, outdir, rows)


def _plans(store, run) -> tuple[list[tuple[str, dict, object]], dict, str]:
    """[(target, point, its trial run)], the spec and the directory the search ran in."""
    if run.data.tags.get(LEVEL) == "trial":
        req = _trial_request(store, run)
        return [(req["target"], req["point"], run)], req["spec"], req.get("cwd") or "."
    req = stored_request(store, run)
    spec, name = (req.get("search") or {}).get("spec"), run.info.run_id[:8]
    if not spec:
        raise EdgepackError(f"search run {name} stored no spec: nothing to rerun")
    plans = []
    for target in _targets(spec):
        chosen = run.data.tags.get(f"edgepack.chosen_point.{metric_name(target)}")
        if chosen:
            point = json.loads(chosen)
            plans.append((target, point, _trial_run(store, run, target, point)))
    if not plans:
        raise EdgepackError(f"search run {name} chose no point (none met the constraints, or the search did not "
                            "finish): reproduce one of its trial runs (edgepack runs list --all)")
    return plans, spec, req.get("cwd") or "."


def _targets(spec: dict) -> list[str]:
    from edgepack.search.point import stored_spec

    return [t.name for t in stored_spec(spec).target_list()]


def _trial_request(store, run) -> dict:
    """A trial run's request; a trial recorded before trials stored theirs is refused in one line."""
    try:
        req = stored_request(store, run)
    except EdgepackError:
        req = {}
    if not req.get("spec") or req.get("point") is None or not req.get("target"):
        raise EdgepackError(f"trial run {run.info.run_id[:8]} did not store its point (recorded by an older "
                            f"edgepack): reproduce its search run {run.data.tags.get(PARENT, '')[:8]}")
    return req


def _trial_run(store, parent, target: str, point: dict):
    """The trial run that recorded `point` of `target` under the search run `parent`."""
    try:
        from edgepack.search.run import point_key
    except ModuleNotFoundError as e:
        raise EdgepackError(f"reproducing a search needs {e.name}: pip install 'edgepack[search]'") from None
    key = point_key(target, point)
    found = store.search_runs([store.experiment_id], max_results=1,
                              filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}' and tags.`{TRIAL_KEY}` = '{key}'")
    if not found:
        raise EdgepackError(f"search run {parent.info.run_id[:8]} has no trial run of its chosen point for {target} "
                            "(tracking stopped before it was recorded): nothing to compare a rerun with")
    return found[0]


def _recorded_point(store, child) -> dict:
    """What the point's trial run recorded: the items of its stored report (and, for a recipe
    trial, of its stage records beside it)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(store.download_artifacts(child.info.run_id, "edgepack", tmp))
        except Exception:
            folder = Path(tmp) / "none"
        if not (folder / "report.json").is_file():
            raise EdgepackError(f"trial run {child.info.run_id[:8]} stored no report (its point was not built): "
                                "nothing to compare a rerun with")
        return fresh(folder / "report.json")


def _rerun_point(spec: dict, cwd: str, target: str, point: dict, outdir: Path) -> Path:
    """The point run again in a process of its own, from the directory the search ran in."""
    if not Path(cwd).is_dir():
        raise EdgepackError(f"the search ran in {cwd}, which no longer exists: its relative paths cannot be resolved")
    call = {"spec": spec, "target": target, "point": point, "output_dir": str(outdir)}
    proc = subprocess.run([sys.executable, "-m", "edgepack.search.point", json.dumps(call)], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return _report(proc, outdir)
