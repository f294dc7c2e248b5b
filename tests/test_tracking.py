"""Tracking with real parts: the SQLite store in the working directory, a real `mlflow server`
over HTTP, the MNIST recipe's lineage, a killed compile, and several processes at once.

conftest.py turns tracking off for the session (EDGEPACK_NO_TRACK); the `tracked` fixture
turns it back on, with the working directory (and so the default store) in tmp_path.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import yaml

from edgepack.data import save_npz
from edgepack.fsutil import sha256_file
from helpers import conv_relu, message_lines, run_cli

QUICK = ("--runs", "5", "--warmup", "1", "--no-progress")


@pytest.fixture
def tracked(tmp_path, monkeypatch):
    """Tracking on, runs recorded in tmp_path/mlruns-edgepack (the default store of that cwd)."""
    monkeypatch.delenv("EDGEPACK_NO_TRACK", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    onnx.save(conv_relu(3, 8, 16), str(tmp_path / "m.onnx"))
    return tmp_path


def _client(uri: str):
    """A client of `uri`; also the process's default (models:/ URIs resolve through the registry
    URI, which must never fall back to a store in the test's working directory)."""
    import mlflow

    from edgepack.tracking import settle

    assert settle(uri, 300)  # the commands return before their recorders finish
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(uri, uri)
    return client, client.get_experiment_by_name("edgepack").experiment_id


def _sqlite(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'mlruns-edgepack' / 'mlflow.db'}"


def _runs(client, exp, level=None) -> list:
    runs = client.search_runs([exp], max_results=1000)
    return [r for r in runs if level is None or r.data.tags.get("edgepack.level") == level]


