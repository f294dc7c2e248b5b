"""edgepack search on the MNIST CNN, with real compiles: the process pool and a real local Ray
instance agree, a killed search resumes without redoing a finished trial, an infeasible spec
exits 3 naming what each closest point misses, and a bad spec is one line.

Timing verdicts are pinned (helpers.PinnedLatency): which points are feasible and which one is
chosen must not depend on how busy the machine is.
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

from helpers import ROOT, PinnedLatency, message_lines, run_cli

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def mnist_onnx(tmp_path_factory, mnist_model):
    import torch

    path = tmp_path_factory.mktemp("search-model") / "mnist.onnx"
    torch.onnx.export(mnist_model[0], (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"])
    return path


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory, sample_sets) -> dict:
    """The bundled MNIST calibration and evaluation sets cut to 100 and 300 samples: each trial
    calibrates and scores on them, and the budget is a few seconds a trial on 2 cores."""
    import numpy as np

    folder, out = tmp_path_factory.mktemp("search-data"), {}
    for name, n in (("mnist_calib", 100), ("mnist_eval", 300)):
        with np.load(sample_sets[name]) as d:
            np.savez(folder / f"{name}.npz", **{k: d[k][:n] for k in d.files})
        out[name] = folder / f"{name}.npz"
    return out


def _spec(mnist_onnx, sets, **over) -> dict:
    spec = {"name": "mnist", "model": str(mnist_onnx), "calib": str(sets["mnist_calib"]),
            "eval": str(sets["mnist_eval"]), "targets": ["host"],
            "constraints": {"max_drop": 0.02, "max_p50_ms": 0.8},
            "objectives": {"accuracy": "max", "p50_ms": "min", "size_mb": "min"},
            "space": {"backend": ["onnxruntime"], "precision": ["fp32", "int8"], "prune_ratio": [0.0, 0.5]},
            "trials": 3, "repeats": 2, "runs": 5, "warmup": 1, "threads": 1}
    return spec | over


def _summary(out) -> dict:
    target = json.loads((out / "search.json").read_text())["targets"][0]
    return {"front": sorted(json.dumps(r["point"], sort_keys=True) for r in target["front"]),
            "chosen": target["chosen"] and target["chosen"]["point"],
            "trials": [(r["trial"], json.dumps(r["point"], sort_keys=True), r["feasible"],
                        round(r["values"].get("accuracy", -1), 6)) for r in target["trials"]]}


@pytest.mark.slow
def test_ray_and_the_process_pool_find_the_same_front(tmp_path, mnist_onnx, small_sets):
    from edgepack.search import SearchSpec, search

    spec = SearchSpec.model_validate(_spec(mnist_onnx, small_sets))
    pool = search(spec, tmp_path / "pool", timing=PinnedLatency())[0]
    ray = search(spec, tmp_path / "ray", executor="ray", timing=PinnedLatency())[0]
    assert _summary(tmp_path / "pool") == _summary(tmp_path / "ray")
    assert pool.feasible and ray.feasible
    # the pinned p50s put fp32 unpruned (1.0 ms) past max_p50_ms 0.8: only INT8 or pruned points qualify
    assert pool.chosen.point == ray.chosen.point and pool.chosen.point != {**pool.chosen.point, "precision": "fp32",
                                                                           "prune_ratio": 0.0}
    assert all(r.fig.values["drop"] <= 0.02 and r.fig.values["p50_ms"] <= 0.8 for r in pool.front)
    for out in (tmp_path / "pool", tmp_path / "ray"):
        assert (out / "host" / "pareto.png").stat().st_size > 10_000
        assert "(chosen)" in (out / "host" / "pareto.md").read_text()
        chosen = json.loads((out / "host" / "chosen" / "report.json").read_text())
        assert chosen["artifacts"][0]["backend"] == "onnxruntime"


@pytest.mark.slow
def test_a_killed_search_resumes_without_redoing_finished_trials(tmp_path, mnist_onnx, small_sets):
    spec_path, out = tmp_path / "search.yaml", tmp_path / "out"
    spec = _spec(mnist_onnx, small_sets, trials=4, constraints={"max_drop": 0.02},
                 space={"backend": ["onnxruntime"], "precision": ["fp32", "int8"], "prune_ratio": [0.0, 0.25, 0.5]})
    spec_path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edgepack", "search", str(spec_path), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not list(out.glob("trials/*/figures.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    finished = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/figures.json")}
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert 1 <= len(finished) < 4

    again = run_cli("search", spec_path, "-o", out, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    for path, mtime in finished.items():  # read back, never recomputed or rewritten
        assert path.stat().st_mtime_ns == mtime
    target = json.loads((out / "search.json").read_text())["targets"][0]
    assert len({json.dumps(r["point"], sort_keys=True) for r in target["trials"]}) == 4  # only the rest ran
    assert any(r["cached"] for r in target["trials"]) or len(finished) == 1 and target["trials"][0]["trial"] == 0
    assert not list(out.rglob("*.staging*"))  # the killed compile left nothing half-written


def test_a_second_search_into_a_running_searchs_folder_refuses_at_once(tmp_path, mnist_onnx, small_sets):
    """Two searches on one folder would fail each other's running trials: the second refuses in
    one line before it opens the study, and the folder is left as the first one holds it."""
    import threading

    from edgepack.errors import EdgepackError
    from edgepack.fsutil import output_lock
    from edgepack.search import SearchSpec, search

    out, held, done = tmp_path / "out", threading.Event(), threading.Event()

    def first_search():  # holds the folder as a running search does (another thread: not re-entrant)
        with output_lock(out):
            held.set()
            done.wait(60)

    holder = threading.Thread(target=first_search)
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(EdgepackError, match="being written by another edgepack run"):
            search(SearchSpec.model_validate(_spec(mnist_onnx, small_sets)), out)
    finally:
        done.set()
        holder.join()
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_an_infeasible_spec_exits_3_naming_what_the_closest_points_miss(tmp_path, mnist_onnx, small_sets):
    """max_macs below any point's: every trial stops after the cheap figures, nothing compiles."""
    r = run_cli("search", mnist_onnx, "--calib", small_sets["mnist_calib"], "--eval", small_sets["mnist_eval"],
                "--constraint", "max_macs=1000", "--constraint", "max_drop=0.01", "--prune", "0", "--prune", "0.5",
                "--trials", "3", "--threads", "1", "-o", tmp_path / "out", timeout=600)
    assert r.returncode == 3, r.stderr[-2000:]
    lines = message_lines(r.stderr)
    assert lines[0].startswith("edgepack: error: host: no point meets the constraints")
    misses = [ln for ln in lines[1:] if ln.strip().startswith("trial ")]
    assert misses and all("max_macs: macs" in ln and "> 1000" in ln for ln in misses)
    assert not list((tmp_path / "out").glob("trials/*/out"))  # cheap figures first: no compile ran
    summary = json.loads((tmp_path / "out" / "search.json").read_text())["targets"][0]
    assert summary["chosen"] is None and {r["status"] for r in summary["trials"]} == {"cheap"}


