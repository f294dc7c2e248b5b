"""Measurement on devices: the worker's settled warm-up and per-op profiles (real ONNX Runtime,
OpenVINO and LiteRT runs in fresh processes), the median's confidence interval, DeviceRun from raw
samples, LiteRT benchmark_model's documented output parsed, the adb transport's command lines and
failures, and a phone bundle's input spec. No timing verdicts: only fields, shapes and invariants."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgepack.bench.benchmark_model import command, op_table, parse
from edgepack.bench.stats import device_run, median_ci, summarize
from edgepack.devices.base import WORKER, DeviceLost, Transport, write_job
from edgepack.devices.local import run_worker
from edgepack.errors import EdgepackError
from edgepack.report.schema import DeviceRun
from helpers import conv_relu

WORKER_KEYS = {"import_ms", "load_ms", "first_ms", "times_ms", "rss_before_load_bytes", "rss_after_bytes",
               "peak_rss_bytes", "outputs"}  # what devices/local.py, qemu.py and the compile flow read


def _worker_module():
    spec = importlib.util.spec_from_file_location("edgepack_worker_under_test", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp: Path, backend: str, artifact: Path, feeds: list[dict], **settings) -> dict:
    from edgepack.backends import get_backend

    job = tmp / f"job-{backend}"
    job.mkdir()
    config = write_job(job, get_backend(backend).session_file(), artifact, feeds, **settings)
    return run_worker([sys.executable, str(WORKER), str(config)], job, lambda n: None, 300)


def _feeds(n: int, shape=(1, 3, 16, 16)) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    """conv_relu as ONNX and as an OpenVINO IR converted from it."""
    import openvino as ov

    folder = tmp_path_factory.mktemp("measure")
    onnx.save(conv_relu(3, 8, 16), str(folder / "model.onnx"))
    ov.save_model(ov.convert_model(str(folder / "model.onnx")), str(folder / "model.xml"))
    return {"onnxruntime": folder / "model.onnx", "openvino": folder / "model.xml"}


# ------------------------------------------------------------------------------ statistics


def test_median_ci_is_the_sign_test_order_statistics():
    """Known answers (1-based order statistics): n=10 -> (x2, x9), n=20 -> (x6, x15),
    n=100 -> (x40, x61); fewer than 6 samples cannot reach 95%."""
    assert median_ci(np.arange(1.0, 11.0)) == [2.0, 9.0]
    assert median_ci(np.arange(1.0, 21.0)) == [6.0, 15.0]
    assert median_ci(np.arange(1.0, 101.0)) == [40.0, 61.0]
    assert median_ci([3.0, 1.0, 2.0, 5.0, 4.0]) is None and median_ci([]) is None
    assert median_ci(np.arange(1.0, 7.0)) == [1.0, 6.0]


def test_median_ci_contains_the_median_of_skewed_samples():
    rng = np.random.default_rng(3)
    for n in (6, 7, 31, 200, 5000):
        x = rng.lognormal(0.0, 0.7, n)
        lo, hi = median_ci(x)
        assert lo <= float(np.median(x)) <= hi and min(x) <= lo and hi <= max(x)


def test_settle_rule_compares_the_medians_of_two_windows():
    settled = _worker_module().settled
    assert settled([1.0] * 9, 5, 0.05) is None  # fewer than 2k
    assert settled([1.0] * 10, 5, 0.05) is True
    assert settled([2.0] * 5 + [1.0] * 5, 5, 0.05) is False
    assert settled([1.0, 1.0, 9.0, 1.0, 1.0] + [1.02] * 5, 5, 0.05) is True  # one outlier is not drift


# ------------------------------------------------------------------------------ worker + runtimes


def test_ort_worker_settles_keeps_phases_apart_and_profiles_ops(graphs, tmp_path):
    traces = set(Path(tempfile.gettempdir()).glob("edgepack-ort-profile-*"))
    raw = _run(tmp_path, "onnxruntime", graphs["onnxruntime"], _feeds(2), threads=1, warmup=2, warmup_max=40,
               runs=30, op_profile=True, op_profile_runs=5)
    assert WORKER_KEYS <= set(raw)
    assert 2 <= raw["warmup_done"] <= 40 and len(raw["warmup_ms"]) == raw["warmup_done"]
    assert raw["warmup_settled"] in (True, False) and (raw["warmup_settled"] or raw["warmup_done"] == 40)
    assert len(raw["times_ms"]) == 30 and min(raw["times_ms"]) > 0 and raw["load_ms"] > 0 and raw["first_ms"] > 0
    assert raw["peak_rss_bytes"] >= raw["rss_after_bytes"] > 0
    ops = raw["op_profile"]
    assert ops and {"Conv"} <= {o["type"] for o in ops} and all(o["ms"] >= 0 and o["calls"] > 0 for o in ops)
    assert [o["ms"] for o in ops] == sorted((o["ms"] for o in ops), reverse=True)
    assert set(Path(tempfile.gettempdir()).glob("edgepack-ort-profile-*")) <= traces  # the trace was removed

    run = device_run(raw, "local", "local", False, {"arch": "x86_64", "system": "Linux"}, threads=1, batch=1)
    lat = run.latency_ms
    assert lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max and lat.first == raw["first_ms"]
    lo, hi = run.ci95_ms
    assert lo <= lat.p50 <= hi
    assert run.samples_ms == raw["times_ms"] and run.runs == 30 and run.warmup == raw["warmup_done"]
    assert run.cold_load_ms == raw["load_ms"] and run.memory_mb.peak_rss > 0 and run.throughput_per_s > 0
    assert DeviceRun.model_validate(json.loads(json.dumps(run.to_json()))) == run

    section = summarize(raw, threads=1, warmup=2, batch=1)
    assert section["ci95_ms"][0] <= section["latency_ms"]["p50"] <= section["ci95_ms"][1]


def test_fixed_warmup_without_a_cap_and_no_profile_unless_asked(graphs, tmp_path):
    raw = _run(tmp_path, "onnxruntime", graphs["onnxruntime"], _feeds(1), threads=1, warmup=3, runs=4)
    assert raw["warmup_done"] == 3 and raw["warmup_settled"] is None and len(raw["times_ms"]) == 4
    assert "op_profile" not in raw and "op_profile_note" not in raw


def test_openvino_worker_profiles_with_performance_counters(graphs, tmp_path):
    raw = _run(tmp_path, "openvino", graphs["openvino"], _feeds(2), threads=1, warmup=1, runs=5, op_profile=True,
               op_profile_runs=3)
    assert WORKER_KEYS <= set(raw) and len(raw["times_ms"]) == 5
    ops = raw["op_profile"]
    assert "Convolution" in {o["type"] for o in ops} and all(o["exec_type"] and o["calls"] > 0 for o in ops)


def test_tvm_worker_times_each_vm_call(tmp_path, tvm_cache):
    """TVM's VM has no profiler; its instrument hook gives each kernel's and builtin's time."""
    from edgepack.backends.tvm import TvmBackend
    from edgepack.targets import load_profile

    (tmp_path / "out").mkdir()
    artifact = TvmBackend({"tune_seconds": 0}).emit(conv_relu(3, 8, 16), tmp_path / "out", load_profile("host"))
    raw = _run(tmp_path, "tvm", artifact, _feeds(1), threads=1, warmup=1, runs=3, op_profile=True, op_profile_runs=3)
    ops = raw["op_profile"]
    kernels = [o for o in ops if o["type"] != "vm.builtin"]
    assert kernels and any("conv2d" in o["type"] for o in kernels) and all(o["calls"] > 0 for o in ops)
    assert {"vm.builtin"} <= {o["type"] for o in ops}


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> Path:
    """A Conv2D+ReLU .tflite (NHWC 1x8x8x3 -> 1x8x8x4) converted by TensorFlow in a child
    process, so TensorFlow is never imported into the test process."""
    path = tmp_path_factory.mktemp("tflite") / "model.tflite"
    code = textwrap.dedent(f"""
        import tensorflow as tf
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
        def f(x):
            return tf.nn.relu(tf.nn.conv2d(x, tf.ones([3, 3, 3, 4]) * 0.1, 1, "SAME"))
        conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
        open({str(path)!r}, "wb").write(conv.convert())
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    return path


def test_tflite_worker_says_its_python_api_has_no_op_profiler(tiny_tflite, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    name = Interpreter(model_path=str(tiny_tflite)).get_input_details()[0]["name"]
    feeds = [{name: np.ones((1, 8, 8, 3), np.float32)}]
    raw = _run(tmp_path, "tflite", tiny_tflite, feeds, threads=1, warmup=1, runs=3, op_profile=True)
    assert len(raw["times_ms"]) == 3 and "op_profile" not in raw
    assert "benchmark_model" in raw["op_profile_note"] and "no per-op profiler" in raw["op_profile_note"]


def test_phone_input_spec_carries_normalization_and_labels(tiny_tflite):
    from edgepack.devices.android import phone_input_spec

    imagenet = {"size": [8, 8], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    spec = phone_input_spec(tiny_tflite, imagenet, labels=["a", "b", "c", "d"])
    assert spec["inputs"][0]["shape"] == [1, 8, 8, 3] and spec["inputs"][0]["dtype"] == "float32"
    norm = spec["preprocess"]["normalization"]
    np.testing.assert_allclose(norm["mean"], [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_allclose(norm["std"], [58.395, 57.12, 57.375], rtol=1e-6)
    assert spec["labels"] == ["a", "b", "c", "d"] and "not embedded" in spec["metadata"]
    json.dumps(spec)
    with pytest.raises(EdgepackError, match="3 labels for an output of 4 classes"):
        phone_input_spec(tiny_tflite, None, labels=["a", "b", "c"])


# ------------------------------------------------------------------------------ benchmark_model

# tensorflow/tensorflow, tensorflow/lite/tools/benchmark/README.md ("Profiling model operators"):
# the documented op-profiling output (rows trimmed; the older summary line format)
README_OUTPUT = """
============================== Run Order ==============================
\t             [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t    0.000\t    4.269\t    4.269\t  0.107%\t  0.107%\t     0.000\t        0\t[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]
\t       DEPTHWISE_CONV_2D\t    4.270\t    2.150\t    2.150\t  0.054%\t  0.161%\t     0.000\t        0\t[MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6]
\t                 CONV_2D\t    6.421\t    6.107\t    6.107\t  0.153%\t  0.314%\t     0.000\t        0\t[MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6]
\t                 SOFTMAX\t   79.443\t    0.029\t    0.029\t  0.001%\t  1.993%\t     0.000\t        0\t[MobilenetV1/Predictions/Softmax]

============================== Top by Computation Time ==============================
\t             [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t    6.421\t    6.107\t    6.107\t  0.153%\t  0.153%\t     0.000\t        0\t[MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6]

Number of nodes executed: 31
Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed


Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
"""

# NobuoTsukamoto/meta-tensorflow-lite, doc/tensorflow-lite-benchmark.md: benchmark_model of
# TensorFlow 2.21 with --enable_op_profiling=true (rows trimmed)
V221_OUTPUT = """
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         AllocateTensors\t            0.000\t    1.356\t    1.356\t100.000%\t100.000%\t     0.000\t        1\tAllocateTensors/0

Timings (microseconds): count=1 curr=1356
Memory (bytes): count=0
1 nodes observed



Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t            0.066\t   87.754\t   60.957\t  2.066%\t  2.066%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0
\t       DEPTHWISE_CONV_2D\t           61.033\t   53.628\t   49.870\t  1.691%\t  3.757%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6]:1
\t                 CONV_2D\t          110.912\t  134.346\t  147.808\t  5.011%\t  8.768%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6]:2
\t                 SOFTMAX\t         2950.011\t    0.230\t    0.233\t  0.008%\t100.000%\t     0.000\t        1\t[MobilenetV1/Predictions/Reshape_1]:30

============================== Top by Computation Time ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t          110.912\t  134.346\t  147.808\t  5.011%\t  8.768%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6]:2

