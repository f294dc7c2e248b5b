"""Bounds before work (issue 12, item 4): hostile input is refused by its declared size before it
is expanded, read or decoded, in one short `edgepack: error:` line, fast and in bounded memory.

Every hostile file is generated here (nothing checked in). The CLI runs in a subprocess under a
2 GB address-space limit: a refusal that first allocates the thing it refuses fails that way."""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np
import onnx
import pytest

from helpers import conv_relu, message_lines, run_cli

# Bounded work is shown by memory, not by a clock: before these bounds the YAML bomb took 8.3 GB
# (85 s) and the npz 5.1 GB, both far past this limit. The subprocess timeout only catches a hang.
MEMORY_LIMIT = 2 << 30


def run_limited(*args, cwd=None, timeout=900) -> tuple[subprocess.CompletedProcess, float]:
    """run_cli's subprocess, under RLIMIT_AS = 2 GB; (result, seconds taken)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, env=env, timeout=timeout, preexec_fn=limit)
    return r, time.perf_counter() - start


def one_error(r: subprocess.CompletedProcess, *needles: str, rc: int = 1) -> str:
    """The single `edgepack: error:` line (short, no traceback) holding every needle."""
    lines = message_lines(r.stderr)
    assert r.returncode == rc, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert len(lines) == 1 and lines[0].startswith("edgepack: error: "), lines[:5]
    assert len(lines[0]) < 1000
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_relu(1, 4, 28), path)
    return path


def billion_laughs(levels: int = 9) -> str:
    """~600 bytes of YAML whose aliases expand to 10**9 values."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- YAML


def test_billion_laughs_target_file_is_refused_fast_in_bounded_memory(tmp_path, model):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs() + "name: *a9\n")
    r, _ = run_limited("compile", model, "--target", bomb, "-o", tmp_path / "out", cwd=tmp_path)
    one_error(r, "bomb.yaml", "aliases expand")
    assert not (tmp_path / "out").exists()


def test_billion_laughs_recipe_is_refused_fast_in_bounded_memory(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(billion_laughs() + "name: x\nteacher: {model: *a9}\ndata: {train: d.npz}\n"
                      "stages: [{emit: {}}]\n")
    r, _ = run_limited("run", recipe, "-o", tmp_path / "run", cwd=tmp_path)
    one_error(r, "recipe.yaml", "aliases expand")


def test_small_anchors_still_load_and_recursive_ones_are_refused(tmp_path):
    from edgepack.errors import EdgepackError
    from edgepack.schema import read_yaml_mapping

    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {a: 1, b: [1, 2]}\nboth: [*b, *b]\n")
    assert read_yaml_mapping(ok, "recipe")["both"][1] == {"a": 1, "b": [1, 2]}
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [1, *a]\n")
    with pytest.raises(EdgepackError, match="recursive alias"):
        read_yaml_mapping(loop, "recipe")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(EdgepackError, match="nested too deeply"):
        read_yaml_mapping(deep, "recipe")


def test_a_yaml_file_over_a_megabyte_is_refused_before_parsing(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "# padding\n" * 200_000)
    r = run_cli("targets", "show", big)
    one_error(r, "big.yaml", "refused above 1,048,576")


def test_a_long_bad_value_gives_a_short_error_line(tmp_path):
    import yaml

    from helpers import ROOT

    profile = yaml.safe_load((ROOT / "targets" / "x86-avx2.yaml").read_text())
    bad = tmp_path / "long.yaml"
    bad.write_text(yaml.safe_dump(profile | {"benchmark": "x" * 200_000, "k" * 50_000: 1}, width=10 ** 9))
    r = run_cli("targets", "show", bad)
    line = one_error(r, "long.yaml", "benchmark", "kkk...: unknown field")
    assert "xxx..." in line and len(line) < 1000


def test_error_messages_are_bounded_whatever_they_quote():
    from edgepack.errors import MESSAGE_CHARS, EdgepackError, excerpt

    assert len(str(EdgepackError("y" * 10_000_000))) < MESSAGE_CHARS + 100
    assert len(excerpt("z" * 10_000_000)) <= 200 and excerpt("z" * 1000).endswith("...")
    assert excerpt(list(range(10_000))) == "<list of 10000 items>"


# --------------------------------------------------------------------------- arrays and images


def huge_npz(path, shape=(800_000, 1, 28, 28)) -> None:
    """An .npz whose member declares `shape` float32 but holds a few MB (today: read in full)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            for _ in range(3):
                f.write(b"\0" * (1 << 20))


def test_an_npz_declaring_a_huge_array_is_refused_before_reading(tmp_path, model):
    huge_npz(tmp_path / "huge.npz")
    r, _ = run_limited("compile", model, "--calib", tmp_path / "huge.npz", "-o", tmp_path / "out")
    one_error(r, "huge.npz", "'x.npy'", "[800000, 1, 28, 28] float32", "GiB")


def test_npy_headers_are_checked_without_reading(tmp_path):
    from edgepack.data import load_dataset
    from edgepack.errors import EdgepackError

    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_2_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 6, 10 ** 4)})
        f.write(b"\0" * 1000)
    with pytest.raises(EdgepackError, match=r"huge.npy: declares a \[1000000, 10000\] float64 array"):
        load_dataset(tmp_path / "huge.npy")
    np.save(tmp_path / "short.npy", np.zeros((4, 3), np.float32))
    (tmp_path / "short.npy").write_bytes((tmp_path / "short.npy").read_bytes()[:-8])
    with pytest.raises(EdgepackError, match="truncated"):
        load_dataset(tmp_path / "short.npy")
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as z:
        z.writestr("notes.txt", "not an array")
    with pytest.raises(EdgepackError, match="'notes.txt' is not an .npy array"):
        load_dataset(tmp_path / "raw.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([1, "a"], dtype=object))
    with pytest.raises(EdgepackError, match="object arrays are not supported"):
        load_dataset(tmp_path / "obj.npz")
    np.savez(tmp_path / "ok.npz", x=np.zeros((2, 3), np.float32))
    assert load_dataset(tmp_path / "ok.npz").inputs["x"].shape == (2, 3)


def png_header(path, width: int, height: int) -> None:
    """A PNG declaring width x height with almost no pixel data: a decoder would allocate it all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [(10_000, 8_000), (60_000, 60_000)])
