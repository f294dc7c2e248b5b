"""Deployment bundles on real models and runtimes: `edgepack package` (manifest, golden vectors,
runner, byte-identical archives) and `edgepack verify` (graded exit codes), with the faults a
bundle meets on its way to a device: a changed byte, a broken manifest, hostile archives, golden
outputs the device does not reproduce, a device that cannot run the artifact."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import edgepack
from edgepack.bundle import package, verify
from edgepack.bundle.golden import write_npz
from edgepack.bundle.manifest import SCHEMA_FILE, json_schema
from edgepack.bundle.unpack import UnsafeArchive, extract
from edgepack.devices import LocalDevice, QemuDevice, resolve
from edgepack.devices.probe import __file__ as PROBE_FILE
from edgepack.errors import EdgepackError
from helpers import message_lines, run_cli


@pytest.fixture(scope="module")
def mnv2_out(mobilenet_onnx, sample_sets, tmp_path_factory) -> Path:
    """MobileNetV2 compiled once for x86-vnni with ONNX Runtime and OpenVINO, calibrated on the photos."""
    out = tmp_path_factory.mktemp("mnv2-out") / "out"
    edgepack.compile(mobilenet_onnx, target="x86-vnni", backends=["onnxruntime", "openvino"], output_dir=out,
                     calib=sample_sets["photos"], precision="fp32", runs=3, warmup=1, progress=False)
    return out


@pytest.fixture(scope="module")
def bundles(mnv2_out, tmp_path_factory) -> dict:
    """Each artifact packaged as a .tar.gz, and the ONNX Runtime one as a folder."""
    d = tmp_path_factory.mktemp("bundles")
    return {"ort": package(mnv2_out, d / "ort.tar.gz", "onnxruntime").path,
            "ov": package(mnv2_out, d / "ov.tar.gz", "openvino").path,
            "folder": package(mnv2_out, d / "ort-folder", "onnxruntime").path}


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _copy(folder: Path, dst: Path) -> Path:
    shutil.copytree(folder, dst)
    return dst


def _relist(folder: Path, name: str) -> None:
    """Record `name`'s new hash in the manifest (what a forger would do; the hash check passes)."""
    m = _manifest(folder)
    data = (folder / name).read_bytes()
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(m))


# --------------------------------------------------------------------------- package


