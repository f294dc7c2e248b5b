"""benchmarks/results/zoo.md from the rows in zoo.json."""

from __future__ import annotations

from pathlib import Path

ORDER = ("ort_fp32", "ort_int8_default", "ov_fp32", "ov_nncf_default")


def _f(v, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _dims(d: dict) -> str:
    def short(x):
        return x if not isinstance(x, str) or len(x) <= 24 else "<expr>"

    return "; ".join(f"{k} {[short(x) for x in v]}" for k, v in d.items())


def model_table(models: dict) -> list[str]:
    lines = ["| model | wheel | category | inputs (graph) | outputs | judged | size MB |", "|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        outs = f"{len(m['outputs'])}: " + _dims(m["outputs"]) if len(m["outputs"]) <= 3 else f"{len(m['outputs'])} outputs"
        lines.append(f"| {name} | `{m['wheel']}` | {m['category']} | {_dims(m['inputs'])} (fed {_dims(m['fed'])}) | "
                     f"{outs} | {m['judged']} ({m['view']}) | {m['size'] / 1e6:.1f} |")
    return lines


def _sort_key(variant: str) -> tuple:
    return (ORDER.index(variant) if variant in ORDER else len(ORDER), variant)


def rows_table(name: str, rows: dict) -> list[str]:
    base = (rows.get("ort_fp32") or {}).get("p50")
    lines = [f"### {name}", "", "| variant | status | shipped | p50 ms | x vs ORT FP32 | top-1 agree | agree, clear "
             "(n) | cosine mean / min | parity cos min | compile s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for variant in sorted(rows, key=_sort_key):
        r = rows[variant]
        status = "ok" if r.get("ok") else f"FAIL: {r.get('reason', '?')[:90]}"
        speed = _f(base / r["p50"], "{:.2f}x") if base and r.get("p50") else "-"
        clear = f"{_f(r.get('agree_clear'))} ({r['clear']}/{r['decisions']})" if r.get("decisions") else "-"
        cos = f"{_f(r.get('cosine'), '{:.4f}')} / {_f(r.get('cosine_min'), '{:.4f}')}" if r.get("cosine") is not None else "-"
        lines.append(f"| {variant} | {status} | {r.get('shipped', '-')} | {_f(r.get('p50'), '{:.2f}')} | {speed} | "
                     f"{_f(r.get('agree'))} | {clear} | {cos} | {_f(r.get('parity_cos_min'), '{:.4f}')} | "
                     f"{_f(r.get('compile_s'), '{:.0f}')} |")
    return lines + [""]


def failures(results: dict) -> list[str]:
    out = []
    for name, rows in results["rows"].items():
        for variant in sorted(rows, key=_sort_key):
            r = rows[variant]
            if not r.get("ok"):
                out.append(f"- **{name} / {variant}**: {r.get('reason')}")
            if r.get("left_in_cwd"):
                out.append(f"- **{name} / {variant}**: left in the working folder: {', '.join(r['left_in_cwd'])}")
            if r.get("q_note"):
                out.append(f"- {name} / {variant} (note): {r['q_note']}")
    return out


def shapes(results: dict) -> list[str]:
    out = []
    for name, rows in results["rows"].items():
        r = rows.get("shape")
        if r is None:
            continue
        graph_in = results["models"].get(name, {}).get("inputs", {})
        shipped = r.get("artifact_inputs") or {}
        got = f"shipped inputs {_dims(shipped)}, MACs {r.get('macs')}" if r.get("ok") else r.get("reason")
        out.append(f"- {name}: graph {_dims(graph_in)} -> {got}{_silent(graph_in, shipped)}")
    return out


def _silent(graph: dict, shipped: dict) -> str:
    """' **SILENT**: ...' when a non-batch dim the graph leaves unknown shipped as a number, unasked."""
    fixed = [f"{k}[{i}]={shipped[k][i]}" for k, dims in graph.items() if k in shipped
             for i, d in enumerate(dims) if i > 0 and not (isinstance(d, int) and d > 0)
             and i < len(shipped[k]) and isinstance(shipped[k][i], int)]
    return f" **SILENT**: unknown {', '.join(fixed)} fixed without a word" if fixed else ""


def summary(results: dict) -> list[str]:
    """The issue's goals, counted: tracebacks, silent shapes, timeouts, INT8 a peer made and edgepack did not."""
    rows = results["rows"]
    bad = lambda pred: [f"{m}/{v}" for m, rs in rows.items() for v, r in rs.items() if pred(v, r)]  # noqa: E731
    tracebacks = bad(lambda v, r: "TRACEBACK" in (r.get("reason") or ""))
    timeouts = bad(lambda v, r: (r.get("reason") or "").startswith("timeout"))
    silent = [m for m, rs in rows.items() if "shape" in rs and _silent(results["models"].get(m, {}).get("inputs", {}),
                                                                         rs["shape"].get("artifact_inputs") or {})]
    peer_only = [m for m, rs in rows.items()
                 if any(rs.get(p, {}).get("ok") for p in ("ort_int8_default", "ov_nncf_default"))
                 and not any(r.get("ok") and "int8" in (r.get("shipped") or "") for v, r in rs.items() if ":" in v)]
    edge = [r for rs in rows.values() for v, r in rs.items() if ":" in v or v == "default"]
    return [f"- edgepack builds: {sum(bool(r.get('ok')) for r in edge)} of {len(edge)} ok",
            f"- tracebacks (not one clear line): {len(tracebacks)}: {', '.join(tracebacks) or 'none'}",
            f"- timeouts: {len(timeouts)}: {', '.join(timeouts) or 'none'}",
            f"- unknown dims fixed without a word: {', '.join(silent) or 'none'}",
            f"- INT8 made by a peer but by no edgepack build: {', '.join(peer_only) or 'none'}"]


def write_markdown(results: dict, out: Path) -> None:
    md = ["# Zoo: public pretrained models from PyPI wheels, compiled for the host", "",
          "Runs (host, timing, load):", "", *[f"- {r}" for r in results.get("runs", [results.get("host", "?")])], "",
          "Timing is one round of few runs on a 2-core machine shared with other jobs: read p50 ratios below ~1.5x "
          "as noise.", "",
          *([f"Timing: {results['timing']}.", ""] if results.get("timing") else []),
          "Fidelity is against the source model in ONNX Runtime FP32 on the judged set (real data disjoint from "
          "the calibration set); `clear` = decisions where FP32 is not a near-tie (top-1/top-2 margin >= 0.25, or "
          ">= 0.125 from the threshold for thresholded outputs). `x vs ORT FP32` = ORT FP32 p50 / this p50. "
          "Peers: `ort_int8_default` = onnxruntime `quantize_static` defaults, `ov_nncf_default` = OpenVINO + "
          "`nncf.quantize` defaults. `BACKEND:fp32|int8` = `edgepack.compile` for host with that backend and "
          "precision, `--calib` and `--eval`; `default` = plain compile for host with the calibration data; "
          "`shape` = compile without `--input-shape`.", "", "## Summary", "", *summary(results), "", "## Models", "", *model_table(results.get("models", {})),
          "", "## Results", ""]
    for name, rows in results["rows"].items():
        md += rows_table(name, rows)
    md += ["## Failures and notes", "", *failures(results), "", "## Without --input-shape", "", *shapes(results), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