def test_an_oversized_image_is_refused_by_its_header(tmp_path, model, width, height):
    folder = tmp_path / "imgs"
    folder.mkdir()
    png_header(folder / "a.png", width, height)
    (folder / "preprocess.yaml").write_text("size: [28, 28]\ncolor: GRAY\n")
    r, _ = run_limited("compile", model, "--calib", folder, "-o", tmp_path / "out")
    one_error(r, "a.png", "refused above 64,000,000 pixels")


def test_an_image_set_too_big_for_memory_is_refused_before_decoding(tmp_path):
    from PIL import Image

    from edgepack.data import load_dataset
    from edgepack.errors import EdgepackError

    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "preprocess.yaml").write_text("size: [100000, 100000]\ncolor: GRAY\n")
    with pytest.raises(EdgepackError, match="1 images at size 100000x100000 need"):
        load_dataset(tmp_path)


# --------------------------------------------------------------------------- benchmark settings


@pytest.mark.parametrize("option,value,needle", [
    ("--runs", "0", "runs must be between 1 and"), ("--warmup", "-1", "warmup must be between 0 and"),
    ("--threads", "0", "threads must be at least 1"), ("--runs", "1000000000", "runs must be between"),
    ("--runs", "3.5", "expected a whole number")])
def test_bench_settings_are_refused_at_parse_time(tmp_path, model, option, value, needle):
    huge_npz(tmp_path / "calib.npz")  # never reached: parsing refuses first
    r, _ = run_limited("compile", model, "--calib", tmp_path / "calib.npz", "--precision", "int8",
                          option, value, "-o", tmp_path / "out")
    one_error(r, needle, option, rc=2)
    assert "usage:" not in r.stderr and "lowered" not in r.stderr


def test_bench_settings_are_checked_by_the_python_api(model):
    import edgepack
    from edgepack.compiler import BenchSettings
    from edgepack.errors import EdgepackError

    for kwargs in ({"runs": 0}, {"warmup": -1}, {"threads": 0}, {"runs": 2.5}, {"runs": True},
                   {"runs": 10 ** 9}):
        with pytest.raises(EdgepackError):
            BenchSettings(**kwargs)
    assert BenchSettings(np.int64(3), 0, 1) == BenchSettings(3, 0, 1)
    with pytest.raises(EdgepackError, match="runs must be between"):
        edgepack.compile(str(model), runs=0, progress=False)


def test_threads_beyond_the_cores_are_capped_with_a_warning(tmp_path, model):
    from edgepack.compiler.request import usable_cores

    r = run_cli("profile", model, "--threads", "100000", "--runs", "2", "--warmup", "0", "--json",
                "-o", tmp_path / "out", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [ln for ln in message_lines(r.stderr) if "warning" in ln]
    assert warnings == [f"edgepack: warning: --threads 100000 is more than the {usable_cores()} cores this "
                        f"machine gives edgepack; using {usable_cores()}"]
    assert json.loads(r.stdout)["artifacts"][0]["threads"] == usable_cores()


# --------------------------------------------------------------------------- the watchdog


def test_the_watchdog_deadline_scales_with_the_work():
    from edgepack.devices.local import RUN_FLOOR_S, SAFETY, runs_allowance

    assert runs_allowance(10, 1.0) == RUN_FLOOR_S  # tiny work: the floor
    assert runs_allowance(1_000_000, 5.0) == pytest.approx(1_000_000 * 5e-3 * SAFETY)
    assert runs_allowance(2_000_000, 5.0) == 2 * runs_allowance(1_000_000, 5.0)


def test_the_deadline_moves_to_the_runs_allowance_once_the_first_inference_reports(tmp_path, monkeypatch):
    """A worker that reports a 1 ms first inference and then hangs is killed at the runs'
    allowance (here 2 s), not at the start-up allowance (120 s)."""
    from edgepack.devices import local
    from edgepack.errors import EdgepackError

    monkeypatch.setattr(local, "RUN_FLOOR_S", 2)
    script = tmp_path / "w.py"
    script.write_text("import json, time\nprint(json.dumps({'first_ms': 1.0}), flush=True)\ntime.sleep(600)\n")
    start = time.perf_counter()
    with pytest.raises(EdgepackError, match="did not finish within"):
        local.run_worker([sys.executable, str(script)], tmp_path, lambda n: None, 120, work=100)
    assert time.perf_counter() - start < 300  # well before the 600 s the worker would sleep