@pytest.fixture
def conv_search(tmp_path):
    """A Conv graph whose INT8 artifact is smaller than its FP32 one, and calibration data."""
    import numpy as np
    import onnx

    from edgepack.data import save_npz
    from helpers import conv_relu

    onnx.save(conv_relu(16, 32, 8), str(tmp_path / "conv.onnx"))
    save_npz(tmp_path / "calib.npz", {"x": np.random.default_rng(0).standard_normal((8, 16, 8, 8)).astype(np.float32)})
    return {"model": str(tmp_path / "conv.onnx"), "calib": str(tmp_path / "calib.npz"), "runs": 5, "warmup": 1,
            "threads": 1, "repeats": 2, "constraints": {"max_p50_ms": 50, "device": "local"}}


def test_only_points_that_can_reach_the_front_are_timed_on_the_device(tmp_path, conv_search):
    """Pinned host timings (INT8 0.5 ms, FP32 1.0 ms): the INT8 point, first, is timed on the
    `local` device; the FP32 one, slower and larger on this host than INT8 already on the front,
    is not; nor is a point that misses another constraint (peak memory), whatever the front."""
    from edgepack.search.evaluate import Job, evaluate
    from edgepack.search.run import base_request
    from edgepack.search.spec import Constraints, SearchSpec

    spec = SearchSpec.model_validate(conv_search)
    base, bounds = base_request(spec, "host"), spec.target_list()[0].constraints

    def job(precision, front=(), constraints=bounds, folder="trials"):
        point = {"backend": "onnxruntime", "precision": precision, "prune_ratio": 0.0, "prune_mode": "uniform",
                 "keep_float": []}
        return Job(base, point, constraints, str(tmp_path / folder), 2, PinnedLatency(), spec.objectives, front)

    int8 = evaluate(job("int8"))
    assert int8["device"] == "local" and int8["device_skipped"] is None
    assert int8["values"]["host_p50_ms"] == pytest.approx(0.495) and int8["values"]["p50_ms"] == pytest.approx(0.495)
    alone = evaluate(job("fp32", folder="alone"))  # nothing known yet: worth the device's time
    assert alone["device"] == "local" and int8["values"]["size_mb"] < 0.5 * alone["values"]["size_mb"]
    fp32 = evaluate(job("fp32", front=((0, int8),)))
    assert fp32["device"] is None and "p50_ms" not in fp32["values"] and fp32["values"]["host_p50_ms"] == pytest.approx(0.995)
    assert fp32["device_skipped"] == "not timed on local: trial 0 dominates it on this host's figures, beyond the noise"
    tight = Constraints(**(bounds.model_dump() | {"max_peak_mb": 1}))
    missed = evaluate(job("fp32", constraints=tight, folder="tight"))
    assert missed["device"] is None and missed["device_skipped"] == "not timed on local: misses max_peak_mb"


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_a_search_sends_its_front_so_far_to_each_trial(tmp_path, conv_search, executor):
    """Through the loop: the first point is timed on the device (nothing known yet); the second
    only if the first does not dominate it on this host (INT8 first: FP32 is skipped, saying so
    in search.json). Under Ray the board's timing is a task of its own holding the board."""
    from edgepack.search import SearchSpec, search

    if executor == "ray":
        pytest.importorskip("ray")
    spec = SearchSpec.model_validate(conv_search | {"space": {"precision": ["fp32", "int8"]}, "trials": 2})
    result = search(spec, tmp_path / "out", executor=executor, timing=PinnedLatency())[0]
    first, second = sorted({json.dumps(r.point, sort_keys=True): r for r in reversed(result.rows)}.values(),
                           key=lambda r: r.number)
    assert first.fig.device == "local" and first.feasible
    if first.point["precision"] == "int8":
        assert second.fig.device is None and f"trial {first.number} dominates it" in second.fig.device_skipped
        assert not second.feasible and result.front == [first]
        rows = json.loads((tmp_path / "out" / "search.json").read_text())["targets"][0]["trials"]
        assert any(r["device_skipped"] and r["point"]["precision"] == "fp32" for r in rows)
    else:
        assert second.fig.device == "local"


