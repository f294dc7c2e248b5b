"""p50 of ONNX models in ONNX Runtime only (batch 1, 2 and 16 threads, 3 interleaved rounds of 500
runs, the lowest round kept) and their top-1 on test_x.npy / test_y.npy in the working folder.

Standalone on purpose: it runs on a lent machine that has onnxruntime and numpy but not edgepack.
    python benchmarks/onnx_p50.py teacher_fp32.onnx final_int8.onnx
"""
import json, os, sys, time
import numpy as np
import onnxruntime as ort

def session(path, threads):
    o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL; o.log_severity_level = 3
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

models = sys.argv[1:]
x = np.load("test_x.npy"); y = np.load("test_y.npy")
out = {"ort": ort.__version__, "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")}
for threads in (2, 16):
    res = {m: [] for m in models}
    sess = {m: session(m, threads) for m in models}
    for rnd in range(3):
        for m, s in sess.items():
            name = s.get_inputs()[0].name
            feed = {name: x[:1]}
            for _ in range(50):
                s.run(None, feed)
            t = []
            for i in range(500):
                f = {name: x[i % 64:i % 64 + 1]}
                t0 = time.perf_counter(); s.run(None, f); t.append((time.perf_counter() - t0) * 1e3)
            res[m].append(float(np.median(t)))
    out[f"p50_ms_{threads}t"] = {m: min(v) for m, v in res.items()}
for m in models:
    s = session(m, 2); name = s.get_inputs()[0].name
    pred = np.array([s.run(None, {name: x[i:i + 1]})[0].argmax() for i in range(len(x))])
    out.setdefault("top1", {})[m] = float((pred == y).mean())
print(json.dumps(out, indent=1))
os.makedirs(os.environ.get("OUT", "."), exist_ok=True)
open(os.path.join(os.environ.get("OUT", "."), "device_flow.json"), "w").write(json.dumps(out, indent=1))
