"""Target profiles: the shipped YAML loads, host detection follows the data, errors are helpful."""

from pathlib import Path

import pytest
import yaml

from edgepack import hostinfo
from edgepack.errors import EdgepackError
from edgepack.targets import detect_host, list_profiles, load_profile, targets_dir

SHIPPED = ["arm64", "mobile-npu", "x86-avx2", "x86-vnni"]


def _x86(*flags):
    return {"model": "Fake CPU", "arch": "x86_64", "flags": list(flags)}


def _write_variant(tmp_path: Path, base: str, text_edit=None, **changes) -> Path:
    """A user profile file: a shipped profile with some fields changed."""
    data = yaml.safe_load((targets_dir() / f"{base}.yaml").read_text())
    data.update(changes)
    text = yaml.safe_dump(data, sort_keys=False)
    path = tmp_path / "mine.yaml"
    path.write_text(text_edit(text) if text_edit else text)
    return path


def test_shipped_profiles_load():
    profiles = list_profiles()
    assert [p.name for p in profiles] == SHIPPED
    for p in profiles:
        assert load_profile(p.name) == p
        assert p.runtimes and p.pruning.channel_multiple >= 1
        assert p.to_dict()["name"] == p.name


@pytest.mark.parametrize(
    "info, expected",
    [
        (_x86("sse4_2", "avx", "avx2", "fma"), "x86-avx2"),
        (_x86("avx2"), "x86-avx2"),
        (_x86("avx2", "avx512f", "avx512_vnni"), "x86-vnni"),
        (_x86("avx2", "avx_vnni"), "x86-vnni"),
        (_x86("AVX2", "AMX_INT8"), "x86-vnni"),
        ({"model": "Cortex-A72", "arch": "aarch64", "flags": ["fp", "asimd", "crc32"]}, "arm64"),
        ({"model": "Apple M1", "arch": "arm64", "flags": ["asimd", "asimddp"]}, "arm64"),
    ],
)
def test_detect_host_from_flags(info, expected):
    host = detect_host(info)
    assert host.name == "host"
    assert host.derived_from == expected
    assert expected in host.description
    assert host.cpu.host_match


def test_detect_host_names_deciding_flags():
    host = detect_host(_x86("avx2", "avx512_vnni"))
    assert "avx512_vnni" in host.description
    assert host.quantization == load_profile("x86-vnni").quantization


def test_detect_host_never_picks_npu_and_fails_clearly():
    with pytest.raises(EdgepackError, match=r"arch x86_64.*sse4_2"):
        detect_host(_x86("sse4_2"))  # no AVX2: nothing fits, mobile-npu (host_match false) neither
    with pytest.raises(EdgepackError, match="riscv64"):
        detect_host({"model": "?", "arch": "riscv64", "flags": []})


def test_detect_host_on_this_machine():
    host = load_profile("host")
    assert host.name == "host" and host.derived_from in SHIPPED
    assert host.effective_threads() >= 1
    env = hostinfo.environment()
    assert env["cpu"]["arch"] == hostinfo.cpu_info()["arch"]
    assert set(env["cpu"]["flags"]) <= set(hostinfo.SIMD_FLAGS)
    assert "python" in env["libraries"] and "onnx" in env["libraries"]


def test_unknown_name_suggests_close_names():
    with pytest.raises(EdgepackError, match=r"did you mean: x86-vnni"):
        load_profile("x86-vni")


def test_user_yaml_file(tmp_path):
    path = _write_variant(tmp_path, "arm64", name="my-board", description="my board")
    profile = load_profile(str(path))
    assert profile.name == "my-board"
    assert profile.tvm.target["mtriple"] == "aarch64-linux-gnu"


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(EdgepackError, match="not found"):
        load_profile(str(tmp_path / "nope.yaml"))
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(EdgepackError, match="empty"):
        load_profile(str(tmp_path / "empty.yaml"))


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ncpu: {arch: x86_64\nprecision: int8\n")
    with pytest.raises(EdgepackError, match=r"bad\.yaml:\d+: YAML syntax error") as e:
        load_profile(str(path))
    assert "\n" not in str(e.value)


def test_schema_error_names_field(tmp_path):
    path = _write_variant(
        tmp_path, "x86-vnni", text_edit=lambda t: t.replace("dtype: int8", "dtype: int4", 1)
    )
    with pytest.raises(EdgepackError, match=r"quantization\.weights\.dtype: .*'int8'.*int4") as e:
        load_profile(str(path))
    assert "\n" not in str(e.value)


def test_typo_in_field_name_suggests_field(tmp_path):
    path = _write_variant(tmp_path, "x86-avx2", precison="fp32")
    with pytest.raises(EdgepackError, match=r"precison: unknown field \(did you mean: precision"):
        load_profile(str(path))
    path = _write_variant(
        tmp_path, "x86-avx2", text_edit=lambda t: t.replace("reduce_range:", "reduce_rang:")
    )
    with pytest.raises(EdgepackError, match=r"quantization\.reduce_rang: unknown field") as e:
        load_profile(str(path))
    assert "missing" not in str(e.value)  # the misspelling is reported once, as unknown


def test_unknown_op_type_and_duplicate_key(tmp_path):
    path = _write_variant(
        tmp_path, "mobile-npu", text_edit=lambda t: t.replace("- Sigmoid", "- Sigmoidd", 1)
    )
    with pytest.raises(EdgepackError, match=r"quantization\.op_types: 'Sigmoidd' is not an ONNX"):
        load_profile(str(path))
    path = tmp_path / "dup.yaml"
    path.write_text((targets_dir() / "arm64.yaml").read_text() + "precision: fp32\n")
    with pytest.raises(EdgepackError, match="duplicate key 'precision'"):
        load_profile(str(path))


def test_unsupported_ops_reported():
    npu = load_profile("mobile-npu")
    ops = ["Conv", "Relu", "LayerNormalization", "Erf", "Add"]
    assert npu.unsupported_ops(ops, "tflite") == ["Erf", "LayerNormalization"]
    assert load_profile("x86-avx2").unsupported_ops(ops, "onnxruntime") == []
    with pytest.raises(EdgepackError, match="no runtime 'openvino'"):
        npu.unsupported_ops(ops, "openvino")


def test_targets_dir_override(tmp_path, monkeypatch):
    (tmp_path / "only.yaml").write_text(
        (targets_dir() / "x86-avx2.yaml").read_text().replace("name: x86-avx2", "name: only")
    )
    monkeypatch.setenv("EDGEPACK_TARGETS_DIR", str(tmp_path))
    assert [p.name for p in list_profiles()] == ["only"]
    assert detect_host(_x86("avx2", "avx512_vnni")).derived_from == "only"