def test_a_check_set_judges_each_point_apart_from_the_data_its_compile_fitted(tmp_path, mnist_onnx, small_sets,
                                                                              sample_sets):
    """With check data, accuracy and drop are each artifact's on inputs no compile fitted its
    budget to (recomputed here with ONNX Runtime), the fitted figures kept as fit_*."""
    import numpy as np
    import onnxruntime as ort

    from edgepack.search import SearchSpec, search

    with np.load(sample_sets["mnist_eval"]) as d:  # eval is the first 300: the check is the next 400
        x, y = d["input"][300:700], d["labels"][300:700]
    np.savez(tmp_path / "check.npz", input=x, labels=y)
    spec = SearchSpec.model_validate(_spec(mnist_onnx, small_sets, check=str(tmp_path / "check.npz"), trials=2,
                                           constraints={"max_drop": 0.05},
                                           space={"backend": ["onnxruntime"], "precision": ["fp32", "int8"]}))
    result = search(spec, tmp_path / "out", timing=PinnedLatency())[0]
    assert len(result.rows) == 2

    def top1(path) -> float:  # the graph takes batches of 1
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return float((np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))]).argmax(1)
                      == y).mean())

    base = top1(mnist_onnx)
    for row in result.rows:
        fig = row.fig
        report = json.loads(Path(fig.report).read_text())
        assert fig.values["accuracy"] == pytest.approx(top1(fig.artifact), abs=1e-9)
        assert fig.values["drop"] == pytest.approx(base - fig.values["accuracy"], abs=1e-9)
        assert fig.values["fit_accuracy"] == report["artifacts"][report["selected"]["index"]]["accuracy"]
    assert "fit_accuracy" in (tmp_path / "out" / "host" / "pareto.md").read_text()


