"""Device round trip over SSH against this host's fresh-process timing, on one run of the same
artifact: what issue-level goals ask of `profile --device` (MobileNetV2, ImageNet weights).

- an x86 "device" reached through a private loopback sshd (tests/sshd.py), whose Python is this
  venv's: its p50 should sit within 10% of the local fresh-process p50 (same worker, same runtime);
- the round trip (lock + probe, push, warm-up and runs, pull, unlock) beyond the timed runs;
- two packagings of the same compile output, byte for byte.

Local and SSH repeats alternate, so a machine that gets busier meanwhile weighs on both.

    python benchmarks/devices.py [--repeats 5] [--runs 50] [--warmup 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common import export, source_module  # noqa: E402

from edgepack.compiler import BenchSettings  # noqa: E402
from edgepack.compiler.inputs import feeds  # noqa: E402
from edgepack.devices import LocalDevice, resolve  # noqa: E402
from edgepack.hostinfo import cpu_info  # noqa: E402


def _device_yaml(folder: Path, server) -> Path:
    known = folder / "known_hosts"
    known.write_text(server.known_hosts_line())
    entry = {"name": "loopback", "kind": "ssh", "host": "127.0.0.1", "port": server.port, "user": server.user,
             "key_file": str(server.user_key), "known_hosts": str(known), "workdir": str(folder / "jobs"),
             "python": sys.executable}
    path = folder / "devices.yaml"
    path.write_text(json.dumps({"devices": [entry]}))
    return path


def _timings(model: Path, devices: Path, args) -> list[dict]:
    bench = BenchSettings(args.runs, args.warmup, args.threads)
    inputs = feeds(None, [_spec()], 8)
    rows = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        local = LocalDevice().time("onnxruntime", model, inputs, threads=args.threads, warmup=args.warmup,
                                   runs=args.runs, progress=False)
        local_s = time.perf_counter() - t0
        run = resolve("loopback", devices).profile("onnxruntime", model, inputs, bench, None, False)
        rows.append({"local_p50": local["latency_ms"]["p50"], "local_s": local_s, "ssh_p50": run.latency_ms.p50,
                     "ssh_s": run.seconds, "ssh_runs_s": sum(run.samples_ms) / 1e3})
        print(f"repeat {i + 1}: local p50 {rows[-1]['local_p50']:.2f} ms ({local_s:.2f} s), ssh p50 "
              f"{run.latency_ms.p50:.2f} ms ({run.seconds:.2f} s, runs {rows[-1]['ssh_runs_s']:.2f} s)", flush=True)
    return rows


def _spec():
    from edgepack.ir.spec import TensorSpec

    return TensorSpec("input", (1, 3, 224, 224), "float32")


def _packaged_twice(model: Path, work: Path) -> tuple[str, str, float]:
    from edgepack import api
    from edgepack.bundle import package

    api.compile(model, target="x86-vnni", backends=["onnxruntime"], output_dir=work / "out", runs=5, warmup=1,
                threads=1, progress=False, track=False)
    digests, seconds = [], []
    for name in ("a.tar.gz", "b.tar.gz"):
        done = package(work / "out", work / name)
        digests.append(hashlib.sha256((work / name).read_bytes()).hexdigest())
        seconds.append(done.seconds)
    return digests[0], digests[1], statistics.median(seconds)


def main() -> None:
    import sshd as sshd_helper

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "devices.md"))
    args = ap.parse_args()
    if sshd_helper.ensure_openssh():
        sys.exit(f"devices benchmark: {sshd_helper.ensure_openssh()}")
    with tempfile.TemporaryDirectory(prefix="edgepack-devices-") as tmp:
        work = Path(tmp)
        model = work / "mobilenet_v2.onnx"
        export(source_module("mobilenet_v2")[0], model)
        server = sshd_helper.Sshd(work / "sshd").start()
        try:
            rows = _timings(model, _device_yaml(work, server), args)
        finally:
            server.stop()
        first, second, pack_s = _packaged_twice(model, work)
    _write(Path(args.out), rows, args, first == second, pack_s)


def _write(path: Path, rows: list[dict], args, identical: bool, pack_s: float) -> None:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    cpu = cpu_info()
    lines = [
        "# Devices: the x86 loopback device over SSH against this host's fresh process",
        "",
        f"`python benchmarks/devices.py --repeats {args.repeats} --runs {args.runs} --warmup {args.warmup} "
        f"--threads {args.threads}`; {cpu['model']} ({cpu['logical_cores']} cores), MobileNetV2 (ImageNet "
        "weights) FP32 in ONNX Runtime, batch 1; local and SSH repeats alternate. Medians over repeats.",
        "",
        "| repeat | local p50 (ms) | SSH p50 (ms) | ratio | SSH round trip (s) | of which timed runs (s) | beyond the runs (s) | local job (s) | beyond a local job (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate([*rows, med]):
        label = "median" if i == len(rows) else str(i + 1)
        lines.append(f"| {label} | {r['local_p50']:.2f} | {r['ssh_p50']:.2f} | {r['ssh_p50'] / r['local_p50']:.3f} | "
                     f"{r['ssh_s']:.2f} | {r['ssh_runs_s']:.2f} | {r['ssh_s'] - r['ssh_runs_s']:.2f} | "
                     f"{r['local_s']:.2f} | {r['ssh_s'] - r['local_s']:.2f} |")
    lines += ["", f"Two packagings of the same compile output: {'byte-identical' if identical else 'DIFFERENT'} "
              f"(.tar.gz sha256), {pack_s:.2f} s each.", ""]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
