"""`edgepack run RECIPE.yaml`: stages in order, gates, saved stages that survive failures, resume."""

from __future__ import annotations

import json

import pytest
import yaml

from edgepack.data import save_npz
from helpers import PinnedTiming, message_lines, run_cli

NETS = """
from edgepack.models.mnist_cnn import MnistCNN

def teacher():
    return MnistCNN(32)

def student():
    return MnistCNN(16)
"""


@pytest.fixture(scope="module")
def flow_dir(tmp_path_factory, mnist_flow_splits, mnist_teacher):
    """A recipe folder as a user would have it: nets.py, teacher weights, data as .npz."""
    d = tmp_path_factory.mktemp("flow")
    (d / "nets.py").write_text(NETS)
    (d / "teacher.pt").write_bytes(mnist_teacher[1].read_bytes())
    for name, (x, y) in zip(("train", "val", "test"), mnist_flow_splits):
        save_npz(d / f"{name}.npz", {"input": x}, y)
    return d


def _recipe(folder, stages, **extra) -> str:
    recipe = {"name": "mnist", "target": "x86-vnni", "teacher": {"model": "nets.py:teacher", "weights": "teacher.pt"},
              "student": {"model": "nets.py:student"},
              "data": {"train": "train.npz", "val": "val.npz", "test": "test.npz"},
              "measure": {"runs": 20, "warmup": 3}, "stages": stages, **extra}
    path = folder / f"recipe-{len(list(folder.glob('recipe-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


# Small on purpose (1,600 digits, a few epochs): this tests the flow, the demo measures the goals.
FULL = [{"distill": {"epochs": 3, "lr": 0.005, "baseline": True, "gate": {"max_drop": 0.25}}},
        {"prune": {"ratio": 0.5, "steps": 2, "finetune": {"epochs": 1, "lr": 0.003}, "gate": {"max_drop": 0.5}}},
        {"quantize": {"mode": "qat", "gate": {"max_drop": 0.5}}},
        # INT8 asked for: shipped whatever this machine's timing says (the auto rule has its own test)
        {"emit": {"backends": ["onnxruntime"], "precision": "int8", "gate": {"max_drop": 0.5, "max_size_mb": 1}}}]


