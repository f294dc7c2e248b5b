"""Nothing a user has is ever lost: --force replaces only edgepack's own folders, --resume only
its own stage folders (and only files still as they were saved), a folder that appears at `-o`
mid-run is left alone, two runs into one `-o` never both succeed, dead runs' leftovers are cleaned."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
import yaml

import edgepack
from edgepack.data import save_npz
from edgepack.errors import EdgepackError
from edgepack.fsutil import MARKER, PID_FILE, staged_dir
from helpers import conv_relu, message_lines, run_cli

FAST = {"target": "x86-avx2", "backends": ["onnxruntime"], "runs": 3, "warmup": 1, "progress": False}


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "inputs" / "model.onnx"
    path.parent.mkdir()
    onnx.save(conv_relu(3, 4, 8), str(path))
    return path


def _sentinels(folder):
    (folder / "keep.txt").write_text("user data")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "notes.md").write_text("more user data")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- --force


def test_force_into_the_current_folder_is_refused_and_deletes_nothing(model, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    before = _sentinels(work)
    proc = run_cli("compile", model, "--target", "x86-avx2", "--runs", "3", "--warmup", "1", "-o", ".", "--force",
                   cwd=work)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = message_lines(proc.stderr)
    assert lines == ["edgepack: error: refusing to replace .: it is the current folder; -o a new folder"], lines
    assert _files(work) == before


@pytest.mark.parametrize("where", ["parent", "home", "inputs"])
def test_force_never_replaces_a_parent_home_or_the_inputs(model, tmp_path, monkeypatch, where):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = {"parent": tmp_path, "home": tmp_path / "home", "inputs": model.parent}[where]
    (out / MARKER).write_text(json.dumps({"made_by": "edgepack", "command": "compile"}))  # even edgepack's
    before = _files(tmp_path)
    with pytest.raises(EdgepackError, match="refusing to replace") as e:
        edgepack.compile(str(model), output_dir=out, force=True, **FAST)
    assert {"parent": "a parent of the current folder", "home": "the home folder",
            "inputs": "it holds the input"}[where] in str(e.value)
    assert _files(tmp_path) == before


def test_force_on_a_users_folder_is_refused(model, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    before = _sentinels(out)
    with pytest.raises(EdgepackError, match="not made by edgepack"):
        edgepack.compile(str(model), output_dir=out, force=True, **FAST)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "mine"]  # no staging folder, no lock


def test_force_replaces_an_edgepack_output_and_an_empty_folder(model, tmp_path):
    out, empty = tmp_path / "out", tmp_path / "empty"
    edgepack.compile(str(model), output_dir=out, **FAST)
    marker = json.loads((out / MARKER).read_text())
    assert marker["made_by"] == "edgepack" and marker["command"] == "compile" and marker["version"]
    (out / "stale.txt").write_text("from the old output")
    edgepack.compile(str(model), output_dir=out, force=True, **FAST)
    assert not (out / "stale.txt").exists() and (out / "onnxruntime" / "model.onnx").is_file()
    empty.mkdir()
    edgepack.compile(str(model), output_dir=empty, force=True, **FAST)
    assert (empty / "report.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "inputs", "out"]


# --------------------------------------------------------------------------- races


def test_a_folder_that_appears_during_a_compile_is_not_replaced(model, tmp_path, monkeypatch):
    from edgepack.compiler import flow

    out = tmp_path / "out"
    build_all = flow.build_all

    def user_makes_it(c, stage, *args):
        out.mkdir()
        (out / "precious.txt").write_text("the user's")
        return build_all(c, stage, *args)

    monkeypatch.setattr(flow, "build_all", user_makes_it)
    with pytest.raises(EdgepackError, match="appeared while this run worked"):
        edgepack.compile(str(model), output_dir=out, **FAST)
    assert _files(out) == {"precious.txt": b"the user's"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"]


def test_staged_dir_does_not_replace_an_empty_folder_that_appeared(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EdgepackError, match="appeared while this run worked"):
        with staged_dir(out) as stage:
            (stage / "result.bin").write_bytes(b"ours")
            out.mkdir()  # empty: a plain rename would silently replace it
    assert out.is_dir() and list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_final_rename_never_replaces_what_appeared_at_the_last_moment(tmp_path):
    from edgepack.fsutil import rename_noreplace

    src, empty, full = tmp_path / "src", tmp_path / "empty", tmp_path / "full"
    for d in (src, empty, full):
        d.mkdir()
    (src / "ours").write_text("ours")
    (full / "theirs").write_text("theirs")
    for dst in (empty, full):
        with pytest.raises(FileExistsError):
            rename_noreplace(src, dst)
    assert _files(tmp_path) == {"src/ours": b"ours", "full/theirs": b"theirs"} and empty.is_dir()
    rename_noreplace(src, tmp_path / "new")
    assert _files(tmp_path) == {"new/ours": b"ours", "full/theirs": b"theirs"}


def test_two_compiles_into_one_folder_do_not_both_succeed(model, tmp_path, monkeypatch):
    from edgepack.compiler import flow

    out, both_in = tmp_path / "out", threading.Barrier(2, timeout=60)
    lower = flow.lower

    def meet(c):  # both have passed their first check before either writes
        try:
            both_in.wait()
        except threading.BrokenBarrierError:
            pass
        return lower(c)

    monkeypatch.setattr(flow, "lower", meet)
    results = []

    def compile_once():
        try:
            edgepack.compile(str(model), output_dir=out, **FAST)
            results.append("ok")
        except EdgepackError as e:
            both_in.abort()
            results.append(str(e))

    threads = [threading.Thread(target=compile_once) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=lambda r: r != "ok")[0] == "ok" and results.count("ok") == 1, results
    refusal = next(r for r in results if r != "ok")
    assert "is being written by another edgepack run" in refusal or "already exists" in refusal
    assert (out / "report.json").is_file()


def test_a_dead_runs_staging_folders_are_removed_with_a_line(model, tmp_path, capsys):
    dead = _dead_pid()
    tmp = tmp_path / ".out.tmp-abc123"
    tmp.mkdir()
    (tmp / PID_FILE).write_text(str(dead))
    (tmp / "half.onnx").write_bytes(b"half")
    old = tmp_path / f".other.old-{dead}"
    old.mkdir()
    (old / MARKER).write_text(json.dumps({"made_by": "edgepack", "command": "compile"}))
    alive = tmp_path / ".busy.tmp-xyz"  # a run still working: not touched
    alive.mkdir()
    (alive / PID_FILE).write_text(str(subprocess.os.getpid()))
    foreign = tmp_path / ".cache.tmp-1"  # no pid file: not provably ours
    foreign.mkdir()
    edgepack.compile(str(model), output_dir=tmp_path / "out", **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".busy.tmp-xyz", ".cache.tmp-1", "inputs", "out"]
    err = capsys.readouterr().err
    assert f"removed {tmp}: left by an edgepack run that ended (pid {dead})" in err
    assert f"removed {old}: left by an edgepack run that ended (pid {dead})" in err


# --------------------------------------------------------------------------- the recipe flow

NETS = """
from torch import nn

