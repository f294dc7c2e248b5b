"""Devices over SSH, through a real OpenSSH server on 127.0.0.1 (tests/sshd.py): an x86 "device"
(this machine's Python at the far end of ssh), the emulated aarch64 board behind ssh, and the
faults: a runtime missing on the device, a dropped connection, an unknown (or changed) host key,
an aarch64 artifact sent to the x86 device, a busy or stale device lock. Timings are never judged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack import cli
from edgepack.compiler import BenchSettings
from edgepack.devices import DeviceLost, DeviceOptions, resolve
from edgepack.errors import EdgepackError

import sshd as sshd_helper  # noqa: E402  tests/sshd.py (tests/ is on sys.path, as for helpers)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    why = sshd_helper.ensure_openssh()
    if why:
        pytest.skip(why)
    server = sshd_helper.Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lab(sshd, tmp_path_factory):
    """devices.yaml with the devices reached through the test sshd, and their work folders."""
    root = tmp_path_factory.mktemp("lab")
    known = root / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    common = {"kind": "ssh", "host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
              "key_file": str(sshd.user_key), "known_hosts": str(known)}
    devices = [
        {"name": "x86", **common, "workdir": str(root / "x86"), "python": sys.executable},
        {"name": "pinned", **common, "workdir": str(root / "x86"), "python": sys.executable, "affinity": "0"},
        # a device whose Python has no runtime and no numpy (Debian's own python3)
        {"name": "bare", **common, "workdir": str(root / "bare"), "python": "/usr/bin/python3"},
        {"name": "fresh", **common, "workdir": str(root / "fresh"), "python": sys.executable,
         "known_hosts": str(root / "fresh_known_hosts")},
        {"name": "board", **common, "workdir": str(root / "board"), "python": str(root / "board-python3"),
         "emulated": True},
        {"name": "untouched", **common, "workdir": str(root / "untouched"), "python": sys.executable},
    ]
    path = root / "devices.yaml"
    path.write_text(json.dumps({"devices": devices}))  # JSON is YAML
    return {"root": root, "yaml": str(path), "workdir": {d["name"]: root / d["name"] for d in devices}}


def _leftovers(folder: Path) -> list[str]:
    """What a run left in a device's work folder (job folders, a lock)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgepack: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- the x86 device