@pytest.mark.slow
def test_full_flow_then_resume(flow_dir):
    recipe, out = _recipe(flow_dir, FULL), flow_dir / "run-full"
    r = run_cli("run", recipe, "-o", out, "--no-progress", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    rows = {(row["stage"], row["model"]): row for row in report["rows"]}
    teacher, final = report["rows"][0], report["rows"][-1]
    assert [row["stage"] for row in report["rows"]] == ["teacher", "distill", "distill", "prune", "quantize", "emit"]
    assert ("distill", "no teacher") in rows and ("emit", "onnxruntime int8") in rows
    # each stage shrinks what the next one gets; INT8 stores a quarter of the bytes
    assert rows[("prune", "pruned")]["macs"] < 0.6 * rows[("distill", "distilled")]["macs"] < 0.6 * teacher["macs"]
    assert final["macs"] == rows[("prune", "pruned")]["macs"]
    assert rows[("quantize", "int8 qat")]["size_bytes"] < 0.5 * rows[("prune", "pruned")]["size_bytes"]
    assert teacher["accuracy"] - final["accuracy"] <= 0.5 and final["drop"] == pytest.approx(
        teacher["accuracy"] - final["accuracy"])
    for i, kind in enumerate(["distill", "prune", "quantize", "emit"], 1):
        stage = json.loads((out / f"{i:02d}-{kind}" / "stage.json").read_text())
        assert stage["passed"] and stage["kind"] == kind
    assert (out / "02-prune" / "model.pt").is_file() and (out / "04-emit" / "report.json").is_file()
    assert "| teacher | teacher fp32 |" in (out / "report.md").read_text()

    # the QAT graph compiles as it is: already INT8, nothing to calibrate
    r = run_cli("compile", out / "03-quantize" / "model.onnx", "--target", "x86-vnni", "-o", flow_dir / "qat-out",
                "--runs", "5", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    compiled = json.loads(r.stdout)
    assert compiled["precision"] == "int8" and "already QDQ" in compiled["quantization"]["by"]

    # resume: every stage is unchanged, so nothing is retrained and the same rows come back
    again = run_cli("run", recipe, "-o", out, "--resume", "--no-progress", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("unchanged, reusing") == 5  # the teacher and four stages
    assert json.loads(again.stdout)["rows"] == report["rows"]


@pytest.mark.slow
def test_gate_stops_the_flow_and_keeps_earlier_stages(flow_dir):
    stages = [{"prune": {"ratio": 0.5, "steps": 1, "finetune": {"epochs": 0}, "max_drop": 1.0,
                         "gate": {"max_macs": 1000}}},
              {"emit": {}}]
    out = flow_dir / "run-gate"
    r = run_cli("run", _recipe(flow_dir, stages), "-o", out, "--no-progress")
    assert r.returncode == 3, r.stderr[-2000:]
    assert "stopped at prune" in r.stdout and "macs" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and report["stopped"]["stage"] == "prune"
    assert not (out / "02-emit").exists()
    # no student: the teacher itself was pruned
    assert report["rows"][-1]["macs"] < report["rows"][0]["macs"]
    # a folder from an earlier run is never replaced without --resume or --force
    r = run_cli("run", _recipe(flow_dir, stages), "-o", out, "--no-progress")
    assert r.returncode == 1 and "already exists" in r.stderr


def test_interrupted_stage_leaves_the_previous_one_intact(flow_dir, monkeypatch):
    from edgepack import api
    from edgepack.pipeline import stages

    stage_list = [{"prune": {"ratio": 0.25, "steps": 1, "finetune": {"epochs": 0}, "max_drop": 1.0}},
                  {"quantize": {"mode": "qat"}}]
    out = flow_dir / "run-interrupted"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "quantize_aware", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.run(_recipe(flow_dir, stage_list), output_dir=out, progress=False)
    saved = {p.name: p.read_bytes() for p in (out / "01-prune").iterdir()}
    assert {"model.onnx", "model.pt", "stage.json"} <= set(saved)
    # the run's marker, and no half-written 02-quantize (nor its .02-quantize.tmp-* staging folder)
    assert sorted(p.name for p in out.iterdir()) == [".edgepack.json", "00-teacher", "01-prune"]
    # resuming reuses the pruned stage byte for byte
    monkeypatch.undo()
    report = api.run(_recipe(flow_dir, stage_list), output_dir=out, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in (out / "01-prune").iterdir()} == saved
    assert report["rows"][-1]["model"] == "int8 qat"


@pytest.mark.parametrize("change, message", [
    ({"stages": [{"prune": {"ratoi": 0.5}}]}, "stages[0].prune: invalid stage settings: ratoi: unknown field (did you mean: ratio?)"),
    ({"stages": [{"emit": {}}, {"prune": {}}]}, "stages must run in the order distill -> prune -> quantize -> emit"),
    ({"stages": [{"distill": {}}], "student": None}, "a distill stage needs a `student`"),
    ({"stages": [{"squash": {}}]}, "stages[0]"),
    ({"teacher": {"model": "nets.py:teacher", "wieghts": "x"}}, "teacher.wieghts: unknown field (did you mean: weights?)"),
    ({"input_shape": [1, 1, 27, 27]}, "data.train: samples of shape [1, 28, 28] do not fit input_shape [1, 1, 27, 27]"),
])
def test_bad_recipe_is_one_line(flow_dir, change, message):
    recipe = yaml.safe_load(open(_recipe(flow_dir, [{"emit": {}}])))
    recipe.update(change)
    path = flow_dir / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = run_cli("run", path, "-o", flow_dir / "never")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(message_lines(r.stderr)) == 1 and message in r.stderr, r.stderr
    assert not (flow_dir / "never").exists()


@pytest.mark.slow
def test_ptq_stage_quantizes_the_teacher_within_its_gate(flow_dir):
    from edgepack import api

    stage_list = [{"quantize": {"mode": "ptq", "gate": {"max_drop": 0.02}}}]
    # the teacher runs in ~0.06 ms: INT8's lead is noise-sized, so the verdict is pinned
    report = api.run(_recipe(flow_dir, stage_list), output_dir=flow_dir / "run-ptq", progress=False,
                     timing=PinnedTiming(int8_ms=0.5))
    teacher, int8 = report["rows"]
    assert int8["model"] == "int8 ptq" and int8["drop"] <= 0.02
    assert int8["size_bytes"] < 0.5 * teacher["size_bytes"]  # INT8 weights
    details = report["stages"][0]["details"]
    assert details["precision"] == "int8" and details["met"]
    # the search's budget is what the gate leaves below the teacher: all of it, for the teacher itself
    assert details["max_drop"] == pytest.approx(0.02, abs=1e-9)


def test_ptq_stage_ships_fp32_when_int8_is_slower_and_says_so(flow_dir):
    from edgepack import api

    stage_list = [{"quantize": {"mode": "ptq", "gate": {"max_drop": 0.02}}}]
    report = api.run(_recipe(flow_dir, stage_list), output_dir=flow_dir / "run-ptq-fp32", progress=False,
                     timing=PinnedTiming(int8_ms=2.0))
    teacher, row = report["rows"]
    details = report["stages"][0]["details"]
    assert row["model"] == "fp32 ptq" and details["decision"] == "fp32" and "slower" in details["note"]
    assert row["size_bytes"] > 0.9 * teacher["size_bytes"] and row["drop"] == pytest.approx(0.0, abs=0.002)


@pytest.mark.slow
def test_emit_never_ships_int8_slower_than_the_float_graph_unless_asked(flow_dir):
    """QAT's INT8 graph, pinned slower than the float graph before it: emit ships the float one
    (with the timings as evidence); a recipe that asks for INT8 gets INT8 and the verdict's note."""
    from edgepack import api

    qat = {"quantize": {"mode": "qat", "epochs": 1, "gate": {"max_drop": 0.5}}}
    for precision, shipped in (("auto", "onnxruntime fp32"), ("int8", "onnxruntime int8")):
        emit = {"emit": {"backends": ["onnxruntime"], "precision": precision, "gate": {"max_drop": 0.5}}}
        out = flow_dir / f"run-emit-{precision}"
        report = api.run(_recipe(flow_dir, [qat, emit]), output_dir=out, progress=False,
                         timing=PinnedTiming(int8_ms=2.0))
        assert report["rows"][-1]["model"] == shipped
        compiled = json.loads((out / "02-emit" / "report.json").read_text())
        choice = compiled["quantization"]["per_backend"]["onnxruntime"] if precision == "auto" else None
        if choice is not None:
            assert choice["chosen"] == "FP32" and {t["graph"] for t in choice["timings"]} == {"INT8 as given", "FP32"}


def test_flat_data_trains_in_the_recipes_input_shape(flow_dir, mnist_flow_splits):
    """Digits stored flat (N, 784) with input_shape [1, 1, 28, 28]: training, export and
    measurement all see 28x28 images."""
    from edgepack import api

    for name, (x, y) in zip(("train", "val", "test"), mnist_flow_splits):
        save_npz(flow_dir / f"flat-{name}.npz", {"input": x.reshape(len(x), -1)}, y)
    recipe = yaml.safe_load(open(_recipe(flow_dir, [{"prune": {"ratio": 0.25, "steps": 1, "max_drop": 1.0,
                                                               "finetune": {"epochs": 1}}}])))
    recipe.update(input_shape=[1, 1, 28, 28], student=None,
                  data={"train": "flat-train.npz", "val": "flat-val.npz", "test": "flat-test.npz"})
    (flow_dir / "flat.yaml").write_text(yaml.safe_dump(recipe))
    report = api.run(str(flow_dir / "flat.yaml"), output_dir=flow_dir / "run-flat", progress=False)
    teacher, pruned = report["rows"]
    assert pruned["model"] == "pruned" and pruned["macs"] < teacher["macs"] and pruned["accuracy"] > 0.8


def test_example_recipe_is_what_the_demo_runs():
    """examples/mnist-flow/recipe.yaml is the demo's recipe for the CLI: they must not drift apart."""
    from pathlib import Path

    from edgepack import demo
    from edgepack.pipeline.recipe import load_recipe

    example = load_recipe(Path(__file__).resolve().parent.parent / "examples" / "mnist-flow" / "recipe.yaml")
    ours = load_recipe(demo.recipe())
    assert example.stages == ours.stages
    assert example.teacher.train == ours.teacher.train and example.target == ours.target
    for split in ("train", "val", "test", "calib"):  # the same files, reached from the example's folder
        assert Path(example.resolve(getattr(example.data, split))).resolve() == Path(getattr(ours.data, split)).resolve()


def test_resume_key_sees_changes_inside_a_data_folder(tmp_path):
    """An image folder given as data is fingerprinted by its contents, not by its name: --resume
    must redo the stages when a picture inside it changes."""
    from edgepack.pipeline.engine import _fingerprint

    folder = tmp_path / "photos" / "cat"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"\xff\xd8 one")
    before = _fingerprint("photos", lambda p: str(tmp_path / p))
    (folder / "a.jpg").write_bytes(b"\xff\xd8 two")
    after = _fingerprint("photos", lambda p: str(tmp_path / p))
    (folder / "a.jpg").rename(folder / "b.jpg")
    renamed = _fingerprint("photos", lambda p: str(tmp_path / p))
    assert before[0] == after[0] == "photos" and len({before[1], after[1], renamed[1]}) == 3