def test_fastest_means_fastest_not_a_point_whose_wide_interval_overlaps_it():
    """A point timed 12.7, 13.5 and 5.3 ms (a wide interval of its own) does not tie with one
    timed 3.8 ms three times, however much smaller it is; one inside the fastest's interval does."""
    from edgepack.search.figures import Figures
    from edgepack.search.pareto import Row, choose, dominates, front

    def row(n, p50, ci, size):
        return Row(n, {"n": n}, Figures("built", {"p50_ms": p50, "accuracy": 1.0, "size_mb": size}, ci95_ms=ci), {})

    fast, noisy, close = row(1, 3.82, 0.11, 14.1), row(2, 12.65, 11.2, 4.5), row(3, 3.9, 0.5, 10.0)
    assert choose([noisy, fast], {"p50_ms": "min"}, "fastest")[0] is fast
    # nor does its wide interval let it push the fast point off the front on the other objectives
    objectives = {"p50_ms": "min", "size_mb": "min"}
    assert not dominates(noisy, fast, objectives) and front([noisy, fast], objectives) == [fast, noisy]
    assert dominates(row(4, 3.83, 0.5, 4.5), fast, objectives)  # within fast's interval, and smaller
    pick, why = choose([noisy, fast, close], {"p50_ms": "min"}, "fastest")
    assert pick is close and "2 points tie" in why  # within the fastest's own interval: the smaller


@pytest.mark.parametrize("change, expected", [
    ({"constraint": {"max_drop": 0.01}}, "constraint: unknown field (did you mean: constraints?)"),
    ({"space": {"precision": ["int4"]}}, "space.precision[0]: Input should be"),
    ({"constraints": {"max_drop": 2}}, "constraints.max_drop: Input should be less than or equal to 1"),
    ({"objectives": {"latency": "min"}}, "unknown objective 'latency'"),
    ({"eval": None}, "drop needs evaluation data"),
    ({"eval": None, "objectives": {"accuracy": "max"}}, "accuracy, drop need evaluation data"),
    ({"recipe": "r.yaml", "model": None}, "a recipe search needs space.recipe"),
    ({"recipe": "r.yaml", "model": None, "space": {"recipe": {"distill.temperature": [2, 4]}}},
     "eval: a recipe search takes its model and data from the recipe"),
    ({"space": {"recipe": {"distill.temperature": [2, 4]}}}, "recipe knobs need a recipe"),
    ({"recipe": "r.yaml", "model": None, "eval": None, "constraints": {"min_cosine": 0.9},
      "space": {"recipe": {"distill.temperature": [2, 4]}}}, "min_cosine: a recipe trial reports accuracy"),
    ({"space": {"backend": ["onnxruntme"]}}, "did you mean: onnxruntime"),
    ({"eval": None, "check": "c.npz", "constraints": {"max_p50_ms": 2}}, "check: judges points apart from eval"),
])
def test_spec_mistakes_are_one_line(tmp_path, change, expected):
    from edgepack.errors import EdgepackError
    from edgepack.search import load_spec

    spec = {"model": "m.onnx", "eval": "e.npz", "constraints": {"max_drop": 0.01}} | change
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}))
    with pytest.raises(EdgepackError) as e:
        load_spec(path)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_cli_constraint_mistakes_are_one_line(capsys):
    from edgepack.cli import main

    assert main(["search", "m.onnx", "--eval", "e.npz", "--constraint", "max_dorp=0.01"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown constraint (did you mean: max_drop" in err


def test_points_no_runtime_can_build_are_skipped_not_spent(tmp_path, mnist_onnx, small_sets):
    """ONNX Runtime does not compute in BF16: those points are skipped with the reason, never
    compiled, and no trial is spent on them (the space then holds one point: the search ends)."""
    from edgepack.events import Events
    from edgepack.search import SearchSpec, search

    steps = []
    spec = SearchSpec.model_validate(_spec(mnist_onnx, small_sets, constraints={"max_drop": 0.05},
                                           space={"backend": ["onnxruntime"], "precision": ["bf16", "fp32"]},
                                           trials=2, repeats=1))
    res = search(spec, tmp_path / "out", events=Events(lambda e: steps.append(e.message)), timing=PinnedLatency())[0]
    assert {r.point["precision"] for r in res.rows} == {"fp32"} and all(r.fig.status == "built" for r in res.rows)
    assert any(line.startswith("skipped onnxruntime bf16: onnxruntime builds") for line in steps), steps
    assert len(list((tmp_path / "out" / "trials").iterdir())) == 1  # one compile: the FP32 point