def test_manifest_of_onnxruntime_and_openvino_bundles(bundles, mnv2_out, tmp_path):
    report = json.loads((mnv2_out / "report.json").read_text())
    extract(bundles["ort"], tmp_path / "ort")
    (root,) = list((tmp_path / "ort").iterdir())
    m = _manifest(root)
    assert root.name == m["name"] == "mobilenet_v2-x86-vnni-onnxruntime-fp32"
    for name, entry in m["files"].items():  # every file's hash and size, the manifest's own excepted
        data = (root / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {*m["files"], "manifest.json"}
    assert m["inputs"] == [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32", "layout": "NCHW",
                            "artifact_tensor": None}]
    assert m["outputs"][0]["name"] == "logits" and m["outputs"][0]["shape"] == [1, 1000]
    assert m["preprocessing"]["recorded"] and m["preprocessing"]["spec"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    profile = report["target"]["profile"]
    assert m["target"]["profile"] == profile
    assert m["target"]["sha256"] == hashlib.sha256(json.dumps(profile, sort_keys=True, separators=(",", ":"))
                                                   .encode()).hexdigest()
    import onnxruntime

    rt = m["runtime"]
    assert (rt["package"], rt["tested_version"], rt["minimum_version"], rt["arch"]) == \
        ("onnxruntime", onnxruntime.__version__, "1.12", "any")  # opset 17: onnxruntime 1.12 on
    assert m["ops"]["opsets"] == {"ai.onnx": 17} and m["ops"]["ops"]["Conv"] == 52
    assert m["ops"]["reduced_build_config"] == ["ai.onnx;17;Add,Clip,Conv,Flatten,Gemm,GlobalAveragePool"]
    lineage = m["lineage"]
    assert lineage["source_sha256"] == report["source"]["sha256"] and lineage["compiled"] == report["created"]
    assert lineage["report_sha256"] == hashlib.sha256((mnv2_out / "report.json").read_bytes()).hexdigest()
    kinds = {x["what"]: x for x in m["measurements"]}
    assert kinds["latency"]["where"] == kinds["parity"]["where"] == "host-cpu"
    assert kinds["latency"]["values"]["latency_ms"] == report["artifacts"][0]["latency_ms"]
    golden = m["golden"]
    assert golden["feeds"] == 3 and "the compile's first 3 inputs" in golden["origin"]
    assert golden["tolerances"][0]["output"] == "logits" and golden["tolerances"][0]["rtol"] == 1e-3
    with np.load(root / "golden" / "inputs.npz") as g, np.load(mnv2_out / "inputs.npz") as saved:
        assert sorted(g.files) == sorted(saved.files) and all(np.array_equal(g[k], saved[k]) for k in g.files)
    readme = (root / "README.md").read_text()
    assert "pip install numpy 'onnxruntime>=1.12'" in readme and "python runner/run.py" in readme
    assert "android" not in m and "Kotlin" not in readme  # the phone section is for TFLite bundles

    ov = json.loads(tarfile.open(bundles["ov"]).extractfile(f"{m['name'].replace('onnxruntime', 'openvino')}/"
                                                            "manifest.json").read())
    assert ov["artifact"]["files"] == ["model/model.bin", "model/model.xml"]
    assert ov["runtime"]["package"] == "openvino" and ov["ops"]["format"] == "openvino-ir"
    assert ov["ops"]["ops"]["Convolution"] > 0


def test_the_runner_needs_only_numpy_and_the_runtime(bundles):
    """python runner/run.py replays the golden vectors; --bench times the artifact; nothing of
    edgepack is importable from the bundle's runner folder."""
    folder = bundles["folder"]
    for path in (folder / "runner").glob("*.py"):
        imports = {a.name.split(".")[0] for n in ast.walk(ast.parse(path.read_text()))
                   for a in getattr(n, "names", []) if isinstance(n, (ast.Import, ast.ImportFrom))}
        mods = {n.module.split(".")[0] for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.ImportFrom) and n.module}
        assert "edgepack" not in imports | mods, path.name
    replay = subprocess.run([sys.executable, "runner/run.py"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stderr
    assert "logits: max |diff|" in replay.stdout and "golden replay: OK" in replay.stdout
    bench = subprocess.run([sys.executable, str(folder / "runner" / "run.py"), "--bench", "3", "--warmup", "1"],
                           capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0 and "3 runs" in bench.stdout and "p50" in bench.stdout, bench.stderr


def test_packaging_twice_is_byte_identical(mnv2_out, bundles, tmp_path):
    again = package(mnv2_out, tmp_path / "again.tar.gz", "onnxruntime").path
    assert again.read_bytes() == bundles["ort"].read_bytes()
    with tarfile.open(again) as tar:  # sorted members, fixed owner, time and modes
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(315532800, 0, 0, "", "")}
    assert again.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    folder = package(mnv2_out, tmp_path / "again-folder", "onnxruntime").path
    files = lambda d: {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
    assert files(folder) == files(bundles["folder"])


def test_package_refuses_bad_input_with_one_line(mnv2_out, bundles, tmp_path):
    with pytest.raises(EdgepackError, match="already exists: pass --force"):
        package(mnv2_out, bundles["ort"], "onnxruntime")
    with pytest.raises(EdgepackError, match="holds no 'tvm' artifact.*onnxruntime, openvino"):
        package(mnv2_out, tmp_path / "x.tar.gz", "tvm")
    with pytest.raises(EdgepackError, match="no report.json"):
        package(tmp_path, tmp_path / "y.tar.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind
    proc = run_cli("package", tmp_path / "missing", "-o", tmp_path / "z.tar.gz")
    assert proc.returncode == 1 and len(message_lines(proc.stderr)) == 1 and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- verify


def test_verify_passes_on_this_host(bundles):
    for key in ("ort", "ov", "folder"):
        verdict = verify(bundles[key], LocalDevice())
        assert verdict.exit_code == 0, verdict.checks
        assert [c["check"] for c in verdict.checks] == ["structure", "hashes", "device", "golden"]
    proc = run_cli("verify", bundles["ov"], "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["exit_code"] == 0 and result["backend"] == "openvino"
    assert "within tolerance" in result["checks"][-1]["detail"]


def test_a_changed_byte_a_missing_or_an_extra_file_exit_5(bundles, tmp_path):
    bad = _copy(bundles["folder"], tmp_path / "tampered")
    model = bad / "model" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    proc = run_cli("verify", bad)
    assert proc.returncode == 5 and "Traceback" not in proc.stderr
    assert message_lines(proc.stderr) == ["edgepack: verify: hashes: model/model.onnx: sha256 differs from the "
                                          "manifest: the file changed"]
    gone = _copy(bundles["folder"], tmp_path / "missing")
    (gone / "report.md").unlink()
    assert verify(gone).failed["detail"] == "report.md: missing from the bundle"
    extra = _copy(bundles["folder"], tmp_path / "extra")
    (extra / "model" / "evil.so").write_bytes(b"\x7fELF")
    verdict = verify(extra)
    assert verdict.exit_code == 5 and "model/evil.so: in the bundle but not in the manifest" in verdict.failed["detail"]


@pytest.mark.parametrize("breakage, expected", [
    (lambda m: "{not json", "not valid JSON"),
    (lambda m: json.dumps({**m, "schema_version": 99}), "schema_version 99: this edgepack reads 1"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "golden"}), "does not match its schema: golden"),
    (lambda m: json.dumps({**m, "artifact": {**m["artifact"], "path": "../../etc/passwd"}}), "not a file inside"),
])
def test_a_broken_manifest_exits_4(bundles, tmp_path, breakage, expected):
    bad = _copy(bundles["folder"], tmp_path / "bad")
    (bad / "manifest.json").write_text(breakage(_manifest(bad)))
    verdict = verify(bad)
    assert verdict.exit_code == 4 and expected in verdict.failed["detail"], verdict.checks


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind=tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


@pytest.mark.parametrize("members, expected", [
    ([(_info("/etc/cron.d/evil", size=2), b"hi")], "absolute path"),
    ([(_info("b/../../evil", size=2), b"hi")], "leaves the bundle"),
    ([(_info("b/link", tarfile.SYMTYPE, link="/etc/passwd"), None)], "is a link"),
    ([(_info("b/hard", tarfile.LNKTYPE, link="../../x"), None)], "is a link"),
    ([(_info("b/fifo", tarfile.FIFOTYPE), None)], "device, fifo"),
    ([(_info("b/dev", tarfile.CHRTYPE), None)], "device, fifo"),
])
def test_hostile_archives_are_refused_with_one_line(tmp_path, members, expected):
    archive = _tar(tmp_path / "hostile.tar.gz", members)
    verdict = verify(archive)
    assert verdict.exit_code == 4 and expected in verdict.failed["detail"]
    assert not (tmp_path / "evil").exists() and not Path("/etc/cron.d/evil").exists()


def test_oversized_members_and_archives_are_refused_before_writing(tmp_path):
    # a header declaring 5 GiB with no data behind it: refused on the declared size
    header = _info("b/huge.bin", size=5 << 30).tobuf(tarfile.GNU_FORMAT)
    import gzip

    (tmp_path / "huge.tar.gz").write_bytes(gzip.compress(header + b"\0" * 1024))
    proc = run_cli("verify", tmp_path / "huge.tar.gz")
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    (line,) = message_lines(proc.stderr)
    assert "declares 5368709120 bytes, over the" in line
    small = _tar(tmp_path / "many.tar.gz", [(_info(f"b/{i}", size=600), b"x" * 600) for i in range(3)])
    with pytest.raises(UnsafeArchive, match="holds over 1000 bytes"):
        extract(small, tmp_path / "out1", max_member=1000, max_total=1000)
    with pytest.raises(UnsafeArchive, match="over the 500-byte limit"):
        extract(small, tmp_path / "out2", max_member=500, max_total=10_000)
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    assert "not a readable .tar.gz" in verify(tmp_path / "junk.tar.gz").failed["detail"]


def test_golden_outputs_the_device_does_not_reproduce_exit_7(bundles, tmp_path):
    bad = _copy(bundles["folder"], tmp_path / "golden")
    with np.load(bad / "golden" / "outputs.npz") as g:
        outputs = {k: g[k] for k in g.files}
    outputs["1__0"] = outputs["1__0"] + np.float32(0.5)  # one feed's logits moved by 0.5
    write_npz(bad / "golden" / "outputs.npz", outputs)
    _relist(bad, "golden/outputs.npz")
    verdict = verify(bad)
    assert verdict.exit_code == 7, verdict.checks
    assert "output 'logits' on local: max |diff| 0.5, outside tolerance" in verdict.failed["detail"]
    replay = subprocess.run([sys.executable, "runner/run.py"], cwd=bad, capture_output=True, text=True, timeout=300)
    assert replay.returncode == 7 and "FAILED" in replay.stdout


def test_a_runtime_missing_or_too_old_on_the_device_exits_6(bundles, tmp_path):
    old = _copy(bundles["folder"], tmp_path / "old")
    m = _manifest(old)
    m["runtime"]["minimum_version"] = "99.1"  # the manifest is not in its own file list: no hash to fix
    (old / "manifest.json").write_text(json.dumps(m))
    verdict = verify(old)
    assert verdict.exit_code == 6 and "is older than 99.1" in verdict.failed["detail"]
    original = hashlib.sha256((bundles["folder"] / "manifest.json").read_bytes()).hexdigest()
    pinned = verify(old, manifest_sha256=original)  # the manifest's hash as package printed it
    assert pinned.exit_code == 5 and "the manifest changed" in pinned.failed["detail"]
    assert verify(bundles["folder"], manifest_sha256=original).exit_code == 0
    assert [c["check"] for c in verdict.checks] == ["structure", "hashes", "device"]  # never ran
    m["runtime"].update(minimum_version="1.0", package="onnxruntime-nightly-x")
    (old / "manifest.json").write_text(json.dumps(m))
    assert "onnxruntime-nightly-x not installed; on the device: pip install 'onnxruntime-nightly-x>=1.0'" in \
        verify(old).failed["detail"]


# --------------------------------------------------------------------------- devices, schema


def test_probe_and_resolve():
    import onnxruntime

    env = LocalDevice().probe()
    assert env["arch"] == {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine())
    assert env["runtimes"]["onnxruntime"] == onnxruntime.__version__ and env["cores"] >= 1
    tree = ast.parse(Path(PROBE_FILE).read_text())  # stdlib only: it must answer where numpy is missing
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert all(m.split(".")[0] in sys.stdlib_module_names or m == "__future__" for m in modules), modules
    local, board = resolve(None), resolve("qemu")
    assert local.name == "local" and local.latency_is_real and board.name == "qemu-aarch64" and board.emulated
    with pytest.raises(EdgepackError, match="unknown device 'lcoal' \\(did you mean: local"):
        resolve("lcoal")


def test_manifest_schema_shipped_matches_the_model():
    """edgepack/bundle/schemas/manifest.schema.json is what the models export (python -m edgepack.bundle.manifest)."""
    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(json.dumps(json_schema()))


# --------------------------------------------------------------------------- arm64 artifacts


@pytest.fixture(scope="module")
def small_cnn():
    import torch

    from edgepack.models.mnist_cnn import MnistCNN

    torch.manual_seed(0)
    return MnistCNN(width=8).eval()


def test_arm64_tflite_bundle(small_cnn, tmp_path):
    """The TFLite artifact for arm64: NHWC tensors behind the ONNX I/O, the target's delegate,
    latency labelled as this host's, not the target's; it verifies here (TFLite is portable)."""
    out = tmp_path / "out"
    edgepack.compile(small_cnn, target="arm64", backends=["tflite"], input_shapes={"": (1, 1, 28, 28)},
                     output_dir=out, precision="fp32", runs=3, warmup=1, progress=False)
    bundle = package(out, tmp_path / "tfl.tar.gz").path
    verdict = verify(bundle)
    assert verdict.exit_code == 0, verdict.checks
    m = verdict.manifest
    assert m.runtime.package == "ai-edge-litert" and m.runtime.arch == "any"
    own = m.inputs[0].artifact_tensor
    assert own is not None and own.layout == "NHWC" and own.perm == [0, 2, 3, 1] and own.shape == [1, 28, 28, 1]
    assert m.ops["format"] == "tflite" and m.ops["delegate"] == "xnnpack" and m.ops["delegate_fallbacks"] == {}
    assert m.ops["ops"].get("CONV_2D", 0) >= 1
    latency = next(x for x in m.measurements if x.what == "latency")
    assert latency.where == "host-cpu" and "not on arm64's" in latency.note
    assert m.preprocessing.recorded is False and m.golden.origin.startswith("the compile's first")
    _check_phone_section(m, bundle)
    again = package(out, tmp_path / "again.tar.gz").path  # the phone section keeps packaging byte-identical
    assert again.read_bytes() == bundle.read_bytes()


def _check_phone_section(m, bundle: Path) -> None:
    """The manifest's android section (the tensors as the Interpreter sees them) and the README's
    Kotlin snippet; with an image normalization (none is recorded for this model) the snippet
    converts Bitmap pixels with the manifest's mean and std."""
    from edgepack.bundle.readme import readme

    a = m.android
    assert a.model == "model.tflite" and a.inputs[0].shape == [1, 28, 28, 1] and a.inputs[0].dtype == "float32"
    assert a.outputs[0].shape == [1, 10] and a.preprocess is None and a.labels is None
    assert "not embedded as TFLite metadata" in a.metadata
    name = m.name
    text = tarfile.open(bundle).extractfile(f"{name}/README.md").read().decode()
    assert text == readme(m)
    assert "## Android (Kotlin, LiteRT)" in text and 'context.assets.openFd("model.tflite")' in text
    assert "Interpreter(model, Interpreter.Options().setNumThreads(threads))" in text
    assert "fun toInput(values: FloatArray)" in text and "allocateDirect(3136)" in text  # 28*28*1 float32
    norm = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "formula": "(pixel - mean) / std",
            "pixel_range": [0, 255], "color": "BGR"}
    rgb = a.model_validate({**a.model_dump(), "inputs": [{**a.inputs[0].model_dump(), "shape": [1, 224, 224, 3]}],
                            "preprocess": {"size": [224, 224], "resize": "center_crop", "normalization": norm}})
    kotlin = readme(m.model_copy(update={"android": rgb}))
    assert "val MEAN = floatArrayOf(123.675f, 116.28f, 103.53f)" in kotlin and "fun toInput(bitmap: Bitmap)" in kotlin
    assert "val SHIFT = intArrayOf(0, 8, 16)" in kotlin and "createScaledBitmap(bitmap, 224, 224, true)" in kotlin


def test_full_integer_tflite_bundle_records_io_quantization(small_cnn, sample_sets, tmp_path):
    """mobile-npu's int8-in, int8-out .tflite: the manifest gives each I/O's integer tensor with its
    scale and zero point (what an Android app quantizes with), and the tolerance is int8's."""
    out = tmp_path / "out"
    edgepack.compile(small_cnn, target="mobile-npu", backends=["tflite"], input_shapes={"": (1, 1, 28, 28)},
                     output_dir=out, calib=sample_sets["mnist_calib"], precision="int8", runs=3, warmup=1,
                     progress=False)
    verdict = verify(package(out, tmp_path / "npu").path)
    assert verdict.exit_code == 0, verdict.checks
    m = verdict.manifest
    for tensor in (m.inputs[0], m.outputs[0]):
        own = tensor.artifact_tensor
        assert tensor.dtype == "float32" and own.dtype == "int8"
        assert own.quant is not None and own.quant.scale > 0 and -128 <= own.quant.zero_point <= 127
    assert m.ops["delegate"] == "nnapi" and m.golden.tolerances[0].rtol == 0.05
    phone_in, phone_out = m.android.inputs[0], m.android.outputs[0]  # what the app quantizes with
    assert phone_in.dtype == "int8" and phone_in.quantization == m.inputs[0].artifact_tensor.quant
    readme = (verdict_root := Path(verdict.bundle) / "README.md").read_text()
    q = phone_in.quantization
    assert f"/ {q.scale:.8g}f" in readme and ".coerceIn(-128, 127).toByte())" in readme, verdict_root
    assert f"* {phone_out.quantization.scale:.8g}f" in readme  # the int8 output dequantized


def test_a_recipe_run_packages_its_emit_stage_with_lineage(mnv2_out, tmp_path):
    """A run folder (its report says `run`) packages its emit stage; the lineage carries the recipe
    and every stage's key."""
    from edgepack.report import header
    from edgepack.report.schema import FlowReport

    run = tmp_path / "run"
    shutil.copytree(mnv2_out, run / "02-emit")
    stages = [{"kind": kind, "key": key, "passed": True, "gate": None, "gate_failures": [], "details": {}}
              for kind, key in (("prune", "aaaa1111"), ("emit", "bbbb2222"))]
    (run / "02-emit" / "stage.json").write_text(json.dumps(stages[1]))
    flow = FlowReport(**header("run"), recipe="mnv2-recipe", target="x86-vnni", output_dir=str(run), rows=[],
                      stages=stages)
    (run / "report.json").write_text(json.dumps(flow.to_json()))
    m = verify(package(run, tmp_path / "run.tar.gz").path).manifest
    assert m.backend == json.loads((mnv2_out / "report.json").read_text())["selected"]["backend"]
    assert (m.lineage.recipe, m.lineage.recipe_key) == ("mnv2-recipe", "bbbb2222")
    assert [(s.stage, s.key) for s in m.lineage.stages] == [("01-prune", "aaaa1111"), ("02-emit", "bbbb2222")]
    from_stage = verify(package(run / "02-emit", tmp_path / "stage.tar.gz").path).manifest
    assert from_stage.lineage == m.lineage


@pytest.mark.slow
@pytest.mark.board
def test_aarch64_tvm_bundle_is_refused_on_x86_before_running(small_cnn, tmp_path, tvm_cache):
    pytest.importorskip("tvm")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the refusal is checked on an x86-64 host")
    out = tmp_path / "out"
    edgepack.compile(small_cnn, target="arm64", backends=["tvm"], input_shapes={"": (1, 1, 28, 28)},
                     output_dir=out, precision="fp32", progress=False)
    bundle = package(out, tmp_path / "tvm.tar.gz").path  # golden outputs computed on the emulated board
    verdict = verify(bundle, LocalDevice())
    assert verdict.exit_code == 6, verdict.checks
    assert verdict.failed["detail"].startswith("local is x86_64, model.so is built for aarch64: refused before running")
    assert [c["check"] for c in verdict.checks] == ["structure", "hashes", "device"]
    m = verdict.manifest
    assert m.runtime.arch == "aarch64" and m.golden.computed_on == "qemu-aarch64 (emulated)"
    assert {x.where for x in m.measurements} == {"emulated"}  # parity and the emulated run: never latency
    on_board = verify(bundle, QemuDevice())
    assert on_board.exit_code == 0, on_board.checks
