"""The `edgepack` CLI as a user runs it: `python -m edgepack ...` in a subprocess.

MobileNetV2 is compiled twice in the whole file: once for the happy path (with --json, so one
run checks stdout and the files on disk) and once for the SIGTERM test. Everything else that
needs a compile uses a tiny conv net written into a `file.py:factory`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers import STEP_LINE, message_lines, run_cli

BENCH = ("--runs", "20", "--warmup", "2")
LATENCY_KEYS = ("first", "p50", "p90", "p99", "mean", "std", "min", "max")

NET_PY = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def make():
    torch.manual_seed(0)
    return Net()


def boom():
    raise RuntimeError("factory exploded")


def not_a_module():
    return 42


class Two(nn.Module):
    def forward(self, a, b):
        return a * 2 + b


def two():
    return Two()
'''


class Evil:
    """Anything that is not plain tensors: weights_only=True must refuse to unpickle it."""


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ws(tmp_path_factory, mobilenet_onnx, sample_sets) -> dict:
    """Inputs for the whole module: the models, broken files and data sets a user might pass."""
    import torch

    d = tmp_path_factory.mktemp("cli_ws")
    net_py = d / "net.py"
    net_py.write_text(NET_PY)
    spec = importlib.util.spec_from_file_location("edgepack_cli_test_net", net_py)
    net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(net)
    # weights that differ from what make() builds, with non-trivial BatchNorm statistics, so a
    # compile that silently ignored --weights would not match the reference below
    torch.manual_seed(1)
    trained = net.Net().eval()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        trained.bn.running_mean.uniform_(-1, 1)
        trained.bn.running_var.uniform_(0.5, 2)
    torch.save(trained.state_dict(), d / "net_weights.pt")
    partial = trained.state_dict()
    partial.pop("fc.weight")
    torch.save(partial, d / "partial.pt")
    torch.save({"state": Evil()}, d / "evil.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace is deprecated
        traced = torch.jit.trace(trained, torch.zeros(1, 3, 32, 32))
    traced.save(str(d / "traced.pt"))

    mnv2 = Path(mobilenet_onnx)
    raw = mnv2.read_bytes()
    (d / "truncated.onnx").write_bytes(raw[: len(raw) // 2])
    (d / "text.onnx").write_text("this is not a model\n")
    (d / "empty.onnx").write_bytes(b"")

    (d / "syntax.yaml").write_text("name: mine\n  description: [oops\n")
    good = (Path(__file__).resolve().parents[1] / "targets" / "x86-vnni.yaml").read_text()
    assert "\n  runs: 50" in good
    (d / "good.yaml").write_text(good.replace("name: x86-vnni", "name: mine"))
    (d / "badvalue.yaml").write_text(good.replace("name: x86-vnni", "name: mine")
                                     .replace("\n  runs: 50", "\n  runs: lots"))

    np.savez(d / "wrong_shape.npz", input=np.zeros((10, 3, 32, 32), np.float32))
    np.savez(d / "two_wrong_name.npz", a=np.zeros((4, 3), np.float32), c=np.zeros((4, 3), np.float32))
    return {"dir": d, "mnv2": mnv2, "net": net, "trained": trained, "photos": sample_sets["photos"],
            "factory": f"{net_py}:make", "net_py": net_py}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, ws):
    """MobileNetV2 compiled once for x86-avx2 with --json: (process, output folder, stdout JSON)."""
    out = tmp_path_factory.mktemp("cli_compile") / "OUT"
    proc = run_cli("compile", ws["mnv2"], "--target", "x86-avx2", "-o", out, *BENCH,
                   "--calib", ws["photos"], "--json", cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc, out, json.loads(proc.stdout)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _ort_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


# ----------------------------------------------------------------------------- happy paths


def test_compile_mobilenet_writes_artifact_and_full_report(compiled, ws):
    _, out, _ = compiled
    assert (out / "report.json").is_file() and (out / "report.md").is_file()
    artifact = out / "onnxruntime" / "model.onnx"
    assert artifact.is_file()
    r = json.loads((out / "report.json").read_text())
    assert r["command"] == "compile" and r["output_dir"] == str(out)

    src = r["source"]
    assert len(src["sha256"]) == 64 and int(src["sha256"], 16) >= 0
    assert src["sha256"] == _sha256(ws["mnv2"])
    assert 3.4e6 <= src["params"] <= 3.6e6
    assert 290e6 <= src["macs"] <= 320e6
    assert src["size_bytes"] == ws["mnv2"].stat().st_size
    assert src["inputs"][0] == {"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}

    assert r["target"]["name"] == "x86-avx2"
    # the profile's default runtimes are built; the faster of the two ships (the report says which)
    assert [a["backend"] for a in r["artifacts"]] == ["onnxruntime", "openvino"]
    assert r["backend"] == r["selected"]["backend"] and r["precision"] == "fp32"
    assert str(ws["photos"]) in r["data"]["source"]  # --calib was used, not random inputs

    lat = r["latency_ms"]
    assert set(LATENCY_KEYS) <= set(lat)
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0 and lat["first"] > 0
    assert r["load_ms"] > 0 and r["memory_mb"]["peak_rss"] > 0 and r["throughput_per_s"] > 0
    for parity in (r["parity"], r["canonical"]["parity"]):
        assert parity["max_abs_diff"] < 1e-4 and parity["top1_agreement"] == 1.0

    assert r["artifacts"][r["selected"]["index"]]["latency_ms"] == lat  # the headline: the shipped artifact's
    art = r["artifacts"][0]
    assert art["path"] == "onnxruntime/model.onnx" and art["sha256"] == _sha256(artifact)
    assert art["runs"] == 20 and art["warmup"] == 2  # --runs/--warmup honoured, not the target's 50/10

    env = r["environment"]
    assert env["cpu"]["model"].strip()
    assert {"onnxruntime", "onnx"} <= set(env["libraries"])
    want = r["target"]["profile"]["benchmark"]["threads"] or env["cpu"]["physical_cores"]
    assert art["threads"] == min(want, env["cpu"]["logical_cores"]) >= 1

    md = (out / "report.md").read_text()
    assert "p50" in md and "x86-avx2" in md and f"{art['threads']} threads" in md


def test_compiled_artifact_computes_what_the_source_computes(compiled, ws):
    """Independent of edgepack's own parity numbers: run both files in ONNX Runtime here."""
    _, out, _ = compiled
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (want,), (got,) = _ort_outputs(ws["mnv2"], x), _ort_outputs(out / "onnxruntime" / "model.onnx", x)
    assert got.shape == want.shape == (1, 1000)
    assert np.abs(got - want).max() < 1e-4 and got.argmax() == want.argmax()


