"""Devices: the local device runs the same session code as the in-process backend, in a fresh
process, and the worker program needs nothing of edgepack (so a board or a bundle can run it)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgepack.backends import get_backend
from edgepack.backends.sessions import FOLDER as SESSIONS
from edgepack.devices import Device, LocalDevice, for_artifact
from edgepack.devices.base import WORKER, read_outputs, write_job


def _feeds(n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def test_local_outputs_equal_the_in_process_run(small_onnx):
    feeds = _feeds(3)
    device = for_artifact("onnxruntime", small_onnx)
    assert isinstance(device, LocalDevice) and isinstance(device, Device) and device.latency_is_real
    got = device.outputs("onnxruntime", small_onnx, feeds)
    run = get_backend("onnxruntime").runner(small_onnx, 1)
    assert len(got) == 3
    for feed, outs in zip(feeds, got):
        want = run(feed)
        assert len(outs) == len(want) == 1
        np.testing.assert_allclose(outs[0], want[0], rtol=1e-6, atol=1e-7)


def test_local_time_is_the_latency_section(small_onnx):
    lat = LocalDevice().time("onnxruntime", small_onnx, _feeds(2), threads=1, warmup=1, runs=3, progress=False)
    assert set(lat) - {"ci95_ms"} == {"latency_ms", "load_ms", "runtime_import_ms", "throughput_per_s", "memory_mb", "runs",
                        "warmup", "threads", "batch", "process"}
    assert lat["runs"] == 3 and lat["warmup"] == 1 and lat["process"] == "fresh" and lat["batch"] == 1
    assert lat["latency_ms"]["p50"] > 0 and lat["memory_mb"]["peak_rss"] > 0


def test_worker_and_sessions_import_nothing_of_edgepack(small_onnx, tmp_path):
    """Copied alone into a folder and run isolated (-I), the worker computes the outputs without
    loading any edgepack module; no session module even names edgepack in an import."""
    for path in [WORKER, *SESSIONS.glob("*_session.py")]:
        imported = [n.module if isinstance(n, ast.ImportFrom) else a.name
                    for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in (n.names if isinstance(n, ast.Import) else [n])]
        assert not [m for m in imported if m and m.split(".")[0] == "edgepack"], path.name
    for path in (WORKER, get_backend("onnxruntime").session_file(), small_onnx):
        shutil.copy2(path, tmp_path / path.name)
    feeds = _feeds(2)
    config = write_job(tmp_path, tmp_path / "onnxruntime_session.py", tmp_path / "model.onnx", feeds,
                       threads=1, runs=2, outputs=True)
    probe = ("import json, runpy, sys; sys.argv = ['worker.py', sys.argv[1]]\n"
             "try:\n    runpy.run_path('worker.py', run_name='__main__')\n"
             "finally:\n    print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'edgepack')))")
    proc = subprocess.run([sys.executable, "-I", "-c", probe, str(config)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["times_ms"]) == 2 and result["outputs"] == [{"shape": [1, 4], "dtype": "float32"}]
    run = get_backend("onnxruntime").runner(small_onnx, 1)
    for feed, outs in zip(feeds, read_outputs(tmp_path, 2)):
        np.testing.assert_allclose(outs[0], run(feed)[0], rtol=1e-6, atol=1e-7)


def test_tflite_sidecar_name_is_the_session_modules():
    pytest.importorskip("ai_edge_litert")
    from edgepack.backends import tflite
    from edgepack.backends.sessions import tflite_session

    assert tflite.SIDECAR_SUFFIX == tflite_session.SIDECAR_SUFFIX