def teacher():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
"""
STAGES = [{"prune": {"ratio": 0.25, "steps": 1, "max_drop": 1.0, "finetune": {"epochs": 0}}},
          {"emit": {"backends": ["onnxruntime"]}}]


@pytest.fixture
def recipe(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "nets.py").write_text(NETS)
    for name in ("train", "val"):
        save_npz(tmp_path / f"{name}.npz", {"input": rng.standard_normal((32, 1, 8, 8)).astype(np.float32)},
                 rng.integers(0, 4, 32))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "target": "x86-avx2", "teacher": {"model": "nets.py:teacher"},
                                    "data": {"train": "train.npz", "val": "val.npz"},
                                    "measure": {"runs": 3, "warmup": 1}, "stages": STAGES}))
    return path


def _run(recipe, out, **kwargs) -> list[str]:
    """Run the flow; the lines it said."""
    from edgepack.events import Events
    from edgepack.pipeline.engine import run

    said = []
    run(str(recipe), out, events=Events(lambda e: said.append(e.message)), **kwargs)
    return said


def test_run_into_the_current_folder_with_force_is_refused(recipe, tmp_path):
    before = _files(tmp_path)
    proc = run_cli("run", recipe, "-o", ".", "--force", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message_lines(proc.stderr) == [
        "edgepack: error: refusing to replace .: it is the current folder; -o a new folder"]
    assert _files(tmp_path) == before


def test_resume_touches_only_its_own_stage_folders(recipe, tmp_path):
    out = tmp_path / "proj"
    _run(recipe, out)
    marker = json.loads((out / MARKER).read_text())
    assert marker["command"] == "run" and marker["stages"] == ["00-teacher", "01-prune", "02-emit"]
    notes = out / "05-notes"
    notes.mkdir()
    (notes / "todo.md").write_text("mine")
    changed = yaml.safe_load(recipe.read_text())
    changed["stages"][0]["prune"]["ratio"] = 0.5  # the prune stage and emit are redone
    recipe.write_text(yaml.safe_dump(changed))
    said = _run(recipe, out, resume=True)
    assert "stage 1: prune" in said and (notes / "todo.md").read_text() == "mine"
    # a user's folder where a stage would go is not replaced either
    (out / "02-emit").rename(out / "02-saved")
    user = out / "02-emit"
    user.mkdir()
    (user / "mine.txt").write_text("mine")
    changed["stages"][0]["prune"]["ratio"] = 0.25
    recipe.write_text(yaml.safe_dump(changed))
    with pytest.raises(EdgepackError, match="refusing to replace .*02-emit|not a stage folder"):
        _run(recipe, out, resume=True)
    assert _files(user) == {"mine.txt": b"mine"}


def test_resume_redoes_a_truncated_stage_model_and_an_altered_artifact(recipe, tmp_path):
    out = tmp_path / "proj"
    _run(recipe, out)
    stage = json.loads((out / "01-prune" / "stage.json").read_text())
    assert "model.onnx" in stage["files"] and len(stage["files"]["model.onnx"]) == 64
    artifact = out / "02-emit" / "onnxruntime" / "model.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    said = _run(recipe, out, resume=True)
    assert "stage 2 (emit): 02-emit/onnxruntime/model.onnx changed since it was saved: redoing it" in said
    assert "stage 1 (prune): unchanged, reusing " + str(out / "01-prune") in said
    onnx.checker.check_model(onnx.load(str(artifact)))

    model = out / "01-prune" / "model.onnx"
    model.write_bytes(model.read_bytes()[:100])
    said = _run(recipe, out, resume=True)
    assert "stage 1 (prune): 01-prune/model.onnx changed since it was saved: redoing it" in said
    assert "stage 1: prune" in said and "stage: emit" in said  # and every stage after it
    onnx.checker.check_model(onnx.load(str(model)))

    (out / "02-emit" / "report.json").unlink()
    said = _run(recipe, out, resume=True)
    assert "stage 2 (emit): 02-emit/report.json is missing: redoing it" in said


def test_resume_refuses_a_folder_edgepack_run_did_not_make(recipe, tmp_path):
    out = tmp_path / "proj"
    out.mkdir()
    before = _sentinels(out)
    with pytest.raises(EdgepackError, match="not made by edgepack run"):
        _run(recipe, out, resume=True)
    assert _files(out) == before