def test_compile_json_stdout_is_the_report(compiled):
    proc, out, printed = compiled
    on_disk = json.loads((out / "report.json").read_text())
    assert set(printed) == set(on_disk)
    assert printed == on_disk


def test_a_compile_in_a_log_prints_one_timestamped_line_per_step(compiled):
    """Not a terminal (CI, nohup): each step is one plain line with the elapsed time, in order."""
    proc, out, report = compiled
    steps = [ln for ln in proc.stderr.splitlines() if STEP_LINE.match(ln)]
    assert [s for s in ("compile ", "lowered to canonical ONNX", "built onnxruntime", "report: ")
            if not any(s in ln for ln in steps)] == []
    elapsed = [float(ln[1:ln.index("s]")]) for ln in steps]
    assert elapsed == sorted(elapsed) and report["schema_version"] == 1


def test_profile_compiled_artifact(compiled, tmp_path):
    _, out, _ = compiled
    artifact = out / "onnxruntime" / "model.onnx"
    proc = run_cli("profile", artifact, *BENCH, "-o", tmp_path / "P", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["command"] == "profile" and r["backend"] == "onnxruntime"
    lat = r["latency_ms"]
    assert set(LATENCY_KEYS) <= set(lat)
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["load_ms"] > 0 and r["memory_mb"]["peak_rss"] > 0
    art = r["artifacts"][0]
    assert art["runs"] == 20 and art["sha256"] == _sha256(artifact)
    assert art["inputs"][0]["shape"] == [1, 3, 224, 224]
    assert json.loads((tmp_path / "P" / "report.json").read_text()) == r
    assert "p50" in (tmp_path / "P" / "report.md").read_text()


def test_inspect_mobilenet_json(ws, compiled):
    proc = run_cli("inspect", ws["mnv2"], "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert 3.4e6 <= s["params"] <= 3.6e6 and 290e6 <= s["macs"] <= 320e6
    layers = s["layers"]
    assert len(layers) > 15  # every layer, not just the --top ones shown in the table
    assert sum(layer["macs"] for layer in layers) == s["macs"]
    assert all(layer["macs"] >= 0 and layer["name"] for layer in layers)
    _, _, report = compiled
    assert (s["params"], s["macs"]) == (report["source"]["params"], report["source"]["macs"])


def test_inspect_table_lists_layers(ws):
    proc = run_cli("inspect", ws["mnv2"])
    assert proc.returncode == 0, proc.stderr
    assert "Conv" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_targets_list_and_show():
    proc = run_cli("targets", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    names = [p["name"] for p in json.loads(proc.stdout)]
    assert {"x86-avx2", "x86-vnni", "arm64", "mobile-npu", "host"} <= set(names)
    assert len(names) == len(set(names))

    proc = run_cli("targets", "show", "x86-vnni", "--json")
    assert proc.returncode == 0, proc.stderr
    p = json.loads(proc.stdout)
    assert p["name"] == "x86-vnni" and p["quantization"]["weights"]["dtype"] == "int8"

    proc = run_cli("targets", "list")
    assert proc.returncode == 0 and "x86-vnni" in proc.stdout + proc.stderr


def _assert_artifact_computes(module, out, seed: int) -> None:
    """The ORT artifact in `out` gives what the torch `module` gives on a random input."""
    import torch

    x = np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    (got,) = _ort_outputs(out / "onnxruntime" / "model.onnx", x)
    assert np.abs(got - want).max() < 1e-4


def test_compile_factory_with_weights(ws, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("compile", ws["factory"], "--weights", ws["dir"] / "net_weights.pt",
                   "--input-shape", "x:1,3,32,32", "--target", "x86-avx2", "-o", out, *BENCH, "--json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["source"]["kind"] == "torch"
    assert r["source"]["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert r["parity"]["max_abs_diff"] < 1e-4 and r["canonical"]["parity"]["max_abs_diff"] < 1e-4
    # the artifact holds the *given* weights: compare with the trained module directly
    _assert_artifact_computes(ws["trained"], out, seed=1)


def test_compile_torchscript(ws, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("compile", ws["dir"] / "traced.pt", "--input-shape", "x:1,3,32,32", "--target",
                   "x86-avx2", "-o", out, *BENCH, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["source"]["kind"] == "torchscript" and r["source"]["sha256"] == _sha256(ws["dir"] / "traced.pt")
    assert r["parity"]["max_abs_diff"] < 1e-4 and r["parity"]["top1_agreement"] == 1.0
    _assert_artifact_computes(ws["trained"], out, seed=2)


def test_existing_output_is_kept_without_force_and_replaced_with_it(ws, tmp_path):
    out = tmp_path / "EXIST"
    out.mkdir()
    marker = out / "marker.bin"
    marker.write_bytes(b"user data \x00\x01")
    before = sorted(p.name for p in tmp_path.iterdir())

    proc = run_cli("compile", ws["mnv2"], "--target", "x86-avx2", "-o", out, *BENCH, cwd=tmp_path)
    _assert_one_line_error(proc, "--force")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no staging folder either
    assert [p.name for p in out.iterdir()] == ["marker.bin"] and marker.read_bytes() == b"user data \x00\x01"

    # --force replaces only a folder edgepack made (tests/test_output_safety.py: a user's folder is refused)
    (out / ".edgepack.json").write_text('{"made_by": "edgepack", "command": "compile"}')
    # without --json: the terminal summary path, then the old folder is gone, the new one complete
    proc = run_cli("compile", ws["factory"], "--input-shape", "x:1,3,32,32", "--target", "x86-avx2",
                   "-o", out, *BENCH, "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "report" in proc.stdout + proc.stderr
    assert not marker.exists()
    assert (out / "report.json").is_file() and (out / "onnxruntime" / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EXIST"]  # no .EXIST.old-* / .tmp-* left


def test_force_does_not_replace_a_file_with_a_folder(ws, tmp_path):
    out = tmp_path / "afile"
    out.write_text("not a folder")
    proc = run_cli("compile", ws["factory"], "--input-shape", "x:1,3,32,32", "--target", "x86-avx2",
                   "-o", out, *BENCH, "--force", cwd=tmp_path)
    _assert_one_line_error(proc)
    assert out.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_outputs_are_readable_like_any_file_the_user_creates(compiled):
    _, out, _ = compiled
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "report.json").stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------------------- bad input


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    lines = message_lines(proc.stderr)  # progress lines (timestamped) may come before the error
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgepack: error: "), lines[0]
    assert proc.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _factory(ws, name="make"):
    return f"{ws['net_py']}:{name}"


# (id, argv builder, substrings the one-line message must contain)
BAD_INPUTS = [
    ("missing-model", lambda w: ["compile", w["dir"] / "nope.onnx"], ["nope.onnx", "no such file"]),
    ("text-as-onnx", lambda w: ["compile", w["dir"] / "text.onnx"], ["text.onnx"]),
    ("truncated-onnx", lambda w: ["compile", w["dir"] / "truncated.onnx"], ["truncated.onnx"]),
    ("empty-onnx", lambda w: ["compile", w["dir"] / "empty.onnx"], ["empty.onnx", "empty"]),
    ("unknown-target", lambda w: ["compile", w["mnv2"], "--target", "x86-vni"], ["x86-vni", "x86-vnni"]),
    ("yaml-syntax", lambda w: ["compile", w["mnv2"], "--target", w["dir"] / "syntax.yaml"],
     ["syntax.yaml:2", "YAML"]),
    ("yaml-bad-value", lambda w: ["compile", w["mnv2"], "--target", w["dir"] / "badvalue.yaml"],
     ["badvalue.yaml", "benchmark.runs", "lots"]),
    ("calib-wrong-shape", lambda w: ["compile", w["mnv2"], "--target", "x86-avx2", "--calib",
                                     w["dir"] / "wrong_shape.npz"],
     ["wrong_shape.npz", "[3, 224, 224]", "[3, 32, 32]"]),
    ("calib-wrong-name", lambda w: ["compile", _factory(w, "two"), "--input-shape", "a:4,3",
                                    "--input-shape", "b:4,3", "--calib", w["dir"] / "two_wrong_name.npz"],
     ["two_wrong_name.npz", "'b'", "'c'"]),
    ("input-shape-garbage", lambda w: ["compile", _factory(w), "--input-shape", "x:a,b"], ["x:a,b"]),
    ("factory-without-shape", lambda w: ["compile", _factory(w)], ["--input-shape"]),
    ("weights-missing-keys", lambda w: ["compile", _factory(w), "--weights", w["dir"] / "partial.pt",
                                        "--input-shape", "x:1,3,32,32"], ["partial.pt", "fc.weight"]),
    ("weights-not-tensors", lambda w: ["compile", _factory(w), "--weights", w["dir"] / "evil.pt",
                                       "--input-shape", "x:1,3,32,32"], ["evil.pt", "weights_only"]),
    ("weights-with-onnx", lambda w: ["compile", w["mnv2"], "--weights", w["dir"] / "net_weights.pt"],
     ["--weights"]),
    ("factory-raises", lambda w: ["compile", _factory(w, "boom"), "--input-shape", "x:1,3,32,32"],
     ["factory exploded"]),
    ("factory-missing", lambda w: ["compile", _factory(w, "nope"), "--input-shape", "x:1,3,32,32"],
     ["'nope'"]),
    ("factory-not-module", lambda w: ["compile", _factory(w, "not_a_module"), "--input-shape", "x:1,3,32,32"],
     ["int"]),
    ("zero-runs", lambda w: ["compile", _factory(w), "--input-shape", "x:1,3,32,32", "--runs", "0"],
     ["runs"]),
    ("inspect-truncated", lambda w: ["inspect", w["dir"] / "truncated.onnx"], ["truncated.onnx"]),
    ("profile-missing", lambda w: ["profile", w["dir"] / "nope.onnx"], ["nope.onnx"]),
    ("profile-text", lambda w: ["profile", w["dir"] / "text.onnx"], ["text.onnx"]),
    ("show-unknown-target", lambda w: ["targets", "show", "x86-vni"], ["x86-vnni"]),
]


@pytest.mark.parametrize("argv, needles", [pytest.param(a, n, id=i) for i, a, n in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_no_output(ws, tmp_path, argv, needles):
    args = argv(ws)
    if args[0] in ("compile", "profile"):
        args += ["-o", tmp_path / "OUT"]
    proc = run_cli(*args, cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    assert list(tmp_path.iterdir()) == []  # no OUT, no .OUT.tmp-*


@pytest.mark.parametrize("argv, needles", [pytest.param(a, n, id=i) for i, a, n in BAD_INPUTS
                                           if i in ("missing-model", "calib-wrong-shape")])
def test_bad_input_without_o_creates_no_default_folder(ws, tmp_path, argv, needles):
    proc = run_cli(*argv(ws), cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    assert list(tmp_path.iterdir()) == []  # no edgepack-out/


def test_failed_compile_leaves_no_parent_folders(ws, tmp_path):
    proc = run_cli("compile", _factory(ws), "--input-shape", "x:1,3,32,32", "--runs", "0",
                   "-o", tmp_path / "deep" / "er" / "OUT", cwd=tmp_path)
    _assert_one_line_error(proc, "runs")
    assert list(tmp_path.iterdir()) == []


def test_targets_show_accepts_the_unbroken_yaml(ws):
    """Control for yaml-bad-value: the same file with a valid value loads, so the error is the value."""
    proc = run_cli("targets", "show", ws["dir"] / "good.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["benchmark"]["runs"] == 50


# ----------------------------------------------------------------------------- interrupted run


def _children(pid: int, needle: str) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and needle in cmd:
            found.append(int(d.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stop(proc: subprocess.Popen, workers=()) -> None:
    """Cleanup after a failed assertion: never leave this test's CLI or its worker running."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the CLI kills its worker on SIGTERM
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    for pid in workers:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_killed_compile_leaves_nothing_half_written(ws, tmp_path, sig):
    # SIGTERM on MobileNetV2 (the second and last MobileNetV2 compile in this file), Ctrl-C on the
    # small net. What happens: the CLI turns SIGTERM into KeyboardInterrupt, so both signals take
    # the same path: the benchmark worker is killed and reaped, staged_dir() removes the
    # `.OUT2.tmp-*` staging folder, the bench temp folder is removed, and the CLI exits 130 with
    # one "interrupted" line. OUT2 never appears, because it only comes into being by the final
    # rename of a complete staging folder.
    if sig == signal.SIGTERM:
        model = [ws["mnv2"]]
    else:
        model = [_factory(ws), "--input-shape", "x:1,3,32,32"]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    out = work / "OUT2"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TMPDIR": str(tmp)}
    # 10M runs: the small net would get through 100k in seconds, before the signal is sent.
    # SIGINT back to its default, as at a terminal: a suite started as a background job (`cmd &`
    # in a script) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen([sys.executable, "-m", "edgepack", "compile", *map(str, model), "--target",
                             "x86-avx2", "-o", str(out), "--runs", "10000000", "--warmup", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=work,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers = []
    try:
        deadline = time.monotonic() + 900  # a hang guard: the loops end as soon as the worker runs
        while not list(work.glob(".OUT2.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        while not workers and proc.poll() is None and time.monotonic() < deadline:
            workers = _children(proc.pid, "edgepack/devices/worker.py")
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"compile ended (exit {proc.returncode}) before it could be killed:\n"
                        f"{proc.communicate()[1][-3000:]}")
        assert list(work.glob(".OUT2.tmp-*")), "no staging folder next to OUT2 while benchmarking"
        assert workers, "the benchmark worker did not start within 900 s"
        time.sleep(0.5)  # well inside the timed loop
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        _stop(proc, workers)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr
    assert message_lines(stderr) == ["edgepack: interrupted (no output was left half-written)"]
    assert not out.exists()
    assert list(work.iterdir()) == []  # the staging folder is gone too
    # and the benchmark's temp folder (onnxruntime leaves its own `.ses` id file in TMPDIR)
    assert not list(tmp.glob("edgepack-bench-*"))
    assert not any(_alive(pid) for pid in workers)  # the worker did not outlive the CLI


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_profile_refuses_existing_output_before_benchmarking(compiled, tmp_path):
    _, out, _ = compiled
    existing = tmp_path / "P"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    proc = subprocess.Popen([sys.executable, "-m", "edgepack", "profile", str(out / "onnxruntime" / "model.onnx"),
                             "--runs", "10000000", "--warmup", "0", "-o", str(existing)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    workers = []
    try:
        deadline = time.monotonic() + 60
        while not workers and proc.poll() is None and time.monotonic() < deadline:
            workers = _children(proc.pid, "edgepack/devices/worker.py")
            time.sleep(0.05)
    finally:
        _stop(proc, workers)
    started = bool(workers)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert not started, "profile started a 10M-run benchmark whose report it could never write"
