"""LiteRT's `benchmark_model` binary as a device's runner for .tflite artifacts.

A phone without Python (most of them) runs TFLite through the C++ benchmark tool instead of the
worker: the device's devices.yaml entry names the binary (`benchmark_model: /data/local/tmp/...`).
The choice is data: a device with that path runs every TFLite artifact this way (through its
transport: adb for phones, ssh for boards), and everything else with the Python worker.

    model pushed into a job folder -> bench.benchmark_model.command(...) run there ->
    its output parsed (bench.benchmark_model.parse) -> bench.stats.device_run(runner="benchmark_model")

What the binary cannot give is said, not invented: no per-run samples (so no percentiles or
confidence interval: its own aggregates go to summary_ms), and no outputs (so no parity: verify
the bundle on a device with Python for that). It times its own random inputs.
The device is described by a shell probe (uname, getprop, /proc, /sys): no Python needed there.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath

from edgepack.bench.benchmark_model import command, parse
from edgepack.bench.stats import device_run
from edgepack.devices.base import batch_of, read_probe
from edgepack.devices.transports import last_line
from edgepack.errors import EdgepackError

BACKENDS = ("tflite",)  # what benchmark_model runs: .tflite flatbuffers only
NOTE = ("LiteRT benchmark_model: its own aggregates (no per-run samples), its own random inputs, no outputs "
        "(no parity on the device)")

# $1: the benchmark_model path. One JSON line, read by environment(): sh, uname, getprop and
# /proc or /sys files only (a phone has no Python). Unreadable values stay empty.
_ENV_SCRIPT = r"""bm=$1
if [ -x "$bm" ]; then ok=1; else ok=0; fi
arch=$(uname -m 2>/dev/null); sys="$(uname -s 2>/dev/null) $(uname -r 2>/dev/null)"
model=$(getprop ro.product.model 2>/dev/null); android=$(getprop ro.build.version.release 2>/dev/null)
cpu=$(grep -m1 -E '^(model name|Hardware)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
cores=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null)
gov=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null)
temp=$(cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null)
q() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n\r'; }
printf '{"ok":%s,"arch":"%s","system":"%s","model":"%s","android":"%s","cpu":"%s","cores":"%s","governor":"%s","temp":"%s"}\n' \
  "$ok" "$(q "$arch")" "$(q "$sys")" "$(q "$model")" "$(q "$android")" "$(q "$cpu")" "$(q "$cores")" \
  "$(q "$gov")" "$(q "$temp")"
"""


def applies(device, backend: str) -> bool:
    """True when `device` runs `backend`'s artifacts with benchmark_model (its entry names one)."""
    return bool(getattr(device, "benchmark_model", None)) and backend in BACKENDS


def environment(device) -> dict:
    """The device as DeviceEnv fields, from the shell probe; one line when the binary is missing."""
    lines: list[str] = []
    rc, err = device.transport.run(["sh", "-c", _ENV_SCRIPT, "sh", device.benchmark_model], 120, lines.append)
    found = read_probe(device.name, rc, "\n".join(lines), err, key="ok")
    if not found["ok"]:
        raise EdgepackError(f"{device.name}: no executable benchmark_model at {device.benchmark_model} on the device "
                            "(push LiteRT's benchmark_model there, or fix `benchmark_model:` in devices.yaml)")
    system = found["system"].strip() + (f" (Android {found['android']})" if found["android"] else "")
    temp = found["temp"].strip()
    return {"arch": found["arch"] or "unknown", "system": system or "unknown", "python": None,
            "cpu": found["cpu"] or found["model"] or None,
            "cores": int(found["cores"]) if found["cores"].isdigit() else None,
            "governor": found["governor"] or None,
            "temperature_c": int(temp) / 1000 if temp.lstrip("-").isdigit() else None,
            "runtimes": {"benchmark_model": device.benchmark_model}, "device_model": found["model"] or None}


def profile(device, backend: str, artifact: Path, feeds: list[dict], bench, progress: bool = False):
    """The round trip as a DeviceRun: the model pushed, benchmark_model run with `bench`'s
    settings (runs, warmup, threads), its output parsed, the job folder removed."""
    t0 = time.perf_counter()
    artifact = Path(artifact)
    if not artifact.is_file():
        raise EdgepackError(f"{artifact}: no such file")
    remote = PurePosixPath(device.workdir) / f"job-{uuid.uuid4().hex[:12]}"
    with device.session(), tempfile.TemporaryDirectory(prefix="edgepack-bm-") as tmp:
        env = environment(device)
        stage = Path(tmp) / "job"
        stage.mkdir()
        (stage / artifact.name).write_bytes(artifact.read_bytes())
        lines: list[str] = []
        try:
            device.transport.push(stage, str(remote))
            argv = command(device.benchmark_model, str(remote / artifact.name), threads=bench.threads,
                           runs=bench.runs, warmup=bench.warmup)
            rc, err = device.transport.run([*device.pin(), *argv], device.timeout_s, lines.append, env=device.env)
        finally:
            device.transport.remove(str(remote))
    text = "\n".join([*lines, err])  # the tool logs to stderr, or to stdout where adb merges them
    if rc != 0:
        raise EdgepackError(f"{device.name}: benchmark_model failed on {artifact.name}: "
                            f"{last_line(err or text, f'exit {rc}')}")
    raw = {**parse(text), "note": NOTE}
    return device_run(raw, device.name, device.kind, device.emulated, env, threads=bench.threads,
                      batch=batch_of(feeds), seconds=round(time.perf_counter() - t0, 3))
