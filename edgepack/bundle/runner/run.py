"""Run this bundle's artifact: replay the golden vectors, or time it. Needs numpy and the runtime
named in manifest.json (runtime.package), nothing of edgepack.

    python runner/run.py              # replay golden/inputs.npz, compare with golden/outputs.npz
    python runner/run.py --bench 50   # time 50 inferences (after --warmup, default 5)

It runs worker.py, the very program edgepack's devices run, with the session module beside it,
in a fresh process. Exit codes: 0 within tolerance, 7 outside it, 1 could not run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _job(folder: Path, manifest: dict, threads: int, warmup: int, runs: int, outputs: bool) -> Path:
    """The worker's config.json for one run over the golden inputs."""
    golden = manifest["golden"]
    config = {"session": str(ROOT / manifest["runner"]["session"]),
              "artifact": str(ROOT / manifest["artifact"]["path"]), "threads": threads, "warmup": warmup, "runs": runs, "inputs": str(ROOT / golden["inputs"]),
              "n_feeds": golden["feeds"], "result": str(folder / "result.json"),
              "outputs": str(folder / "outputs.npz") if outputs else None}
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def _worker(manifest: dict, threads: int, warmup: int, runs: int, outputs: bool, folder: Path) -> dict:
    config = _job(folder, manifest, threads, warmup, runs, outputs)
    proc = subprocess.run([sys.executable, str(ROOT / manifest["runner"]["worker"]), str(config)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not (folder / "result.json").is_file():
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        hint = f" (is {manifest['runtime']['package']} installed? pip install {manifest['runtime']['package']})"
        raise SystemExit(f"run.py: the artifact did not run: {lines[-1] if lines else proc.returncode}{hint}")
    return json.loads((folder / "result.json").read_text())


def within(got, expected, atol: float, rtol: float):
    """(max |got - expected|, whether every value is within atol + rtol * |expected|)."""
    import numpy as np

    got = np.asarray(got, dtype=np.float64).reshape(np.shape(expected))
    expected = np.asarray(expected, dtype=np.float64)
    diff = np.abs(got - expected)
    ok = bool(np.all(diff <= atol + rtol * np.abs(expected)))  # NaN compares False: never "within"
    return float(np.max(diff, initial=0.0)), ok


def replay(manifest: dict, threads: int) -> int:
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bundle-run-") as tmp:
        _worker(manifest, threads, 0, 0, True, Path(tmp))
        got = np.load(Path(tmp) / "outputs.npz")
        expected = np.load(ROOT / manifest["golden"]["outputs"])
        failed = 0
        for j, tol in enumerate(manifest["golden"]["tolerances"]):
            worst = 0.0
            for i in range(manifest["golden"]["feeds"]):
                diff, ok = within(got[f"{i}__{j}"], expected[f"{i}__{j}"], tol["atol"], tol["rtol"])
                worst, failed = max(worst, diff), failed + (not ok)
            print(f"{tol['output']}: max |diff| {worst:.3g} (atol {tol['atol']:.3g}, rtol {tol['rtol']:.3g})")
    print("golden replay: " + ("OK" if not failed else f"FAILED ({failed} outputs outside tolerance)"))
    return 0 if not failed else 7


def bench(manifest: dict, threads: int, warmup: int, runs: int) -> int:
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bundle-bench-") as tmp:
        raw = _worker(manifest, threads, warmup, runs, False, Path(tmp))
    t = np.asarray(raw["times_ms"])
    print(f"{manifest['name']}: {runs} runs, {threads} thread(s): p50 {np.percentile(t, 50):.3f} ms, "
          f"p90 {np.percentile(t, 90):.3f} ms, min {t.min():.3f} ms, max {t.max():.3f} ms; "
          f"load {raw['load_ms']:.1f} ms, first inference {raw['first_ms']:.2f} ms, "
          f"peak RSS {raw['peak_rss_bytes'] / 2**20:.0f} MiB")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Replay this bundle's golden vectors, or time its artifact.")
    parser.add_argument("--bench", type=int, metavar="N", help="time N inferences instead of replaying")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before --bench (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    args = parser.parse_args(argv)
    if (args.bench is not None and args.bench < 1) or args.warmup < 0 or args.threads < 1:
        parser.error("need --bench >= 1, --warmup >= 0, --threads >= 1")
    manifest = json.loads((ROOT / "manifest.json").read_text())
    if args.bench:
        return bench(manifest, args.threads, args.warmup, args.bench)
    return replay(manifest, args.threads)


if __name__ == "__main__":
    sys.exit(main())
