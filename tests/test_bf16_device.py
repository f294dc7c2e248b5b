"""BF16 as a property of the artifact, checked against the machine that runs it: the device probe
reports the CPU's feature flags (read from a /proc/cpuinfo text), one decision says whether a flag
set computes BF16 natively (host and device alike), and the one compatibility check refuses a
bf16 artifact on a device without it: verify of a real bf16 OpenVINO bundle, a device profile's
check, and a search whose max_p50_ms is timed on such a device (the point is skipped).

The device without BF16 is the emulated ARM64 board (its Cortex-A72 /proc/cpuinfo lists no bf16);
the bf16 artifact is built here, so those tests need a host CPU with native BF16.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

import edgepack
from edgepack.devices import probe as probe_module
from edgepack.devices.compat import refusal
from edgepack.hostinfo import BF16_FLAGS, SIMD_FLAGS, lacks_bf16, missing_bf16

XEON_6230 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni
"""
SAPPHIRE_RAPIDS = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f amx_tile amx_bf16 amx_int8\n"
NEOVERSE_V1 = ("processor\t: 0\nBogoMIPS\t: 2100.00\n"
               "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp sve i8mm bf16\n"
               "CPU implementer\t: 0x41\nCPU part\t: 0xd40\n")
NO_BF16_BOARD = "a72"  # the emulated board under a devices.yaml name
HOST_BF16 = pytest.mark.skipif(missing_bf16() is not None, reason="the bf16 artifact is built on this host: "
                                                                   "its CPU has no native BF16")


