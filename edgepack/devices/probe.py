"""What a device is, printed as one JSON object: run on the device before anything is sent.

Standalone on purpose (stdlib only: no edgepack, no numpy), so it runs on a bare board whose
Python has nothing installed yet, and can tell the user what is missing instead of failing.
Runtime versions come from installed package metadata (importlib.metadata), not from imports:
importing a runtime under emulation costs seconds, reading its metadata costs nothing.

    python probe.py [DISTRIBUTION ...]

Prints {"arch", "system", "python", "cpu", "cores", "governor", "temperature_c",
"runtimes": {distribution: version or null}} for the distributions named (a default set when
none are).
"""

import glob
import json
import os
import platform
import sys

DEFAULT = ("numpy", "onnxruntime", "openvino", "ai-edge-litert", "tflite-runtime", "apache-tvm")


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu():
    """The CPU's model name from /proc/cpuinfo (x86 "model name", ARM "Hardware"/"CPU part")."""
    text = _read("/proc/cpuinfo") or ""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Hardware", "Model"):
        if fields.get(key):
            return fields[key]
    if fields.get("CPU part"):
        return f"ARM implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return platform.processor() or None


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _temperature():
    """The hottest thermal zone in degrees C, where the kernel exposes any."""
    temps = []
    for path in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        value = _read(path)
        try:
            temps.append(int(value) / 1000.0)
        except (TypeError, ValueError):
            pass
    return max(temps) if temps else None


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except Exception:  # PackageNotFoundError, or broken metadata: either way not usable
        return None


def main(argv):
    dists = argv or list(DEFAULT)
    info = {
        "arch": platform.machine(), "system": platform.platform(), "python": platform.python_version(),
        "cpu": _cpu(), "cores": _cores(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "temperature_c": _temperature(),
        "runtimes": {d: _version(d) for d in dists},
    }
    print(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1:])
