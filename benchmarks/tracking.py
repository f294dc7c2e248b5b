"""What tracking costs, and whether concurrent runs all land: the goals of the tracking issue.

- a small compile (`edgepack compile`, ONNX Runtime FP32) tracked and with `--no-track`, alternated;
- the demo (`edgepack demo`) tracked and with `--no-track`, alternated (`--demo`; minutes each);
- `--procs` processes x `--each` compiles at once into one fresh default store, then every run
  counted (FINISHED parents, registered versions) once the recorders are done.

Each command runs as a user runs it (a fresh `edgepack` process in a scratch working directory,
whose ./mlruns-edgepack is the default store). Medians of wall seconds; the machine is shared.

    python benchmarks/tracking.py [--repeats 5] [--demo] [--procs 4 --each 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import conv_relu  # noqa: E402

from edgepack.hostinfo import cpu_info  # noqa: E402

EDGEPACK = [sys.executable, "-m", "edgepack"]
QUICK = ["-t", "x86-vnni", "-b", "onnxruntime", "--runs", "5", "--warmup", "1", "--no-progress"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEPACK_NO_TRACK", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _timed(argv: list[str], cwd: Path) -> float:
    """Seconds until the command exits (when a terminal gets its prompt back). Its output goes to
    a file, not a pipe: the recorder it leaves behind inherits stderr, and reading a pipe to its
    end would wait for the record too."""
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.run([*EDGEPACK, *argv], cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
        seconds = time.perf_counter() - t0
        if proc.returncode not in (0, 3):
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}: {err.read()[-500:]}")
    return seconds


def _paired(make_argv, cwd: Path, repeats: int, label: str) -> dict:
    """Tracked and untracked runs alternated; the first pair warms caches and is not counted."""
    times = {"tracked": [], "untracked": []}
    for i in range(repeats + 1):
        for mode in ("tracked", "untracked"):
            seconds = _timed(make_argv(f"{label}-{mode}-{i}") + ([] if mode == "tracked" else ["--no-track"]), cwd)
            if i:
                times[mode].append(seconds)
        if i:
            print(f"{label} {i}: tracked {times['tracked'][-1]:.2f} s, untracked {times['untracked'][-1]:.2f} s",
                  flush=True)
    return {k: statistics.median(v) for k, v in times.items()} | {"n": repeats}


def _concurrent(cwd: Path, procs: int, each: int) -> dict:
    def one_process(p: int) -> float:
        t0 = time.perf_counter()
        for i in range(each):
            _timed(["compile", "m.onnx", *QUICK, "-o", f"par-{p}-{i}"], cwd)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(procs) as pool:
        list(pool.map(one_process, range(procs)))
    compiled = time.perf_counter() - t0
    from edgepack.tracking import settle

    uri = f"sqlite:///{cwd / 'mlruns-edgepack' / 'mlflow.db'}"
    settle(uri, 900)
    landed = time.perf_counter() - t0 - compiled
    import mlflow

    client = mlflow.MlflowClient(uri, uri)
    exp = client.get_experiment_by_name("edgepack").experiment_id
    runs = client.search_runs([exp], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("edgepack.level") == "parent"]
    versions = client.search_model_versions("name = 'm-x86-vnni'", max_results=5000)
    return {"compiles": procs * each, "finished": sum(r.info.status == "FINISHED" for r in parents),
            "parents": len(parents), "versions": len(versions), "compile_s": compiled, "landed_after_s": landed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--demo", action="store_true", help="also time the demo, tracked and not (minutes each)")
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--each", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tracking.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgepack-tracking-") as tmp:
        cwd = Path(tmp)
        onnx.save(conv_relu(3, 8, 16), str(cwd / "m.onnx"))
        rows = {"small compile": _paired(lambda o: ["compile", "m.onnx", *QUICK, "-o", o], cwd, args.repeats, "compile")}
        if args.demo:
            rows["demo"] = _paired(lambda o: ["demo", "-o", o, "--no-progress"], cwd, max(1, args.repeats // 2), "demo")
        (cwd / "par").mkdir()
        onnx.save(conv_relu(3, 8, 16), str(cwd / "par" / "m.onnx"))
        par = _concurrent(cwd / "par", args.procs, args.each)
    _write(Path(args.out), rows, par, args)


def _write(path: Path, rows: dict, par: dict, args) -> None:
    cpu = cpu_info()
    lines = ["# What tracking costs", "",
             f"`python benchmarks/tracking.py --repeats {args.repeats}{' --demo' if args.demo else ''} --procs "
             f"{args.procs} --each {args.each}`; {cpu['model']} ({cpu['logical_cores']} cores); each command a fresh "
             "`edgepack` process, the default store in its working directory; medians of wall seconds, tracked "
             "and `--no-track` alternated.", "",
             "| work | repeats | untracked (s) | tracked (s) | added (s) | added |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        added = r["tracked"] - r["untracked"]
        lines.append(f"| {name} | {r['n']} | {r['untracked']:.2f} | {r['tracked']:.2f} | {added:+.2f} | "
                     f"{added / r['untracked'] * 100:+.1f}% |")
    lines += ["", f"{par['compiles']} compiles from {args.procs} processes at once into one fresh store: "
              f"{par['finished']}/{par['parents']} command runs FINISHED, {par['versions']} registered versions; "
              f"the compiles took {par['compile_s']:.0f} s, the last record landed {par['landed_after_s']:.1f} s "
              "after the last compile returned.", ""]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