def test_compile_is_recorded_with_models_registry_and_commands(tracked, monkeypatch):
    cwd = tracked
    monkeypatch.chdir(cwd)
    r = run_cli("compile", "m.onnx", "-t", "x86-vnni", "-b", "onnxruntime", "-b", "openvino", "-o", "out",
                *QUICK, cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning" not in r.stderr
    # the documented default store, and nothing else left in the working directory
    assert sorted(p.name for p in cwd.iterdir()) == ["m.onnx", "mlruns-edgepack", "out"]
    client, exp = _client(_sqlite(cwd))
    (parent,) = _runs(client, exp, "parent")
    assert parent.info.status == "FINISHED"
    report = json.loads((cwd / "out" / "report.json").read_text())
    p, m = parent.data.params, parent.data.metrics
    assert p["target"] == "x86-vnni" and len(p["target_profile_sha256"]) == 16 and p["lib.onnxruntime"]
    assert p["source_sha256"] == sha256_file(cwd / "m.onnx")
    for key in ("p50_ms", "p90_ms", "p99_ms", "size_bytes", "onnxruntime.p50_ms", "openvino.p99_ms", "macs"):
        assert key in m, key
    assert m["size_bytes"] == report["artifacts"][report["selected"]["index"]]["size_bytes"]

    # one nested run per artifact: the source model in, the artifact model out, its figures on the model
    artifacts = {x.data.params["backend"]: client.get_run(x.info.run_id) for x in _runs(client, exp, "artifact")}
    assert set(artifacts) == {"onnxruntime", "openvino"}
    source = artifacts["onnxruntime"].inputs.model_inputs[0].model_id
    assert client.get_logged_model(source).tags["edgepack.sha256"] == p["source_sha256"]
    by_backend = {a["backend"]: a for a in report["artifacts"]}
    for backend, run in artifacts.items():
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert [i.model_id for i in run.inputs.model_inputs] == [source]
        model = client.get_logged_model(run.outputs.model_outputs[0].model_id)
        assert model.tags["edgepack.sha256"] == by_backend[backend]["sha256"]
        assert {x.key for x in model.metrics} >= {"p50_ms", "size_bytes"}
    import mlflow.onnx

    ort_model = artifacts["onnxruntime"].outputs.model_outputs[0].model_id
    loaded = mlflow.onnx.load_model(f"models:/{ort_model}")  # the ONNX flavor, loadable as such
    assert loaded.graph == onnx.load(str(cwd / "out" / by_backend["onnxruntime"]["path"])).graph

    # registering an OpenVINO artifact (a flavor-less model) keeps every file, byte for byte
    r = run_cli("compile", "m.onnx", "-t", "x86-vnni", "-b", "openvino", "-o", "out-ov", *QUICK, cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    versions = sorted(client.search_model_versions("name = 'm-x86-vnni'"), key=lambda v: int(v.version))
    assert len(versions) == 2 and versions[1].tags["backend"] == "openvino"
    assert client.get_registered_model("m-x86-vnni").aliases == {"candidate": 2}
    got = Path(mlflow.artifacts.download_artifacts("models:/m-x86-vnni/2", dst_path=str(cwd / "dl"),
                                                   tracking_uri=_sqlite(cwd)))
    ov = json.loads((cwd / "out-ov" / "report.json").read_text())["artifacts"][0]
    assert {f.name: sha256_file(f) for f in got.iterdir()} == {n: f["sha256"] for n, f in ov["files"].items()}
    assert len(ov["files"]) == 2  # model.xml + model.bin

    _check_commands(cwd, parent.info.run_id)

    # a profile of the artifact: its figures attach to the model the compile logged
    r = cli("profile", Path("out") / by_backend["onnxruntime"]["path"], "-o", "prof", *QUICK)
    assert r.returncode == 0, r.stderr
    client, exp = _client(_sqlite(cwd))  # once its recorder is done
    (prof,) = [x for x in _runs(client, exp, "artifact") if x.data.tags.get("edgepack.command") == "profile"]
    prof = client.get_run(prof.info.run_id)
    assert [i.model_id for i in prof.inputs.model_inputs] == [ort_model] and prof.info.status == "FINISHED"


def cli(*args) -> subprocess.CompletedProcess:
    """`edgepack ARGS` in this process (the reading commands: no interpreter start per call)."""
    import contextlib
    import io

    from edgepack.cli import main

    out, err = io.StringIO(), io.StringIO()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([str(a) for a in args])
    finally:  # main() installs edgepack's signal handlers: pytest's come back
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def _check_commands(cwd: Path, run_id: str) -> None:
    listed = json.loads(cli("runs", "list", "--json").stdout)
    assert len(listed) == 2 and {x["command"] for x in listed} == {"compile"}
    only = json.loads(cli("runs", "list", "--json", "--filter", "params.backends = 'openvino'").stdout)
    assert len(only) == 1 and only[0]["backend"] == "openvino"
    bad = cli("runs", "list", "--filter", "params.x ~ 3")
    assert bad.returncode == 1 and len(message_lines(bad.stderr)) == 1 and "Traceback" not in bad.stderr
    shown = json.loads(cli("runs", "show", run_id[:8], "--json").stdout)
    assert len(shown["nested"]) == 2 and shown["params"]["target"] == "x86-vnni"
    r = cli("runs", "compare", *(x["run_id"] for x in listed), "--plot", "cmp.png")
    assert r.returncode == 0 and (cwd / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    r = cli("registry", "promote", "m-x86-vnni", "1", "production")
    assert r.returncode == 0, r.stderr
    shown = json.loads(cli("registry", "show", "m-x86-vnni", "--json").stdout)
    assert [v["aliases"] for v in shown["versions"]] == [["production"], ["candidate"]]
    r = cli("lineage", "show", "m-x86-vnni@production")
    assert r.returncode == 0 and sha256_file(cwd / "m.onnx")[:12] in r.stdout, r.stderr
    _check_bundle_promotion(cwd)
    r = run_cli("reproduce", run_id, "-o", "again", "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    items = {i["item"]: i["match"] for i in json.loads(r.stdout)["items"]}
    assert items["source sha256"] and items["onnxruntime artifact sha256"] and items["openvino.size_bytes"]


def _check_bundle_promotion(cwd: Path) -> None:
    """promote --bundle: the bundle must hold the version's artifact; its digest is tagged and it
    joins the lineage (artifact -> bundle). The bundle is verified first (a changed byte: refused)."""
    for name, out, backend in (("good.tar.gz", "out-ov", "openvino"), ("wrong.tar.gz", "out", "onnxruntime")):
        r = run_cli("package", out, "--artifact", backend, "-o", name, cwd=cwd)
        assert r.returncode == 0, r.stderr[-2000:]
    tampered = cwd / "tampered"
    assert run_cli("package", "out-ov", "--artifact", "openvino", "-o", tampered, cwd=cwd).returncode == 0
    xml = next(tampered.rglob("*.xml"))
    xml.write_bytes(xml.read_bytes().replace(b"<net", b"<NET", 1))
    r = cli("registry", "promote", "m-x86-vnni", "2", "production", "--bundle", str(tampered))
    assert r.returncode == 1 and "failed verification (exit 5)" in r.stderr, r.stderr
    r = cli("registry", "promote", "m-x86-vnni", "2", "production", "--bundle", "wrong.tar.gz")
    assert r.returncode == 1 and "does not hold version 2's artifact" in r.stderr
    r = cli("registry", "promote", "m-x86-vnni", "2", "production", "--bundle", "good.tar.gz")
    assert r.returncode == 0, r.stderr
    shown = json.loads(cli("registry", "show", "m-x86-vnni", "--json").stdout)
    assert shown["versions"][1]["aliases"] == ["candidate", "production"]
    assert shown["versions"][1]["tags"]["bundle_sha256"] == sha256_file(cwd / "good.tar.gz")
    lineage = json.loads(cli("lineage", "show", "good.tar.gz", "--json").stdout)
    assert lineage["role"] == "bundle" and lineage["inputs"][0]["role"] == "artifact"
    assert lineage["inputs"][0]["inputs"][0]["sha256"] == sha256_file(cwd / "m.onnx")


def test_unreachable_or_locked_store_costs_one_warning(tracked, monkeypatch):
    cwd = tracked
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli("compile", "m.onnx", "-t", "x86-vnni", "-b", "onnxruntime", "-o", "out", *QUICK,
                "--tracking-uri", f"http://127.0.0.1:{port}", cwd=cwd)
    assert r.returncode == 0 and (cwd / "out" / "report.json").is_file()
    assert [ln for ln in message_lines(r.stderr) if "warning" in ln] == [ln for ln in message_lines(r.stderr)
                                                                          if "tracking" in ln]
    assert len([ln for ln in message_lines(r.stderr) if "tracking" in ln]) == 1

    # a store another process holds locked: the writes back off, then give up with one line
    import sqlite3

    db = cwd / "locked" / "mlflow.db"
    db.parent.mkdir()
    lock = sqlite3.connect(db)
    lock.execute("BEGIN EXCLUSIVE")
    monkeypatch.setenv("EDGEPACK_TRACK_LOCK_WAIT_S", "1")
    try:
        r = run_cli("compile", "m.onnx", "-t", "x86-vnni", "-b", "onnxruntime", "-o", "out2", *QUICK,
                    "--tracking-uri", f"sqlite:///{db}", cwd=cwd)
    finally:
        lock.rollback()
        lock.close()
    assert r.returncode == 0 and (cwd / "out2" / "report.json").is_file(), r.stderr[-2000:]
    lines = [ln for ln in message_lines(r.stderr) if "tracking" in ln]
    assert len(lines) == 1 and "locked" in lines[0], r.stderr


def test_a_search_is_one_run_with_a_child_run_per_point_and_a_resume_adds_none(tracked):
    """Two points of the small graph: the search's run holds the spec and the chosen point, each
    point is a child run with its knobs, figures and verdict; running the finished search again
    reopens the same run and records no trial twice."""
    import numpy as np

    pytest.importorskip("optuna")
    cwd = tracked
    save_npz(cwd / "calib.npz", {"x": np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)})
    args = ("search", "m.onnx", "--calib", "calib.npz", "--precision", "fp32", "--precision", "int8", "--trials", "2",
            "--repeats", "1", "--threads", "1", "-o", "out", *QUICK)
    r = run_cli(*args, cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    client, exp = _client(_sqlite(cwd))
    (parent,) = _runs(client, exp, "parent")
    children = _runs(client, exp, "trial")
    target = json.loads((cwd / "out" / "search.json").read_text())["targets"][0]
    firsts = {}
    for row in target["trials"]:  # a point's first trial computed it; a repeat proposal is cached
        firsts.setdefault(json.dumps(row["point"], sort_keys=True), row)
    assert len(children) == len(firsts) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for child in children:
        row = next(r for r in firsts.values() if r["trial"] == int(child.data.tags["edgepack.trial"]))
        assert child.data.params["precision"] == row["point"]["precision"] and child.data.params["backend"] == "onnxruntime"
        assert child.data.metrics["p50_ms"] == pytest.approx(row["values"]["p50_ms"])
        assert child.data.metrics["p50_ci95_ms"] == pytest.approx(row["ci95_ms"])
        assert child.data.metrics["size_mb"] == pytest.approx(row["values"]["size_mb"])
        assert child.data.tags["edgepack.feasible"] == str(row["feasible"]) and child.data.tags["edgepack.target"] == "host"
        assert [a.path for a in client.list_artifacts(child.info.run_id, "edgepack")] == [
            "edgepack/report.json", "edgepack/request.json"]
    assert parent.info.status == "FINISHED" and parent.data.params["space.precision"] == '["fp32", "int8"]'
    assert parent.data.tags["edgepack.chosen.host"] == str(target["chosen"]["trial"])
    assert parent.data.metrics["front_size"] == len(target["front"])
    assert parent.data.metrics["chosen.p50_ms"] == pytest.approx(target["chosen"]["values"]["p50_ms"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "search/host")} >= {
        "search/host/pareto.md", "search/host/pareto.png"}

    again = run_cli(*args, cwd=cwd)
    assert again.returncode == 0 and "from an earlier run" in again.stderr, again.stderr[-2000:]
    client, exp = _client(_sqlite(cwd))
    (same,) = _runs(client, exp, "parent")
    assert same.info.run_id == parent.info.run_id and same.info.status == "FINISHED"
    assert sorted(c.info.run_id for c in _runs(client, exp, "trial")) == sorted(c.info.run_id for c in children)
    _check_search_reproduce(cwd, client, parent, children, target)


def _check_search_reproduce(cwd: Path, client, parent, children, target: dict) -> None:
    """reproduce on the search's run compiles its chosen point again and compares it with that
    point's trial run; on a trial run, that trial's point; a search run without a chosen point
    is refused in one line."""
    recorded = json.loads((cwd / "out" / "host" / "chosen" / "report.json").read_text())
    chosen = recorded["artifacts"][0]
    uri = ("--tracking-uri", _sqlite(cwd))
    r = cli("reproduce", parent.info.run_id, "-o", cwd / "again", "--json", *uri)
    again = json.loads((cwd / "again" / "report.json").read_text())
    # the search timed its INT8 candidates with pinned answers; the rerun times them for real, so
    # an INT8 point may pick another candidate graph under load: then (only then) hashes differ
    def picked(report):
        return [(report.get("quantization") or {}).get(k) for k in ("decision", "format")]

    same_graph = picked(again) == picked(recorded)
    assert r.returncode == (0 if same_graph else 4), r.stderr[-2000:]
    items = {i["item"]: i for i in json.loads(r.stdout)["items"]}
    assert items["onnxruntime artifact sha256"]["recorded"] == chosen["sha256"]
    assert items["source sha256"]["match"], items
    assert items["onnxruntime artifact sha256"]["match"] == same_graph, items
    assert items["onnxruntime.p50_ms"]["reproduced"] > 0  # reported, not judged
    if same_graph:
        assert items["onnxruntime.size_bytes"]["match"] and again["artifacts"][0]["sha256"] == chosen["sha256"]
    other = next(c for c in children if c.data.tags["edgepack.trial"] != str(target["chosen"]["trial"]))
    r = cli("reproduce", other.info.run_id[:8], "-o", cwd / "other", "--json", *uri)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((cwd / "other" / "report.json").read_text())
    assert report["artifacts"][0]["precision"] == other.data.params["precision"] != chosen["precision"]
    assert all(i["match"] for i in json.loads(r.stdout)["items"] if "sha256" in i["item"])
    client.delete_tag(parent.info.run_id, "edgepack.chosen_point.host")
    r = cli("reproduce", parent.info.run_id, "-o", cwd / "none", *uri)
    assert r.returncode == 1 and "chose no point" in r.stderr and len(message_lines(r.stderr)) == 1, r.stderr
    assert not (cwd / "none").exists()


RECORD_ROWS = """
import json, pathlib, sys, time
from edgepack.tracking.recorder import RunRecorder
from edgepack.tracking.store import Store
uri, start, rows, me, folder = json.loads(sys.argv[1])
rec = RunRecorder(Store(uri))
rec.handle({"op": "start", **start})
folder = pathlib.Path(folder)
(folder / f"open-{me}").touch()
while len(list(folder.glob("open-*"))) < 2:  # both have found (or made) the run: neither saw a point yet
    time.sleep(0.05)
for row in rows:
    rec.handle({"op": "event", "kind": "stage_done", "data": row})
rec.handle({"op": "end", "status": "FINISHED"})
"""


def test_two_processes_recording_one_search_record_each_point_once(tmp_path):
    """Two processes resuming one search at once: each recorder opens the search's run before the
    other records anything, so each believes every point is new; the search's lock and a second
    look at the store inside it leave one search run and one child run per point."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    start = {"command": "search", "cwd": str(tmp_path), "name": "search s",
             "search": {"key": "a" * 32, "output_dir": str(tmp_path / "out"), "trials": 3,
                        "spec": {"name": "s", "model": "m.onnx"}}}
    rows = [{"search": "s", "target": "host", "trial": i, "key": f"host#{i:016x}", "params": {"precision": p},
             "values": {"p50_ms": 1.0 + i}, "feasible": True, "cached": False, "status": "built"}
            for i, p in enumerate(("fp32", "int8", "fp16"))]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-c", RECORD_ROWS, json.dumps([uri, start, rows, me, str(tmp_path)])],
                              env=env, stderr=subprocess.PIPE, text=True) for me in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    client, exp = _client(uri)
    (parent,) = _runs(client, exp, "parent")
    children = _runs(client, exp, "trial")
    assert sorted(c.data.tags["edgepack.trial_key"] for c in children) == [r["key"] for r in rows]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}


def test_killed_compile_leaves_no_run_marked_finished(tracked):
    cwd = tracked
    cmd = [sys.executable, "-m", "edgepack", "compile", "m.onnx", "-t", "x86-vnni", "-b", "onnxruntime", "-o", "out",
           "--runs", "5000000", "--no-progress"]  # timing that would take minutes: killed while it runs
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "lowered to canonical ONNX" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, rest
    assert not (cwd / "out").exists()
    client, exp = _client(_sqlite(cwd))
    runs = _runs(client, exp)
    assert runs and {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]


@pytest.mark.slow
def test_runs_from_four_processes_at_once_all_land(tracked):
    """4 processes x 3 compiles into one fresh default store (its first open races too)."""
    cwd = tracked
    script = "; ".join(f"{sys.executable} -m edgepack compile m.onnx -t x86-vnni -b onnxruntime -o out-$1-{i} "
                       "--runs 3 --warmup 0 --no-progress" for i in range(3))
    procs = [subprocess.Popen(["bash", "-c", script, "worker", str(w)], cwd=cwd, stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert not any("warning" in e for e in errors), errors
    client, exp = _client(_sqlite(cwd))
    parents = _runs(client, exp, "parent")
    assert len(parents) == 12 and {r.info.status for r in _runs(client, exp)} == {"FINISHED"}
    assert len(_runs(client, exp, "artifact")) == 12
    assert len(client.search_model_versions("name = 'm-x86-vnni'")) == 12
    outputs = {r.data.tags["edgepack.output_dir"] for r in parents}
    assert outputs == {str(cwd / f"out-{w}-{i}") for w in range(4) for i in range(3)}


@pytest.fixture
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (free port), its own SQLite store, stopped after."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow_cli), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                             "--artifacts-destination", str(folder / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "w"), start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("mlflow server did not start: " + (folder / "server.log").read_text()[-2000:])
            time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_logging_to_a_real_mlflow_server_over_http(tracked, mlflow_server):
    cwd = tracked
    r = run_cli("compile", "m.onnx", "-t", "x86-vnni", "-b", "openvino", "-o", "out", *QUICK,
                "--tracking-uri", mlflow_server, cwd=cwd)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr[-2000:]
    assert not (cwd / "mlruns-edgepack").exists() and not (cwd / "mlruns").exists()
    client, exp = _client(mlflow_server)
    (parent,) = _runs(client, exp, "parent")
    assert parent.info.status == "FINISHED" and parent.data.params["backend"] == "openvino"
    import mlflow

    got = Path(mlflow.artifacts.download_artifacts("models:/m-x86-vnni@candidate", dst_path=str(cwd / "dl"),
                                                   tracking_uri=mlflow_server))
    files = json.loads((cwd / "out" / "report.json").read_text())["artifacts"][0]["files"]
    assert {f.name: sha256_file(f) for f in got.iterdir()} == {n: f["sha256"] for n, f in files.items()}
    r = run_cli("lineage", "show", "m-x86-vnni", "--tracking-uri", mlflow_server, cwd=cwd)
    assert r.returncode == 0 and parent.data.params["source_sha256"][:12] in r.stdout, r.stderr


NETS = """
from edgepack.models.mnist_cnn import MnistCNN

def teacher():
    return MnistCNN(32)

def student():
    return MnistCNN(16)
"""


@pytest.mark.slow
def test_mnist_recipe_lineage_from_artifact_back_to_teacher_weights_and_data(tracked, mnist_flow_splits):
    """The cheapest real recipe (a few hundred digits, one epoch, no gates: lineage, not accuracy,
    is under test) run from the CLI, then walked back from the registered artifact."""
    import torch

    from edgepack.models.mnist_cnn import MnistCNN

    cwd = tracked
    (cwd / "nets.py").write_text(NETS)
    torch.manual_seed(0)
    torch.save(MnistCNN(32).state_dict(), cwd / "teacher.pt")
    for name, (x, y), n in zip(("train", "val", "test"), mnist_flow_splits, (400, 200, 200)):
        save_npz(cwd / f"{name}.npz", {"input": x[:n]}, y[:n])
    stages = [{"distill": {"epochs": 1, "lr": 0.005}},
              {"prune": {"ratio": 0.5, "steps": 1, "finetune": {"epochs": 0}, "max_drop": 1.0}},
              {"quantize": {"mode": "qat", "epochs": 1}},
              {"emit": {"backends": ["onnxruntime"], "precision": "int8"}}]
    recipe = {"name": "mnist", "target": "x86-vnni", "teacher": {"model": "nets.py:teacher", "weights": "teacher.pt"},
              "student": {"model": "nets.py:student"},
              "data": {"train": "train.npz", "val": "val.npz", "test": "test.npz"},
              "measure": {"runs": 10, "warmup": 2}, "stages": stages}
    (cwd / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    r = run_cli("run", "recipe.yaml", "-o", "run", "--no-progress", cwd=cwd)
    assert r.returncode == 0, r.stderr[-3000:]

    from edgepack.tracking.lineage import offline, resolve, walk
    from edgepack.tracking.store import Store

    store = Store(_sqlite(cwd), create=False)
    chain, node = [], walk(store, resolve(store, "mnist-x86-vnni"))
    datasets = {}
    while node is not None:
        chain.append(node)
        datasets.update({(d["context"], d["name"]): d["digest"] for d in node["datasets"]})
        node = node["inputs"][0] if node["inputs"] else None
    assert [n["role"] for n in chain] == ["artifact", "stage", "stage", "stage", "teacher"]
    assert [n["run"]["name"] for n in chain[1:]] == ["03 quantize", "02 prune", "01 distill", "00 teacher"]
    assert chain[0]["sha256"] == json.loads((cwd / "run" / "04-emit" / "report.json").read_text())["artifacts"][0][
        "sha256"]
    teacher = chain[-1]
    assert teacher["weights_sha256"] == sha256_file(cwd / "teacher.pt")
    assert teacher["sha256"] == sha256_file(cwd / "run" / "00-teacher" / "model.onnx")
    for split, context in (("train", "training"), ("val", "validation"), ("test", "evaluation")):
        assert datasets[(context, split)] == sha256_file(cwd / f"{split}.npz")
    assert ("calibration", "train[:300]") in datasets
    client, exp = _client(_sqlite(cwd))
    stages_run = {r.data.tags.get("edgepack.stage"): r for r in _runs(client, exp, "stage")}
    assert set(stages_run) == {"teacher", "distill", "prune", "quantize", "emit"}
    assert {r.info.status for r in _runs(client, exp)} == {"FINISHED"}
    assert 0 < stages_run["quantize"].data.metrics["accuracy"] <= 1
    # the same chain, offline, from the run folder's reports and stage.json files
    node, names = offline(cwd / "run"), []
    while node:
        names.append(node["name"])
        node = node["inputs"][0] if node["inputs"] else None
    assert [n[:2] for n in names] == ["04", "03", "02", "01", "00"] and "teacher" in names[-1]
