"""What machine and libraries a result was measured on.

Latency means little without the CPU, its SIMD features and the library versions behind it,
so reports embed `environment()`; `cpu_info()` also feeds host detection in `targets.py`.
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata

import psutil

# Flags that decide which kernels a runtime can use (x86, then Arm as Linux spells them).
SIMD_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2",
)

# Flags that mean the CPU computes in BF16 natively, per architecture (any one suffices); without
# them a runtime asked for BF16 converts in software, slower than FP32 and less exact.
BF16_FLAGS = {"x86_64": ("avx512_bf16", "amx_bf16"), "aarch64": ("bf16",)}

# Report key -> distribution name(s); versions come from metadata so nothing heavy is imported.
_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime",),
    "torch": ("torch",),
    "onnxslim": ("onnxslim",),
    "openvino": ("openvino",),
    "nncf": ("nncf",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "ai_edge_litert": ("ai-edge-litert",),
    "tvm": ("apache-tvm",),
    "mlflow": ("mlflow",),
}

# platform.machine() spellings on other OSes -> the Linux names profiles use. (devices/probe.py
# keeps its own copy: it runs on devices without edgepack.)
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


def arch_name(machine: str | None) -> str:
    """One spelling per CPU architecture (x86_64, aarch64), whatever the OS or a triple calls it."""
    name = str(machine or "").strip().lower()
    return ARCH_ALIASES.get(name, name)


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@functools.cache
def cpu_info() -> dict:
    """Model, arch, lowercase feature flags and core counts of this machine (read once)."""
    model, flags = "", set()
    for line in _read_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):  # x86 says flags, Arm says Features
            flags.update(value.lower().split())
        elif not model and key in ("model name", "hardware", "cpu model"):
            model = value.strip()
    machine = platform.machine()
    logical = psutil.cpu_count(logical=True) or 1
    return {
        "model": model or platform.processor() or machine or "unknown",
        "arch": arch_name(machine) or machine,
        "flags": sorted(flags),
        "logical_cores": logical,
        # psutil returns None where it cannot tell (some containers, some Arm boards).
        "physical_cores": psutil.cpu_count(logical=False) or logical,
    }


def lacks_bf16(arch: str | None, flags) -> str | None:
    """None where a CPU of `arch` with feature `flags` (None: unknown) computes BF16 natively; else
    what it lacks, as the end of a sentence about that CPU. The one decision: this host's check and
    a device's (devices/compat.py, from its probe) both ask it."""
    arch = arch_name(arch)
    wanted = BF16_FLAGS.get(arch, ())
    if flags is None:
        return "does not list its CPU flags (no readable /proc/cpuinfo)"
    if set(wanted) & set(flags):
        return None
    if not wanted:
        return f"is {arch or 'of an unknown architecture'}, for which no native BF16 is known"
    return f"has none of the flags {', '.join(wanted)}"


def missing_bf16(info: dict | None = None) -> str | None:
    """None where the CPU (`info`, default this one) runs BF16 natively; else one line saying
    which flags it lacks."""
    info = info or cpu_info()
    lack = lacks_bf16(info["arch"], info["flags"])
    if lack is None:
        return None
    return (f"--precision bf16: this CPU ({info['model']}) {lack}, "
            "so BF16 would be emulated (slower than FP32 and less exact): use fp32, fp16 or int8")


def library_versions() -> dict[str, str]:
    """Versions of Python and the installed ML libraries; libraries not installed are left out."""
    versions = {"python": platform.python_version()}
    for key, dists in _DISTRIBUTIONS.items():
        for dist in dists:
            try:
                versions[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def environment() -> dict:
    """The environment block of a report: CPU (SIMD flags only), OS and library versions."""
    cpu = dict(cpu_info())
    cpu["flags"] = [f for f in cpu["flags"] if f in SIMD_FLAGS]
    return {"cpu": cpu, "os": platform.platform(), "libraries": library_versions()}
