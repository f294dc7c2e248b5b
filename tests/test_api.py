"""The Python API end to end on a CNN trained on real MNIST digits."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import edgepack
from edgepack.errors import EdgepackError
from edgepack.frontends import load_source
from edgepack.ir.canonical import canonicalize
from edgepack.fsutil import staged_dir

from helpers import run_cli


def test_compile_mnist_cnn_reports_accuracy_parity_and_latency(tmp_path, mnist_model, sample_sets):
    model, torch_acc = mnist_model
    assert torch_acc > 0.9  # the model really learned the digits
    out = tmp_path / "out"
    r = edgepack.compile(model, target="x86-avx2", input_shapes={"x": (1, 1, 28, 28)},
                         calib=sample_sets["mnist_calib"], eval_data=sample_sets["mnist_eval"],
                         output_dir=out, runs=30, warmup=3, progress=False)
    assert (out / "report.json").is_file() and (out / "report.md").is_file()
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["artifacts"][0]["sha256"] == r["artifacts"][0]["sha256"]
    acc = r["accuracy"]
    assert acc["samples"] == 1000 and acc["source"] == pytest.approx(torch_acc, abs=1e-9)
    art = r["artifacts"][0]
    assert abs(art["accuracy_drop"]) <= 0.002  # fp32 artifact: same predictions up to float noise
    assert art["parity"]["max_abs_diff"] < 1e-4 and art["parity"]["top1_agreement"] == 1.0
    assert r["data"]["source"].endswith("calib.npz")
    lat = art["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert art["runs"] == 30 and art["warmup"] == 3 and art["threads"] >= 1
    assert r["source"]["macs"] == r["canonical"]["macs"] > 1e6  # BN folding changes no MACs


def test_profile_api_measures_an_existing_artifact(tmp_path, mobilenet_onnx):
    r = edgepack.profile(mobilenet_onnx, target="x86-avx2", runs=10, warmup=1, output_dir=tmp_path / "p",
                         progress=False)
    assert r["backend"] == "onnxruntime" and r["latency_ms"]["p50"] > 0
    assert r["artifacts"][0]["inputs"][0]["shape"] == [1, 3, 224, 224]
    assert (tmp_path / "p" / "report.md").read_text().count("p50") >= 1


def test_staged_dir_leaves_nothing_when_the_work_fails(tmp_path):
    out = tmp_path / "artifact"
    with pytest.raises(RuntimeError):
        with staged_dir(out) as stage:
            (stage / "half.bin").write_bytes(b"x" * 100)
            raise RuntimeError("killed mid-way")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_force(tmp_path, mobilenet_onnx):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(EdgepackError, match="--force"):
        edgepack.compile(mobilenet_onnx, target="x86-avx2", output_dir=out, runs=1, progress=False)
    assert (out / "mine.txt").read_text() == "user data"


@pytest.mark.slow
def test_demo_runs_the_whole_flow(tmp_path):
    """The demo as shipped: every gate (one point of the teacher's accuracy) must pass."""
    proc = run_cli("demo", "-o", tmp_path / "demo", "--no-progress", cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    rows = {(r["stage"], r["model"]): r for r in report["rows"]}
    teacher, final = report["rows"][0], report["rows"][-1]
    assert 0.8e6 < teacher["params"] < 1.3e6 and teacher["accuracy"] > 0.97
    assert final["stage"] == "emit" and final["model"].endswith("int8")
    assert teacher["macs"] >= 10 * final["macs"] and teacher["accuracy"] - final["accuracy"] <= 0.01
    assert ("distill", "no teacher") in rows and "distillation:" in proc.stderr
    assert "every gate passed" in proc.stdout and "Failed to load" not in proc.stderr


def test_compile_with_structured_pruning_writes_plan_and_cuts_macs(tmp_path, mnist_model):
    from edgepack.passes.prune import PrunePlan

    model, _ = mnist_model
    r = edgepack.compile(model, target="x86-avx2", input_shapes={"": (1, 1, 28, 28)}, prune=0.5,
                         output_dir=tmp_path / "p", runs=5, warmup=1, progress=False)
    pr = r["pruning"]
    assert pr["macs_after"] < 0.5 * pr["macs_before"] and pr["params_after"] < pr["params_before"]
    assert r["canonical"]["macs"] == pr["macs_after"]
    plan = PrunePlan.load(tmp_path / "p" / "prune_plan.json")
    assert all(len(g["kept"]) % 8 == 0 or len(g["kept"]) == g["size"] for g in plan.groups.values())
    assert "Structured pruning" in (tmp_path / "p" / "report.md").read_text()


def test_backend_auto_builds_every_runtime_and_ships_the_fastest(tmp_path, mnist_model, tvm_cache):
    model, _ = mnist_model
    r = edgepack.compile(model, target="x86-avx2", input_shapes={"": (1, 1, 28, 28)}, backends=["auto"],
                         output_dir=tmp_path / "a", runs=20, warmup=2, progress=False)
    built = [a["backend"] for a in r["artifacts"]]
    skipped = [s["backend"] for s in r.get("skipped", [])]
    assert sorted(built + skipped) == sorted(["onnxruntime", "openvino", "tvm"]) and len(built) >= 2
    assert all(a["parity"]["max_abs_diff"] < 1e-4 for a in r["artifacts"])
    fastest = min(range(len(built)), key=lambda i: r["artifacts"][i]["latency_ms"]["p50"])
    assert r["selected"]["index"] == fastest and r["backend"] == built[fastest]
    assert "lowest p50" in r["selected"]["reason"]


def test_int8_after_pruning_is_judged_against_the_pruned_graph(tmp_path, mnist_model, sample_sets):
    """One-shot pruning loses more than the INT8 budget; INT8 must not be charged for it (it
    would float every layer trying to win back what quantization never lost)."""
    model, _ = mnist_model
    r = edgepack.compile(model, target="x86-vnni", input_shapes={"": (1, 1, 28, 28)}, prune=0.5, precision="int8",
                         calib=sample_sets["mnist_calib"], output_dir=tmp_path / "p", runs=5, warmup=1,
                         progress=False)
    acc, q = r["accuracy"], r["quantization"]
    assert acc["metric"] == "cosine" and acc["source"] - acc["compressed_fp32"] > 0.01  # pruning's own loss
    assert q["fp32_score"] == pytest.approx(1.0) and q["met"] and q["drop"] <= 0.01 and q["int8_layers"] > 0
    art = r["artifacts"][0]
    assert art["accuracy_drop"] == pytest.approx(acc["compressed_fp32"] - art["accuracy"])


def test_prune_layer_alone_prunes_just_that_layer(tmp_path, mnist_model):
    model, _ = mnist_model
    canonical = canonicalize(load_source(model, {"": (1, 1, 28, 28)}).model)[0]
    conv = next(n.name for n in canonical.graph.node if n.op_type == "Conv")
    r = edgepack.compile(model, target="x86-avx2", input_shapes={"": (1, 1, 28, 28)}, prune_layers={conv: 0.5},
                         output_dir=tmp_path / "p", runs=5, warmup=1, progress=False)
    pr = r["pruning"]
    assert pr["ratio"] == 0.0 and pr["macs_after"] < pr["macs_before"]


def test_relative_budget_on_mse_is_refused(tmp_path, mnist_model, sample_sets):
    model, _ = mnist_model
    with pytest.raises(EdgepackError, match="relative --max-drop needs a metric"):
        edgepack.compile(model, target="x86-vnni", input_shapes={"": (1, 1, 28, 28)}, precision="int8",
                         calib=sample_sets["mnist_calib"], metric="mse", max_drop="1%",
                         output_dir=tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


def test_batch_larger_than_one_takes_whole_batches_only(tmp_path, mnist_model, sample_sets):
    from edgepack.data import save_npz

    model, _ = mnist_model
    x = np.load(sample_sets["mnist_calib"])["input"]
    save_npz(tmp_path / "six.npz", {"input": x[:6]})
    save_npz(tmp_path / "three.npz", {"input": x[:3]})
    r = edgepack.compile(model, target="x86-avx2", input_shapes={"": (4, 1, 28, 28)}, calib=tmp_path / "six.npz",
                         output_dir=tmp_path / "ok", runs=5, warmup=1, progress=False)
    assert r["data"]["samples_for_parity"] == 1 and r["artifacts"][0]["parity"]["max_abs_diff"] < 1e-4
    with pytest.raises(EdgepackError, match="3 samples, fewer than the model's batch of 4"):
        edgepack.compile(model, target="x86-avx2", input_shapes={"": (4, 1, 28, 28)},
                         calib=tmp_path / "three.npz", output_dir=tmp_path / "no", progress=False)


def test_a_runtime_that_is_not_installed_is_named_and_auto_skips_it(monkeypatch):
    from edgepack.compiler.select import choose_backends
    from edgepack.backends import get_backend
    from edgepack.targets import load_profile

    monkeypatch.setitem(sys.modules, "tvm", None)  # as if apache-tvm were not installed
    with pytest.raises(EdgepackError, match=r"backend 'tvm' is not installed \(tvm\): pip install 'edgepack\[tvm\]'"):
        get_backend("tvm")
    assert "tvm" not in choose_backends(load_profile("x86-avx2"), ["auto"])


def test_a_hung_benchmark_worker_is_killed_at_the_deadline(tmp_path):
    """The worker blocks opening a FIFO nobody writes (as a runtime deadlocked in load would)."""
    import os
    import time

    from edgepack.backends import get_backend
    from edgepack.devices.base import WORKER
    from edgepack.devices.local import run_worker

    os.mkfifo(tmp_path / "inputs.npz")
    (tmp_path / "config.json").write_text(json.dumps({
        "session": str(get_backend("onnxruntime").session_file()), "artifact": str(tmp_path / "m.onnx"),
        "threads": 1, "warmup": 0, "runs": 1, "inputs": str(tmp_path / "inputs.npz"), "n_feeds": 1,
        "result": str(tmp_path / "result.json")}))
    start = time.perf_counter()
    with pytest.raises(EdgepackError, match="did not finish within 3 s"):
        run_worker([sys.executable, str(WORKER), str(tmp_path / "config.json")], tmp_path, lambda n: None, 3)
    assert time.perf_counter() - start < 300  # killed, not waited for