Number of nodes executed: 31
Timings (microseconds): count=50 first=2989660 curr=2912978 min=2727203 max=3189476 avg=2.9499e+06 std=109770
Memory (bytes): count=0
31 nodes observed
"""

# benchmark_model.cc's log lines with their "INFO: " prefix and the peak line printed with
# --report_peak_memory_footprint=true (as quoted in a public issue about a GPU benchmark)
INFO_OUTPUT = """
INFO: Initialized session in 3.337ms.
INFO: count=9 first=81913 curr=55502 min=55502 max=81913 avg=58984.7 std=8115
INFO: count=1061 first=56576 curr=56299 min=54669 max=60236 avg=56265.8 std=982
INFO: Inference timings in us: Init: 3337, First inference: 81913, Warmup (avg): 58984.7, Inference (avg): 56265.8
INFO: Memory footprint delta from the start of the tool (MB): init=2.43359 overall=8.67578
INFO: Overall peak memory footprint (MB) via periodic monitoring: 93.2383
"""


def test_benchmark_model_v221_output_parses_into_a_device_run():
    raw = parse(V221_OUTPUT)
    assert raw["load_ms"] == pytest.approx(17.187) and raw["first_ms"] == pytest.approx(3512.391)
    assert raw["warmup"] == 1 and raw["runs"] == 50 and raw["times_ms"] == []
    s = raw["summary_ms"]
    assert s["avg"] == pytest.approx(2950.34) and s["min"] == pytest.approx(2727.568) and s["std"] == pytest.approx(109.798)
    assert s["min"] <= s["avg"] <= s["max"] and s["warmup_avg"] == pytest.approx(3512.39)
    assert raw["memory_footprint_mb"] == {"init": 4.21094, "overall": 46.0859}
    ops = raw["op_profile"]  # the regular runs' table, not the initialization's AllocateTensors
    assert [o["op"] for o in ops][0] == "MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6"
    assert {o["type"] for o in ops} == {"CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX"} and len(ops) == 4
    assert ops[0]["ms"] == pytest.approx(147.808) and ops[0]["calls"] == 1

    run = device_run(raw, "pixel", "adb", False, None, threads=4, batch=1)
    assert run.runner == "benchmark_model" and run.latency_ms is None and run.ci95_ms is None
    assert run.runs == 50 and run.warmup == 1 and run.first_ms == pytest.approx(3512.391)
    assert run.cold_load_ms == pytest.approx(17.187) and run.memory_mb is None
    assert "latency_ms" not in run.to_json() and run.to_json()["summary_ms"]["count"] == 50


def test_benchmark_model_readme_and_logged_formats():
    raw = parse(README_OUTPUT)
    assert raw["load_ms"] == pytest.approx(38.467) and raw["summary_ms"]["inference_avg"] == pytest.approx(79.7609)
    assert raw["first_ms"] == pytest.approx(79.449)  # that format prints none: the regular runs' first
    assert [o["op"] for o in op_table(README_OUTPUT)][:2] == ["MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6",
                                                             "MobilenetV1/MobilenetV1/Conv2d_0/Relu6"]
    info = parse(INFO_OUTPUT)
    assert info["warmup"] == 9 and info["runs"] == 1061 and info["first_ms"] == pytest.approx(81.913)
    assert info["memory_footprint_mb"] == {"init": 2.43359, "overall": 8.67578, "peak": 93.2383}
    assert "op_profile" not in info
    with pytest.raises(EdgepackError, match="no inference timings; its last line: Segmentation fault"):
        parse("STARTING!\nSegmentation fault\n")


def test_benchmark_model_command_line():
    argv = command("/data/local/tmp/benchmark_model", "/data/local/tmp/edgepack/j/model.tflite", threads=4, runs=50,
                   warmup=5, op_profile=True, extra={"use_xnnpack": False})
    assert argv == ["/data/local/tmp/benchmark_model", "--graph=/data/local/tmp/edgepack/j/model.tflite",
                    "--num_threads=4", "--num_runs=50", "--warmup_runs=5", "--min_secs=0", "--warmup_min_secs=0",
                    "--enable_op_profiling=true", "--use_xnnpack=false"]
    with pytest.raises(EdgepackError, match="runs must be an integer >= 1"):
        command("bm", "m.tflite", runs=0)
    with pytest.raises(EdgepackError, match="not a flag name"):
        command("bm", "m.tflite", extra={"graph; rm -rf /": 1})


# ------------------------------------------------------------------------------ adb transport

# A stand-in for the adb tool (no phone here): `-s SERIAL get-state|shell CMD|push SRC.. DST|pull SRC DST`
# served from this machine, with the phone's /system/bin/sh played by /bin/sh. Serial FAKE1 is a
# connected phone, DROP one whose connection drops mid-command, anything else is absent.
FAKE_ADB = """\
import shutil, subprocess, sys
from pathlib import Path
args = sys.argv[1:]
with open(__file__ + ".log", "a") as log:
    log.write(repr(args) + "\\n")
