"""What a device is: printed as one JSON object. Never imported by edgepack; run like the worker.

Standalone on purpose (stdlib only: no edgepack, not even numpy), so it answers on a device where
the runtime or numpy is missing, which is exactly when the answer matters: `edgepack verify`
and the remote devices ask it before anything is sent to run, and refuse an incompatible device
with one line instead of failing half-way.

    python probe.py [CPUINFO]    # CPUINFO: read instead of /proc/cpuinfo (a saved copy)

Keys (report.schema.DeviceEnv): arch (platform.machine(), amd64/arm64 spelled x86_64/aarch64),
system, python, cpu (model name), cores (usable), governor and temperature_c where readable,
flags (the CPU features of FLAGS it has, from /proc/cpuinfo; null where that is unreadable:
an artifact that needs one, such as a bf16 one, is then refused rather than emulated),
runtimes {pip package: version or null} read from installed package metadata (not imported:
importing OpenVINO or TVM costs seconds, and a broken install is the runner's to report).
"""

from __future__ import annotations

import glob
import json
import os
import platform
import sys

# pip packages whose version a bundle's compatibility check reads (the runtimes edgepack's
# session modules import, and numpy, which the worker needs)
PACKAGES = ("onnxruntime", "openvino", "ai-edge-litert", "tflite-runtime", "apache-tvm", "numpy")
# builds that install the same importable module under another package name
ALTERNATIVES = {"onnxruntime": ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml", "onnxruntime-qnn")}
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}
# CPU features that decide which kernels a runtime can use (x86, then Arm as Linux spells them):
# a copy of edgepack.hostinfo.SIMD_FLAGS (this script runs without edgepack; a test keeps them equal)
FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2",
)


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # a broken dist-info: present but unreadable
        return "unknown"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu(text: str) -> str | None:
    """The CPU's model name from /proc/cpuinfo (x86: "model name"; Arm: "Hardware"/"CPU part")."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Hardware", "Model", "cpu model"):
        if fields.get(key):
            return fields[key]
    if fields.get("CPU part"):
        return f"{fields.get('CPU implementer', '?')}/{fields['CPU part']}"
    return platform.processor() or None


def cpu_flags(text: str | None) -> list[str] | None:
    """The FLAGS a /proc/cpuinfo text lists (x86 says "flags", Arm "Features"; every core's line
    counted), sorted; None where there is no such line (unreadable file, an OS without one): no
    answer, which is not the same as no feature."""
    found, said = set(), False
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            said = True
            found.update(value.lower().split())
    return sorted(found.intersection(FLAGS)) if said else None


def _cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _temperature() -> float | None:
    """The hottest thermal zone in degrees C (sysfs gives millidegrees)."""
    values = []
    for path in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        text = _read(path)
        try:
            values.append(int(text) / 1000.0)
        except (TypeError, ValueError):
            continue
    return max(values) if values else None


def probe(cpuinfo: str = "/proc/cpuinfo") -> dict:
    machine = platform.machine().lower()
    text = _read(cpuinfo)
    return {
        "arch": ARCH_ALIASES.get(machine, machine),
        "system": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu(text or ""),
        "flags": cpu_flags(text),
        "cores": _cores(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "temperature_c": _temperature(),
        "runtimes": {p: _version(p) or next(filter(None, map(_version, ALTERNATIVES.get(p, ()))), None)
                     for p in PACKAGES},
    }


if __name__ == "__main__":
    # run as `python -c SOURCE` (remote devices) argv is just ["-c"]
    json.dump(probe(*sys.argv[1:2]), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
