"""Recipe searches: a real MNIST flow per trial (tiny: 300 digits, one epoch), the knobs written
into the recipe, the shared teacher trained once, a rerun reading every trial back, and a bad
knob path refused in one line before anything trains.

Compile timing verdicts are pinned (helpers.PinnedLatency): what ships must not depend on load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, PinnedLatency, run_cli

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, mnist_flow_splits) -> dict:
    """A small flow: a width-8 teacher trained for one epoch, the demo's student (its width a
    factory argument), distilled for one epoch, emitted for ONNX Runtime."""
    from edgepack.data import save_npz
    from edgepack.models import mnist_cnn

    folder = tmp_path_factory.mktemp("search-recipe")
    sizes = {"train": 300, "val": 100, "test": 200}
    for (name, n), (x, y) in zip(sizes.items(), mnist_flow_splits):
        save_npz(folder / f"{name}.npz", {"input": x[:n]}, y[:n])
    nets = Path(mnist_cnn.__file__)
    return {"name": "tiny", "target": "x86-vnni",
            "teacher": {"model": f"{nets}:MnistCNN", "args": {"width": 8}, "train": {"epochs": 1, "lr": 5e-3}},
            "student": {"model": f"{nets}:MnistStudent"},
            "data": {k: str(folder / f"{k}.npz") for k in sizes},
            "measure": {"runs": 5, "warmup": 1, "threads": 1},
            "stages": [{"distill": {"epochs": 1, "lr": 5e-3}}, {"emit": {"backends": ["onnxruntime"]}}]}


def _spec(recipe, knobs, **over):
    from edgepack.search import SearchSpec

    return SearchSpec.model_validate({"name": "tiny", "recipe": recipe, "targets": ["x86-vnni"],
                                      "space": {"recipe": knobs}, "trials": 2, "repeats": 2} | over)


def test_recipe_search_runs_each_point_and_trains_the_shared_teacher_once(tmp_path, recipe):
    from edgepack.search import search

    spec = _spec(recipe, {"student.args.width": [4, 8], "distill.temperature": [2.0]})
    res = search(spec, tmp_path / "out", timing=PinnedLatency())[0]
    assert sorted(r.point["student.args.width"] for r in res.rows) == [4, 8]
    assert all(r.fig.status == "built" for r in res.rows), [r.fig.error for r in res.rows]
    by_width = {r.point["student.args.width"]: r.fig for r in res.rows}
    # the width reached the student: half the width, about a quarter of the convolution weights
    assert by_width[4].values["params"] < 0.5 * by_width[8].values["params"]
    assert all({"accuracy", "drop", "p50_ms", "size_mb", "macs"} <= set(f.values) for f in by_width.values())
    assert sorted(f.stages["teacher"] for f in by_width.values()) == ["computed", "reused"]
    teachers = [p for p in (tmp_path / "out" / "stages").glob("*/stage.json")
                if json.loads(p.read_text())["kind"] == "teacher"]
    assert len(teachers) == 1
    for r in res.rows:  # each trial's flow ran with the knob values written into its recipe
        stages = json.loads(Path(r.fig.report).read_text())["stages"]
        assert [s["kind"] for s in stages] == ["distill", "emit"]
        assert stages[0]["details"]["settings"]["temperature"] == 2.0
    assert res.feasible and "student.args.width" in (tmp_path / "out" / "x86-vnni" / "pareto.md").read_text()

    again = search(spec, tmp_path / "out", timing=PinnedLatency())[0]  # resumed: nothing is run again
    assert len(again.rows) == 2 and all(r.fig.cached or r.number < 2 for r in again.rows)
    assert [r.fig.values for r in again.rows] == [r.fig.values for r in res.rows]


def test_a_killed_recipe_search_resumes_without_redoing_a_finished_trial(tmp_path, recipe):
    """SIGTERM once the first trial is told to the study and the second is running: the resumed
    search reads the first back (its figures and the shared teacher untouched), computes the
    killed trial's point again (Optuna's own requeue skipped it: the failed trial holds the same
    params), and the study holds each point once."""
    import optuna

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    spec = {"name": "tiny", "recipe": "r.yaml", "targets": ["x86-vnni"], "trials": 2, "repeats": 1,
            "space": {"recipe": {"student.args.width": [4, 8]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edgepack", "search", "s.yaml", "-o", str(out)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    # the second trial's folder exists only after the first was told (a recipe search's first runs alone)
    while len(list(out.glob("trials/*"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    finished = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/figures.json")}
    stages = {p: p.stat().st_mtime_ns for p in out.glob("stages/*/stage.json")}
    assert len(finished) == 1 and stages, (finished, stages)

    again = run_cli("search", "s.yaml", "-o", out, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    for path, mtime in (finished | stages).items():  # read back, never recomputed or rewritten
        assert path.stat().st_mtime_ns == mtime, path
    target = json.loads((out / "search.json").read_text())["targets"][0]
    computed = [r for r in target["trials"] if not r["cached"]]  # a repeat proposal is a cached trial
    assert sorted(r["point"]["student.args.width"] for r in computed) == [4, 8]
    assert all(r["status"] == "built" for r in target["trials"]), [r["error"] for r in target["trials"]]
    resumed = next(r for r in computed if Path(r["report"]).parent.parent / "figures.json" not in finished)
    assert resumed["stages"]["teacher"] == "reused"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    study = optuna.load_study(study_name="tiny-x86-vnni", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
            and not t.user_attrs["figures"].get("cached")]
    assert len(done) == 2 and len({t.params["student.args.width"] for t in done}) == 2
    killed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    # the killed trial's point was queued again and computed by the resumed search
    assert [t.user_attrs.get("requeued_from") for t in done] == [None, killed[0].number]
    assert len(list(out.glob("trials/*/figures.json"))) == 2 and not list(out.rglob("*.staging*"))


@pytest.mark.parametrize("knob, expected", [
    ("student.args.widht", "takes no argument 'widht' (did you mean: width?)"),
    ("distil.temperature", "the recipe has no 'distil' (did you mean: distill?)"),
    ("distill.temprature", "distill has no setting 'temprature' (did you mean: temperature?)"),
    ("prune.ratio", "the recipe has no 'prune'"),
])
def test_a_bad_knob_path_is_one_line_before_any_trial(tmp_path, recipe, knob, expected):
    from edgepack.errors import EdgepackError
    from edgepack.search import search

    with pytest.raises(EdgepackError) as e:
        search(_spec(recipe, {knob: [2, 4]}), tmp_path / "out")
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_a_bad_knob_value_and_the_cli_are_one_line(tmp_path, recipe, capsys):
    from edgepack.cli import main

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    spec = {"recipe": "r.yaml", "targets": ["x86-vnni"], "space": {"recipe": {"distill.temperature": [2, "hot"]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["search", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'distill.temperature' = 'hot'" in err


def test_model_args_build_the_factory_with_them(recipe):
    from edgepack.errors import EdgepackError
    from edgepack.models.mnist_cnn import MnistStudent
    from edgepack.pipeline.engine import _build
    from edgepack.pipeline.recipe import load_recipe

    r = load_recipe(recipe | {"student": {"model": recipe["student"]["model"], "args": {"width": 4}}})
    student = _build(r, r.student)
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in MnistStudent(4).parameters())
    built = load_recipe(recipe | {"student": {"model": MnistStudent(4), "args": {"width": 4}}})
    with pytest.raises(EdgepackError, match="only a file.py:factory or callable model takes arguments"):
        _build(built, built.student)


def test_recipe_knobs_are_suggested_and_written_at_their_paths(recipe):
    """Lists are categorical; a range of integers suggests integers, of floats floats on its step."""
    import optuna

    from edgepack.search import recipe as recipes
    from edgepack.search import study as studies
    from edgepack.search.spec import Space

    space = Space(recipe={"student.args.width": [4, 8], "distill.epochs": {"low": 1, "high": 3},
                          "distill.temperature": {"low": 1.0, "high": 2.0, "step": 0.5}})
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    points = [studies.ask(study, space)[1] for _ in range(8)]
    assert {p["student.args.width"] for p in points} <= {4, 8}
    assert all(isinstance(p["distill.epochs"], int) and 1 <= p["distill.epochs"] <= 3 for p in points)
    assert {p["distill.temperature"] for p in points} <= {1.0, 1.5, 2.0}
    applied = recipes.apply(recipes.load(recipe), points[0])
    assert applied["student"]["args"] == {"width": points[0]["student.args.width"]}
    assert applied["stages"][0]["distill"]["temperature"] == points[0]["distill.temperature"]
    assert recipe["stages"][0]["distill"] == {"epochs": 1, "lr": 5e-3}  # the spec's recipe is untouched


def test_reproduce_reruns_a_recipe_search_chosen_point_with_every_stage(tmp_path, recipe, monkeypatch):
    """Tracked: `edgepack reproduce` on the search's run reruns the chosen point's whole flow
    (teacher trained again, no shared stage cache) and finds every model and artifact hash equal."""
    monkeypatch.delenv("EDGEPACK_NO_TRACK", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    spec = {"name": "tiny", "recipe": "r.yaml", "targets": ["x86-vnni"], "trials": 2, "repeats": 1,
            "space": {"recipe": {"student.args.width": [4, 8]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    r = run_cli("search", "s.yaml", "-o", "out", "--no-progress", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    listed = json.loads(run_cli("runs", "list", "--json", cwd=tmp_path).stdout)
    (parent,) = [x for x in listed if x["command"] == "search"]
    r = run_cli("reproduce", parent["run_id"], "-o", "again", "--json", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    items = {i["item"]: i for i in json.loads(r.stdout)["items"]}
    for item in ("teacher.model sha256", "distill.model sha256", "onnxruntime artifact sha256", "emit.accuracy"):
        assert items[item]["match"], items[item]
    chosen = json.loads((tmp_path / "out" / "search.json").read_text())["targets"][0]["chosen"]
    stages = json.loads((tmp_path / "again" / "report.json").read_text())["stages"]
    assert [s["kind"] for s in stages] == ["distill", "emit"]
    assert (tmp_path / "again" / "00-teacher" / "stage.json").is_file()  # trained in the rerun's own folder
    assert items["distill.params"]["recorded"] == chosen["values"]["params"]