serial, verb, rest = args[1], args[2], args[3:]
if serial not in ("FAKE1", "DROP"):
    sys.exit(print(f"error: device '{serial}' not found", file=sys.stderr) or 1)
if verb == "get-state":
    print("device")
elif verb == "shell":
    if serial == "DROP":
        print("partial output", flush=True)
        sys.exit(print("error: closed", file=sys.stderr) or 255)
    sys.exit(subprocess.run(["sh", "-c", " ".join(rest)]).returncode)
elif verb == "push":
    for src in rest[:-1]:
        (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, Path(rest[-1]) / Path(src).name)
elif verb == "pull":
    shutil.copy2(rest[0], rest[1])
"""


@pytest.fixture
def fake_adb(tmp_path) -> Path:
    path = tmp_path / "adb"
    path.write_text(f"#!{sys.executable}\n" + FAKE_ADB)
    path.chmod(0o755)
    return path


def test_adb_missing_tool_or_phone_is_one_line(fake_adb, tmp_path):
    from edgepack.devices.adb import AdbTransport

    with pytest.raises(EdgepackError, match=r"^adb:X: the adb tool \(/nonexistent/adb\) is not installed"):
        AdbTransport("X", adb="/nonexistent/adb").run(["true"], 10)
    with pytest.raises(EdgepackError, match=r"no usable phone with that serial \(error: device 'GONE' not found\)"):
        AdbTransport("GONE", adb=str(fake_adb)).push(tmp_path, "/data/local/tmp/edgepack/j")
    with pytest.raises(EdgepackError, match="serial"):
        AdbTransport("two words")


def test_adb_round_trip_exit_codes_and_lines(fake_adb, tmp_path):
    from edgepack.devices.adb import AdbTransport

    root = tmp_path / "phone" / "edgepack"
    t = AdbTransport("FAKE1", adb=str(fake_adb), root=str(root))
    assert isinstance(t, Transport) and t.name == "adb:FAKE1" and t.job_dir("j1") == f"{root}/j1"
    job = tmp_path / "job"
    job.mkdir()
    (job / "a.txt").write_text("hello\n")
    t.push(job, t.job_dir("j1"))
    lines = []
    rc, _ = t.run(["sh", "-c", 'cat "$1"; echo "n=$N"; exit 3', "sh", f"{root}/j1/a.txt"], 30, lines.append,
                  env={"N": "two words"})
    assert rc == 3 and lines == ["hello", "n=two words"]  # the markers never reach on_line
    rc, _ = t.run(["true"], 30)
    assert rc == 0
    t.pull(f"{root}/j1/a.txt", tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "hello\n"
    with pytest.raises(EdgepackError, match="refusing to remove"):
        t.remove("/data")
    t.remove(t.job_dir("j1"))
    assert not (root / "j1").exists()
    log = (fake_adb.parent / "adb.log").read_text()
    assert "['-s', 'FAKE1', 'push'," in log and "echo __edgepack_rc=$?" in log


def test_adb_deadline_kills_the_command_and_a_drop_is_device_lost(fake_adb, tmp_path):
    from edgepack.devices.adb import AdbTransport

    t = AdbTransport("FAKE1", adb=str(fake_adb), root=str(tmp_path / "edgepack"))
    marker = tmp_path / "survived"
    with pytest.raises(EdgepackError, match="did not finish within 1 s"):
        t.run(["sh", "-c", f"sleep 2; touch {marker}"], 1)
    with pytest.raises(DeviceLost, match="connection lost before the command finished \\(error: closed\\)"):
        AdbTransport("DROP", adb=str(fake_adb)).run(["true"], 30)
    import time

    time.sleep(1.5)
    assert not marker.exists()  # killed on the "phone", not only the local adb process


@pytest.mark.skipif(shutil.which("adb") is None, reason="the adb tool is not installed (Debian: apt-get install adb)")
def test_real_adb_without_that_phone_is_one_line(tmp_path, monkeypatch):
    """The real adb tool, on a private server port (stopped after), asked for a phone that is
    not there: its own message in one line. (No phone was ever attached to this test.)"""
    from edgepack.devices.adb import AdbTransport

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    try:
        with pytest.raises(EdgepackError, match=r"^adb:EDGEPACK0: no usable phone with that serial "
                                                r"\(error: device 'EDGEPACK0' not found\)"):
            AdbTransport("EDGEPACK0").run(["true"], 10)
    finally:
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)


def test_worker_job_through_the_adb_transport(fake_adb, graphs, tmp_path):
    """A worker job as a phone with Python would get it: pushed, run, its result pulled."""
    from edgepack.backends import get_backend
    from edgepack.devices.adb import AdbTransport

    t = AdbTransport("FAKE1", adb=str(fake_adb), root=str(tmp_path / "phone" / "edgepack"))
    stage, remote = tmp_path / "stage", t.job_dir("w1")
    stage.mkdir()
    for path in (WORKER, get_backend("onnxruntime").session_file(), graphs["onnxruntime"]):
        shutil.copy2(path, stage / path.name)
    config = write_job(stage, stage / "onnxruntime_session.py", stage / "model.onnx", _feeds(1), threads=1, runs=7)
    config.write_text(config.read_text().replace(str(stage), remote))
    t.push(stage, remote)
    progress = []
    rc, err = t.run([sys.executable, f"{remote}/worker.py", f"{remote}/config.json"], 120, progress.append)
    assert rc == 0, err
    assert json.loads(progress[0])["first_ms"] > 0 and json.loads(progress[-1])["progress"] == 7
    t.pull(f"{remote}/result.json", tmp_path / "result.json")
    run = device_run(json.loads((tmp_path / "result.json").read_text()), "adb:FAKE1", "adb", False, None, 1, 1)
    assert run.runs == 7 and run.kind == "adb" and run.ci95_ms is not None
    t.remove(remote)
    assert not Path(remote).exists()


# ------------------------------------------------------------------------------ phones: benchmark_model

# A stand-in for LiteRT's benchmark_model binary (no real one here): it records its arguments,
# refuses a --graph that was not pushed, and prints the documented output (V221_OUTPUT) verbatim.
FAKE_BENCHMARK_MODEL = """#!/bin/sh
echo "$@" >> "$0.args"
for a in "$@"; do case "$a" in --graph=*) test -f "${a#--graph=}" || { echo "no model ${a#--graph=}" >&2; exit 2; };; esac; done
cat "$0.out"
"""


def test_phone_runs_tflite_through_benchmark_model(fake_adb, tiny_tflite, graphs, tmp_path, monkeypatch):
    """devices.yaml decides: `pixel` (kind adb, a benchmark_model path, no Python) runs the .tflite
    with the binary; `pyphone` (no benchmark_model) with the Python worker. No phone and no real
    benchmark_model ran: the stand-in adb serves this machine's sh, the stand-in binary prints the
    documented output."""
    from edgepack.api import profile_artifact
    from edgepack.compiler import BenchSettings
    from edgepack.devices import DeviceOptions, resolve

    bm = tmp_path / "benchmark_model"
    bm.write_text(FAKE_BENCHMARK_MODEL)
    bm.chmod(0o755)
    Path(f"{bm}.out").write_text(V221_OUTPUT)
    phone = tmp_path / "phone"
    devices = [{"name": "pixel", "kind": "adb", "serial": "FAKE1", "workdir": str(phone / "bm"),
                "benchmark_model": str(bm), "python": "/nonexistent/python3"},
               {"name": "pyphone", "kind": "adb", "serial": "FAKE1", "workdir": str(phone / "py"),
                "python": sys.executable}]
    (tmp_path / "devices.yaml").write_text(json.dumps({"devices": devices}))
    monkeypatch.setenv("PATH", f"{fake_adb.parent}{os.pathsep}{os.environ['PATH']}")  # `adb` is the stand-in
    report = profile_artifact(tiny_tflite, "arm64", None, None, BenchSettings(None, 2, 1), tmp_path / "p", False,
                              False, DeviceOptions(("pixel", "pyphone"), str(tmp_path / "devices.yaml")))
    pixel, pyphone = report.artifacts[0].devices
    assert (pixel.device, pixel.kind, pixel.runner) == ("pixel", "adb", "benchmark_model")
    assert pixel.runs == 50 and pixel.summary_ms["avg"] == pytest.approx(2950.34) and pixel.latency_ms is None
    assert pixel.cold_load_ms == pytest.approx(17.187) and pixel.memory_footprint_mb["overall"] == 46.0859
    assert pixel.op_profile and pixel.parity is None and "no parity" in pixel.note
    env = pixel.environment
    assert env.python is None and env.arch == os.uname().machine and env.runtimes == {"benchmark_model": str(bm)}
    (args,) = Path(f"{bm}.args").read_text().splitlines()  # arm64's 50 runs, the 2 warm-ups and 1 thread asked
    assert f"--graph={phone}/bm/job-" in args and "/model.tflite --num_threads=1 --num_runs=50 --warmup_runs=2" in args
    assert (pyphone.runner, pyphone.runs, len(pyphone.samples_ms)) == ("worker", 50, 50)
    assert pyphone.parity.max_abs_diff <= 1e-5  # the worker on the "phone" against this host's outputs
    md = (tmp_path / "p" / "report.md").read_text()
    assert "| tflite | pixel (adb) |" in md and "| avg " in md and "- pixel: LiteRT benchmark_model" in md
    assert sorted(p.name for p in (phone / "bm").iterdir()) == [] == sorted(p.name for p in (phone / "py").iterdir())
    with pytest.raises(EdgepackError, match="pixel: no Python at '/nonexistent/python3'"):
        resolve("pixel", tmp_path / "devices.yaml").check("onnxruntime", graphs["onnxruntime"])  # not TFLite
    bm.unlink()
    with pytest.raises(EdgepackError, match=f"pixel: no executable benchmark_model at {bm} on the device"):
        resolve("pixel", tmp_path / "devices.yaml").check("tflite", tiny_tflite)