def test_profile_mobilenet_on_the_x86_device(lab, mobilenet_onnx, tmp_path, capsys):
    out = tmp_path / "profile"
    rc, stdout, err = _cli(capsys, "profile", mobilenet_onnx, "--device", "x86", "--devices", lab["yaml"],
                           "--runs", 12, "--warmup", 2, "--threads", 1, "-o", out, "--no-progress")
    assert rc == 0, err
    assert "on devices" in stdout
    report = json.loads((out / "report.json").read_text())
    (art,) = report["artifacts"]
    assert art["latency_ms"]["p50"] > 0  # the host's own figures stay beside the device's
    (run,) = art["devices"]
    assert run["device"] == "x86" and run["kind"] == "ssh" and run["emulated"] is False
    assert run["runs"] == 12 and len(run["samples_ms"]) == 12 and run["threads"] == 1
    lat = run["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] == min(run["samples_ms"]) and lat["max"] == max(run["samples_ms"])
    lo, hi = run["ci95_ms"]
    assert lo <= lat["p50"] <= hi
    assert run["cold_load_ms"] > 0 and run["memory_mb"]["peak_rss"] > 0 and run["seconds"] > 0
    env = run["environment"]
    assert env["arch"] == "x86_64" and env["cores"] >= 1
    assert env["runtimes"]["onnxruntime"] == __import__("onnxruntime").__version__
    assert run["parity"]["samples"] >= 1 and run["parity"]["max_abs_diff"] <= 1e-4  # computed on the device
    assert _leftovers(lab["workdir"]["x86"]) == []  # job folder and device lock removed


def test_compile_with_device(lab, small_onnx, tmp_path):
    from edgepack import api

    report = api.compile(small_onnx, backends=["onnxruntime"], output_dir=tmp_path / "c", runs=5, warmup=1,
                         threads=1, progress=False, devices=["pinned"], devices_file=lab["yaml"])
    (art,) = report["artifacts"]
    (run,) = art["devices"]
    assert run["device"] == "pinned" and run["runs"] == 5
    assert run["environment"]["cores"] == 1  # taskset -c 0: what the probe and the worker were given
    assert run["parity"]["max_abs_diff"] <= 1e-5  # against the source model, computed on the device
    assert json.loads((tmp_path / "c" / "report.json").read_text())["artifacts"][0]["devices"][0]["runs"] == 5


def test_local_device_takes_the_same_path(small_onnx, tmp_path, monkeypatch):
    """`--device local`: this host's Python, through the same push/run/bring-back steps."""
    monkeypatch.setenv("EDGEPACK_DEVICES", str(tmp_path / "none.yaml"))
    (tmp_path / "none.yaml").write_text("devices: []\n")
    device = resolve("local")
    device.workdir = str(tmp_path / "jobs")
    feeds = [{"x": np.ones((1, 3, 8, 8), np.float32)}]
    run = device.profile("onnxruntime", small_onnx, feeds, BenchSettings(4, 1, 1), reference=None, progress=False)
    assert run.kind == "local" and run.runs == 4 and run.environment.arch and run.parity is None
    (outs,) = device.outputs("onnxruntime", small_onnx, feeds)
    assert outs[0].shape == (1, 4) and _leftovers(tmp_path / "jobs") == []


def test_devices_list_and_ssh_urls(lab, capsys):
    rc, out, err = _cli(capsys, "devices", "list", "--devices", lab["yaml"], "--json")
    assert rc == 0, err
    names = [d["name"] for d in json.loads(out)["devices"]]
    assert names[:5] == ["x86", "pinned", "bare", "fresh", "board"] and {"local", "qemu"} <= set(names)

    dev = resolve("ssh://alice@10.1.2.3:2222/srv/edgepack")
    assert (dev.kind, dev.workdir, dev.transport.host, dev.transport.port, dev.transport.user) == \
        ("ssh", "/srv/edgepack", "10.1.2.3", 2222, "alice")
    opts = " ".join(dev.transport.options())
    assert "BatchMode=yes" in opts and "StrictHostKeyChecking=yes" in opts and "ServerAliveInterval" in opts
    assert "StrictHostKeyChecking=accept-new" in " ".join(resolve("ssh://h", accept_new_host_key=True)
                                                           .transport.options())
    with pytest.raises(EdgepackError, match=r"unknown device 'x68' \(did you mean: x86"):
        resolve("x68", lab["yaml"])
    bad = lab["root"] / "bad.yaml"
    bad.write_text("devices:\n  - {name: a, kind: ssh, host: h, pasword: x}\n")
    with pytest.raises(EdgepackError, match="pasword") as e:
        resolve("a", bad)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- faults


def test_runtime_missing_on_the_device_names_the_package(lab, mobilenet_onnx, tmp_path, capsys):
    if not Path("/usr/bin/python3").is_file():
        pytest.skip("no system python3 to play a bare device")
    rc, _, err = _cli(capsys, "profile", mobilenet_onnx, "--device", "bare", "--devices", lab["yaml"],
                      "-o", tmp_path / "p", "--no-progress")
    line = _one_line_error(err)
    assert rc == 1 and "bare cannot run this artifact" in line and "pip install 'onnxruntime>=" in line and " numpy " in line
    assert not (tmp_path / "p").exists() and _leftovers(lab["workdir"]["bare"]) == []


def test_unknown_host_key_is_refused_then_accepted_on_request(lab, sshd, mobilenet_onnx, tmp_path, capsys):
    known = lab["root"] / "fresh_known_hosts"
    known.write_text("")
    rc, _, err = _cli(capsys, "profile", mobilenet_onnx, "--device", "fresh", "--devices", lab["yaml"],
                      "-o", tmp_path / "p", "--no-progress")
    line = _one_line_error(err)
    assert rc == 1 and "host key unknown" in line and "--accept-new-host-key" in line
    assert known.read_text() == "" and not (tmp_path / "p").exists()

    assert resolve("fresh", lab["yaml"], accept_new_host_key=True).probe()["arch"] == "x86_64"
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known)], capture_output=True)
    assert found.returncode == 0  # recorded on first use (hashed or not, as ssh_config says)...
    assert resolve("fresh", lab["yaml"]).probe()["arch"] == "x86_64"  # ...and checked from then on

    kind, _ = sshd.known_hosts_line().split()[1:3]
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                           capture_output=True)
    assert other.returncode == 0
    known.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join((tmp_path / "k.pub").read_text().split()[:2]) + "\n")
    with pytest.raises(EdgepackError, match="host key CHANGED"):  # accept-new never accepts a changed key
        resolve("fresh", lab["yaml"], accept_new_host_key=True).probe()


