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
    assert profile.backend_options("tvm").target["mtriple"] == "aarch64-linux-gnu"


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


# ---------------------------------------------------------------- runtimes and their backends' options


def _runtimes_edit(tmp_path: Path, base: str, edit) -> Path:
    """A user profile whose runtimes list is `edit(runtimes)` of a shipped profile's."""
    data = yaml.safe_load((targets_dir() / f"{base}.yaml").read_text())
    data["runtimes"] = edit(data["runtimes"])
    return _write_variant(tmp_path, base, **data)


def test_runtime_name_not_in_registry_lists_the_registry(tmp_path):
    from edgepack.backends import REGISTRY

    path = _runtimes_edit(tmp_path, "x86-avx2", lambda rs: [*rs, {"backend": "tensorrt", "supported_ops": "all"}])
    with pytest.raises(EdgepackError) as e:
        load_profile(str(path))
    msg = str(e.value)
    assert "\n" not in msg and "mine.yaml" in msg and "runtimes[3].backend" in msg and "'tensorrt'" in msg
    assert f"available: {', '.join(REGISTRY)}" in msg
    path = _runtimes_edit(tmp_path, "x86-avx2", lambda rs: [*rs[:2], {**rs[2], "backend": "tvn"}])
    with pytest.raises(EdgepackError, match=r"runtimes\[2\]\.backend: unknown backend 'tvn' \(did you mean: tvm\?\)"):
        load_profile(str(path))


def test_bad_runtime_option_is_one_line_naming_file_runtime_and_field(tmp_path):
    path = _runtimes_edit(tmp_path, "x86-avx2", lambda rs: [*rs[:2], {**rs[2], "options": {"tune_secnds": 5}}])
    with pytest.raises(EdgepackError) as e:
        load_profile(str(path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    assert "runtimes[2].options: tvm options: tune_secnds: unknown field (did you mean: tune_seconds" in msg
    path = _runtimes_edit(tmp_path, "x86-avx2", lambda rs: [rs[0], {**rs[1], "options": {"num_streams": 0}}, rs[2]])
    with pytest.raises(EdgepackError, match=r"runtimes\[1\]\.options: openvino options: num_streams: must be >= 1"):
        load_profile(str(path))
    # a backend without settings takes none
    path = _runtimes_edit(tmp_path, "x86-avx2", lambda rs: [{**rs[0], "options": {"threads": 2}}, *rs[1:]])
    with pytest.raises(EdgepackError, match=r"runtimes\[0\]\.options: onnxruntime options: threads: unknown field"):
        load_profile(str(path))


def test_options_reach_the_profile_validated():
    from edgepack.backends.options import OnnxRuntimeOptions, OpenVinoOptions, TvmOptions

    avx2 = load_profile("x86-avx2")
    assert avx2.backend_options("tvm") == TvmOptions(target={"kind": "llvm", "mcpu": "haswell"})
    assert avx2.backend_options("openvino") == OpenVinoOptions()
    assert avx2.backend_options("onnxruntime") == OnnxRuntimeOptions()
    # a runtime the target does not list (asked for explicitly) gets its backend's defaults
    assert load_profile("mobile-npu").backend_options("tvm") == TvmOptions()
    with pytest.raises(EdgepackError, match="unknown backend 'tvn'"):
        avx2.backend_options("tvn")


def test_host_profile_detects_the_tvm_target_and_keeps_other_options():
    host = detect_host(_x86("avx2"))
    assert host.derived_from == "x86-avx2"
    assert host.backend_options("tvm").target is None  # compiling for the machine itself
    assert load_profile("x86-avx2").backend_options("tvm").target == {"kind": "llvm", "mcpu": "haswell"}
    assert [r.backend for r in host.runtimes] == load_profile("x86-avx2").backends


def test_to_dict_round_trips_with_options():
    """The pipeline's resume key hashes to_dict(): it must carry every backend's options."""
    from edgepack.targets import TargetProfile

    for p in list_profiles():
        data = p.to_dict()
        assert "tvm" not in data
        assert TargetProfile.model_validate(data) == p
    arm = load_profile("arm64").to_dict()
    tvm = next(r for r in arm["runtimes"] if r["backend"] == "tvm")
    assert tvm["options"]["target"]["mtriple"] == "aarch64-linux-gnu" and tvm["options"]["tune_trials"] == 0


def test_old_tvm_section_says_where_it_moved(tmp_path):
    path = _write_variant(tmp_path, "x86-avx2", tvm={"target": {"kind": "llvm", "mcpu": "haswell"}})
    with pytest.raises(EdgepackError, match=r"tvm: this section moved into the tvm runtime's options"):
        load_profile(str(path))


def test_loading_a_profile_imports_no_runtime():
    import subprocess
    import sys

    code = ("import sys; from edgepack.targets import list_profiles; list_profiles(); "
            "print(sorted(m for m in ('openvino', 'tvm', 'onnxruntime', 'ai_edge_litert', 'torch', "
            "'edgepack.backends.base') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