def _probe(tmp_path, cpuinfo: str | None) -> dict:
    """The real probe script's JSON, run with `cpuinfo` as its /proc/cpuinfo (None: no such file)."""
    path = tmp_path / f"cpuinfo-{len(list(tmp_path.iterdir()))}"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    proc = subprocess.run([sys.executable, probe_module.__file__, str(path)], capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(proc.stdout)


def test_the_probe_reports_cpu_flags_and_the_check_refuses_bf16_without_them(tmp_path):
    assert probe_module.FLAGS == SIMD_FLAGS  # the probe's copy (it runs without edgepack)
    assert all(set(flags) <= set(SIMD_FLAGS) for flags in BF16_FLAGS.values())
    xeon, spr, arm = (_probe(tmp_path, text) for text in (XEON_6230, SAPPHIRE_RAPIDS, NEOVERSE_V1))
    assert xeon["flags"] == ["avx", "avx2", "avx512_vnni", "avx512bw", "avx512f", "avx512vl", "f16c", "fma", "sse4_2"]
    assert "amx_bf16" in spr["flags"] and "bf16" in arm["flags"] and "crc32" not in arm["flags"]
    assert xeon["cpu"] == "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz" and arm["cpu"] == "0x41/0xd40"
    missing = _probe(tmp_path, None)
    assert missing["flags"] is None and missing["runtimes"]  # the rest of the answer is unchanged

    def check(env, arch=None, precision="bf16"):  # what this host reads (the probe ran here)
        return refusal({**env, "arch": arch or env["arch"]}, "edge1", "any", ("openvino",), None, None,
                       "model.xml", precision)

    assert check(xeon) == ("edge1 cannot run model.xml (bf16): its CPU (Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz) "
                           "has none of the flags avx512_bf16, amx_bf16, so BF16 would be emulated (slower than "
                           "FP32 and less exact): refused before running (build fp32, fp16 or int8 for it)")
    assert check(xeon, precision="fp32") is None and check(spr) is None
    assert check(arm, "aarch64") is None  # the arm64 flag is "bf16"; the x86 ones do not count there
    assert "has none of the flags bf16," in check({**spr, "flags": ["asimd", "avx512_bf16"]}, "aarch64")
    assert "does not list its CPU flags (no readable /proc/cpuinfo)" in check(missing)
    assert "is riscv64, for which no native BF16 is known" in check(xeon, "riscv64")
    old = {k: v for k, v in spr.items() if k != "flags"}  # an answer without flags: not known, refused
    assert check(old).startswith("edge1 cannot run model.xml (bf16)")
    # this host's check is the same decision, worded for --precision
    assert lacks_bf16("x86_64", xeon["flags"]) in missing_bf16({"model": "x", "arch": "x86_64", "flags": xeon["flags"]})
    assert missing_bf16({"model": "x", "arch": "x86_64", "flags": spr["flags"]}) is None


@pytest.fixture(scope="module")
def bf16_bundle(small_onnx, tmp_path_factory):
    """A real bf16 OpenVINO artifact and its bundle (folder)."""
    from edgepack.bundle import package

    pytest.importorskip("openvino")
    if missing_bf16() is not None:
        pytest.skip("the bf16 artifact is built on this host: its CPU has no native BF16")
    out = tmp_path_factory.mktemp("bf16") / "out"
    calib = out.parent / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    edgepack.compile(small_onnx, backends=["openvino"], precision="bf16", calib=calib, output_dir=out, runs=3,
                     warmup=1, threads=1, progress=False)
    bundle = package(out, out.parent / "bundle", "openvino").path
    return out, bundle


@pytest.fixture
def board_named(tmp_path, monkeypatch):
    """devices.yaml naming the emulated ARM64 board (qemu, a Cortex-A72 without BF16)."""
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": [{"name": NO_BF16_BOARD, "kind": "qemu"}]}))
    monkeypatch.setenv("EDGEPACK_DEVICES", str(path))
    return NO_BF16_BOARD


@HOST_BF16
def test_a_bf16_bundle_is_refused_on_a_device_without_bf16_before_running(bf16_bundle, board_named):
    from edgepack.backends import get_backend
    from edgepack.bundle import verify
    from edgepack.devices import resolve
    from edgepack.errors import EdgepackError

    out, bundle = bf16_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["artifact"]["precision"] == "bf16"
    assert verify(bundle).exit_code == 0  # this host computes BF16: passes, golden outputs included
    board = resolve(board_named)
    verdict = verify(bundle, board)
    assert verdict.exit_code == 6 and [c["check"] for c in verdict.checks] == ["structure", "hashes", "device"]
    line = verdict.failed["detail"]
    assert line.startswith("a72 cannot run model.xml (bf16): its CPU (0x41/0xd08) has none of the flags bf16"), line
    assert "\n" not in line and "openvino" not in line  # before the missing runtime: installing it would not help
    artifact = bundle / manifest["artifact"]["path"]
    assert get_backend("openvino").deployment(artifact)["precision"] == "bf16"  # what a device profile reads
    with pytest.raises(EdgepackError, match=r"^a72 cannot run model\.xml \(bf16\)"):
        board.check("openvino", artifact)


@HOST_BF16
def test_a_bf16_point_is_skipped_for_a_device_without_bf16(tmp_path, small_onnx, board_named):
    """max_p50_ms timed on the board: the bf16 point is skipped with the board's reason, never
    compiled; on `local` (this host, with BF16) the same point is usable."""
    pytest.importorskip("optuna")
    from edgepack.events import Events
    from edgepack.search import SearchSpec, search
    from edgepack.search.evaluate import BoardCPU, unusable

    point = {"backend": "openvino", "precision": "bf16"}
    assert unusable(point, BoardCPU("local")) is None and unusable(point, BoardCPU(None)) is None
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    spec = SearchSpec.model_validate({
        "name": "bf16", "model": str(small_onnx), "calib": str(calib), "trials": 1, "repeats": 1, "runs": 3,
        "warmup": 1, "threads": 1, "constraints": {"max_p50_ms": 50, "device": board_named},
        "space": {"backend": ["openvino"], "precision": ["bf16"]}})
    steps = []
    res = search(spec, tmp_path / "out", events=Events(lambda e: steps.append(e.message)))[0]
    skipped = [s for s in steps if s.startswith("skipped openvino bf16: ")]
    assert skipped and skipped[0].startswith("skipped openvino bf16: a72 cannot run this point's artifact (bf16): "
                                             "its CPU (0x41/0xd08) has none of the flags bf16"), steps
    assert not res.rows and not list((tmp_path / "out").glob("trials/*"))  # nothing compiled