def _worker_pids(workdir: Path) -> list[int]:
    """PIDs of worker processes running in `workdir` (started by this test, through sshd)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(str(workdir).encode() in c and c.endswith(b"worker.py") for c in cmd):
                pids.append(int(proc.name))
    return pids


def _long_profile(lab, model, out: Path) -> subprocess.Popen:
    """`edgepack profile` of `model` on the x86 device, long enough to be cut mid-run; returns once
    the worker runs there."""
    cmd = [sys.executable, "-m", "edgepack", "profile", str(model), "--device", "x86", "--devices",
           lab["yaml"], "--runs", "20000", "--warmup", "0", "--threads", "1", "-o", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    while not _worker_pids(lab["workdir"]["x86"]) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if not _worker_pids(lab["workdir"]["x86"]):
        proc.kill()
        pytest.fail(f"the worker never started on the device: {proc.communicate()[1][-500:]}")
    time.sleep(1.0)  # mid-run
    return proc


def test_interrupted_profile_stops_the_worker_on_the_device(lab, mobilenet_onnx, tmp_path):
    out, workdir = tmp_path / "p", lab["workdir"]["x86"]
    proc = _long_profile(lab, mobilenet_onnx, out)
    proc.send_signal(signal.SIGTERM)  # what Ctrl-C and a CI timeout do
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not out.exists() and _worker_pids(workdir) == [] and _leftovers(workdir) == []


def test_dropped_connection_is_one_line_and_leaves_no_report(lab, sshd, mobilenet_onnx, tmp_path):
    out, workdir = tmp_path / "p", lab["workdir"]["x86"]
    proc = _long_profile(lab, mobilenet_onnx, out)
    try:
        assert sshd.drop_connections()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    line = _one_line_error("\n".join(ln for ln in err.splitlines() if not ln.startswith("[")))
    assert "connection lost" in line and "nothing from this run was recorded" in line
    assert not out.exists() and not list(tmp_path.glob(".p*"))  # no report, no staging folder
    assert _worker_pids(workdir) == []  # killed over a new connection
    assert _leftovers(workdir) == []  # the job folder and the lock were cleaned up over a new connection


def test_device_lock_busy_and_stale(lab):
    device = resolve("x86", lab["yaml"])
    device.lock_wait_s = 0
    lock = lab["workdir"]["x86"] / ".lock"
    lock.mkdir(parents=True)
    (lock / "owner").write_text(f"other-host 4242 {int(time.time())}\n")
    with pytest.raises(EdgepackError, match="x86 is busy: profiled by other-host pid 4242"):
        with device.session():
            pass
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    (lock / "owner").write_text(f"{socket.gethostname()} {dead.pid} {int(time.time())}\n")
    with device.session():  # its owner is gone: taken over
        assert (lock / "owner").read_text().split()[1] == str(os.getpid())
        with pytest.raises(EdgepackError, match="held by another device of this same run"):
            with resolve("pinned", lab["yaml"]).session():  # the same board under another name
                pass
    assert not lock.exists()


# --------------------------------------------------------------------------- an aarch64 artifact


@pytest.fixture(scope="module")
def arm64_tvm(tmp_path_factory):
    """A tiny CNN cross-compiled by TVM for aarch64 (untuned)."""
    pytest.importorskip("tvm")
    import shutil

    if not shutil.which("aarch64-linux-gnu-g++"):
        pytest.skip("aarch64 cross compiler missing (make board installs it)")
    import torch

    from edgepack.backends.tvm import TvmBackend
    from edgepack.frontends import load_source
    from edgepack.ir.canonical import canonicalize
    from edgepack.models.mnist_cnn import MnistCNN
    from edgepack.targets import load_profile

    torch.manual_seed(0)
    model, _ = canonicalize(load_source(MnistCNN(width=8).eval(), {"": (1, 1, 28, 28)}).model)
    folder = tmp_path_factory.mktemp("arm64")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEPACK_TVM_CACHE", str(folder / "tvm-cache"))
    try:
        arm64 = load_profile("arm64")
        return TvmBackend(arm64.backend_options("tvm")).emit(model, folder, arm64)
    finally:
        mp.undo()


def test_aarch64_artifact_is_refused_by_the_x86_device_before_running(lab, arm64_tvm, tmp_path, capsys):
    rc, _, err = _cli(capsys, "profile", arm64_tvm, "--device", "x86", "--devices", lab["yaml"],
                      "-o", tmp_path / "p", "--no-progress")
    line = _one_line_error(err)
    assert rc == 1 and "x86 is x86_64, model.so is built for aarch64: refused before running" in line
    assert not (tmp_path / "p").exists() and _leftovers(lab["workdir"]["x86"]) == []


@pytest.mark.board
def test_aarch64_artifact_on_the_emulated_board_over_ssh(lab, arm64_tvm, tmp_path):
    from edgepack.api import profile_artifact
    from edgepack.board import ensure_board

    board = ensure_board()
    wrapper = lab["root"] / "board-python3"  # what a board's python3 is: here qemu running the aarch64 one
    env = " ".join(f"{k}={v}" for k, v in board.env().items() if k not in ("OMP_NUM_THREADS", "TVM_NUM_THREADS"))
    wrapper.write_text(f"#!/bin/sh\nexport {env}\nexec {' '.join(board.command())} \"$@\"\n")
    wrapper.chmod(0o755)
    report = profile_artifact(arm64_tvm, None, "tvm", None, BenchSettings(3, 0, 1), tmp_path / "p", False, False,
                              DeviceOptions(("board",), lab["yaml"]))
    (art,) = report.artifacts
    assert art.latency_ms is None and any("not timed on this host" in n for n in art.notes)
    (run,) = art.devices
    assert run.emulated is True and "not the target's latency" in run.note  # emulated, and labelled so
    assert run.environment.arch == "aarch64" and run.environment.runtimes["apache-tvm"]
    assert run.runs == 3 and len(run.samples_ms) == 3
    assert _leftovers(lab["workdir"]["board"]) == []


# --------------------------------------------------------------------------- helpers


def test_device_lost_is_an_edgepack_error():
    assert issubclass(DeviceLost, EdgepackError)  # the CLI prints it as one line


# --------------------------------------------------------------------------- bundles on the x86 device


@pytest.fixture(scope="module")
def mnv2_bundle(mobilenet_onnx, tmp_path_factory) -> Path:
    """MobileNetV2 compiled for x86-vnni (ONNX Runtime, fp32) and packaged as a .tar.gz."""
    from edgepack import api
    from edgepack.bundle import package

    folder = tmp_path_factory.mktemp("mnv2-bundle")
    api.compile(mobilenet_onnx, target="x86-vnni", backends=["onnxruntime"], output_dir=folder / "out",
                precision="fp32", runs=2, warmup=0, threads=1, progress=False)
    return package(folder / "out", folder / "mnv2.tar.gz").path


def test_profile_a_bundle_on_the_x86_device(lab, mnv2_bundle, tmp_path, capsys, monkeypatch):
    """The bundle's artifact, backend, golden inputs and target settings (x86-vnni's warm-up of
    10; runs and threads given); parity on the device against the golden outputs."""
    import tempfile

    unpacked = tmp_path / "tmp"
    unpacked.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(unpacked))  # where the archive is extracted
    rc, stdout, err = _cli(capsys, "profile", mnv2_bundle, "--device", "x86", "--devices", lab["yaml"],
                           "--runs", 6, "--threads", 1, "-o", tmp_path / "p", "--no-progress")
    assert rc == 0, err
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["target"]["name"] == "x86-vnni" and "the bundle's 3 golden inputs" in report["data"]["source"]
    (art,) = report["artifacts"]
    assert art["backend"] == "onnxruntime" and art["precision"] == "fp32"
    assert art["path"] == f"{mnv2_bundle}:model/model.onnx" and art["warmup"] == 10 and art["runs"] == 6
    assert any("sha256 of its" in n and "verified before running" in n for n in art["notes"])
    (run,) = art["devices"]
    assert run["device"] == "x86" and run["kind"] == "ssh" and run["runs"] == 6 and run["warmup"] == 10
    assert run["threads"] == 1 and len(run["samples_ms"]) == 6 and run["environment"]["arch"] == "x86_64"
    assert run["parity"]["samples"] == 3 and run["parity"]["max_abs_diff"] <= 1e-3  # vs the golden outputs
    assert not list(unpacked.glob("edgepack-verify-*")) and _leftovers(lab["workdir"]["x86"]) == []  # removed


def test_verify_a_bundle_on_the_x86_device(lab, mnv2_bundle, capsys):
    rc, stdout, err = _cli(capsys, "verify", mnv2_bundle, "--device", "x86", "--devices", lab["yaml"], "--json")
    assert rc == 0, err
    result = json.loads(stdout)
    assert result["device"] == "x86" and [c["check"] for c in result["checks"]] == \
        ["structure", "hashes", "device", "golden"] and all(c["ok"] for c in result["checks"])
    assert result["checks"][2]["detail"].startswith("x86: x86_64, onnxruntime ")
    assert "golden feeds replayed on x86" in result["checks"][3]["detail"]
    assert _leftovers(lab["workdir"]["x86"]) == []
    if Path("/usr/bin/python3").is_file():  # no numpy, no runtime there: refused (6) before replaying
        rc, _, err = _cli(capsys, "verify", mnv2_bundle, "--device", "bare", "--devices", lab["yaml"])
        assert rc == 6 and "bare cannot run this artifact" in err


def test_a_tampered_bundle_is_refused_by_profile_before_anything_runs(lab, mnv2_bundle, tmp_path, capsys):
    from edgepack.bundle.unpack import extract

    extract(mnv2_bundle, tmp_path / "x")
    (bundle,) = list((tmp_path / "x").iterdir())
    model = bundle / "model" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 3] ^= 1
    model.write_bytes(bytes(data))
    rc, _, err = _cli(capsys, "profile", bundle, "--device", "untouched", "--devices", lab["yaml"],
                      "-o", tmp_path / "p", "--no-progress")
    assert rc == 5  # verify's exit code for hashes
    assert _one_line_error(err) == (f"edgepack: error: {bundle}: hashes: model/model.onnx: sha256 differs from the "
                                    "manifest: the file changed (refused before running)")
    assert not (tmp_path / "p").exists() and not lab["workdir"]["untouched"].exists()  # never contacted
