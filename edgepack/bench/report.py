"""report.json (everything, machine-readable) and report.md (what a person reads first)."""

from __future__ import annotations

import json
from pathlib import Path

from edgepack.fsutil import atomic_write
from edgepack.ir.stats import format_count


def write_report(outdir: Path, report: dict) -> tuple[Path, Path]:
    js, md = Path(outdir) / "report.json", Path(outdir) / "report.md"
    atomic_write(js, json.dumps(report, indent=2, default=str) + "\n")
    atomic_write(md, render_markdown(report))
    return js, md


def _ms(x) -> str:
    return "-" if x is None else f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _parity(p: dict | None) -> str:
    if not p:
        return "-"
    text = f"max abs {p['max_abs_diff']:.2e}, cosine {p['cosine_min']:.6f}"
    if "top1_agreement" in p:
        text += f", top-1 {100 * p['top1_agreement']:.1f}%"
    return text


def render_markdown(r: dict) -> str:
    out = [f"# edgepack {r['command']} report", ""]
    src = r.get("source")
    if src:
        out += ["## Source model", "",
                f"- `{src.get('path') or src['name']}` ({src['kind']}), sha256 `{src['sha256'][:16]}…`",
                f"- params {format_count(src['params'])}, MACs {format_count(src['macs'])}, "
                f"size {_mb(src['size_bytes'])}",
                "- inputs: " + ", ".join(f"`{i['name']}` {i['shape']} {i['dtype']}" for i in src["inputs"]), ""]
    can = r.get("canonical")
    if can:
        out += ["## Canonical ONNX graph", "",
                f"- opset {can['opset']}, {can['nodes_before']} -> {can['nodes_after']} nodes "
                f"({can['simplifier']}); BatchNorm folded {can['batchnorm_folded']}, left {can['batchnorm_left']}",
                f"- parity vs source: {_parity(can.get('parity'))}", ""]
    pr = r.get("pruning")
    if pr:
        out += ["## Structured pruning", "",
                f"- {pr['ratio']:.0%} of channels ({pr['mode']}), widths rounded to {pr['channel_multiple']}: "
                f"params {format_count(pr['params_before'])} -> {format_count(pr['params_after'])}, "
                f"MACs {format_count(pr['macs_before'])} -> {format_count(pr['macs_after'])}",
                f"- plan (kept channels per group): `{pr.get('plan', '-')}`; {len(pr['unprunable'])} groups left "
                "untouched (see report.json for why)",
                "- one-shot pruning without fine-tuning loses accuracy: see parity below", ""]
    q = r.get("quantization")
    if q and "decision" in q:
        out += ["## INT8", "",
                f"- decision: **{q['decision']}** ({q.get('format', '')}); {q['metric']} {q['int8_score']:.4f} vs FP32 "
                f"{q['fp32_score']:.4f}, drop {q['drop']:.4f} (budget {q['max_drop']}{' relative' if q['relative'] else ''})",
                f"- in-process median: FP32 {q['fp32_ms']:.3f} ms, INT8 {q['int8_ms']:.3f} ms; "
                f"{q['int8_layers']} INT8 layers, {len(q['kept_float'])} kept float",
                *[f"- {row['kind']} ({row['layers']} layers): INT8 {row['int8_ms']:.3f} ms vs with it float "
                  f"{row['with_kind_float_ms']:.3f} ms -> {row['decision']}" for row in q["speed"]["per_kind"]],
                *([f"- note: {q['note']}"] if q.get("note") else []),
                *([f"- warning: {q['warning']}"] if q.get("warning") else []), ""]
    tgt = r.get("target")
    if tgt:
        out += ["## Target", "", f"- `{tgt['name']}`: {tgt['description']}", ""]
    arts = r.get("artifacts", [])
    if arts:
        out += ["## Artifacts", "",
                "| backend | precision | file | size | p50 ms | p99 ms | first ms | load ms | peak RSS MB | parity |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for a in arts:
            lat = a["latency_ms"]
            if lat is None:
                out.append(f"| {a['backend']} | {a['precision']} | `{a['path']}` | {_mb(a['size_bytes'])} | "
                           f"emulated | - | - | - | - | {_parity(a.get('parity'))} |")
                continue
            out.append(f"| {a['backend']} | {a['precision']} | `{a['path']}` | {_mb(a['size_bytes'])} | "
                       f"{_ms(lat['p50'])} | {_ms(lat['p99'])} | {_ms(lat['first'])} | {_ms(a['load_ms'])} | "
                       f"{a['memory_mb']['peak_rss']:.0f} | {_parity(a.get('parity'))} |")
        out.append("")
        for a in arts:
            lat = a["latency_ms"]
            if lat is None:
                em = a.get("emulated_run", {})
                t = em.get("emulated_ms") or {}
                timing = (f"p50 {t['p50']:.1f} ms over {t['runs']} runs, first {t['first']:.1f} ms"
                          if {"p50", "runs", "first"} <= set(t) else "not timed")
                out += [f"### {a['backend']} {a['precision']}: ran on the emulated ARM64 board", "",
                        f"Emulated time ({timing}): {em.get('note', '')}", ""]
                continue
            out += [f"### {a['backend']} {a['precision']}: latency", "",
                    f"{a['runs']} timed runs after {a['warmup']} warm-up, {a['threads']} threads, batch {a['batch']}, "
                    f"in a {a['process']} process.", "",
                    "| first | p50 | p90 | p99 | mean | std | min | max | throughput/s |",
                    "|---|---|---|---|---|---|---|---|---|",
                    "| " + " | ".join(_ms(lat[k]) for k in ("first", "p50", "p90", "p99", "mean", "std", "min", "max"))
                    + f" | {a['throughput_per_s']:.1f} |", ""]
            if a.get("unsupported_ops"):
                out += [f"Ops the target's runtime does not run: {', '.join(a['unsupported_ops'])}", ""]
            for note in a.get("notes", []):
                out.append(f"- {note}")
    env = r.get("environment")
    if env:
        cpu = env["cpu"]
        out += ["## Environment", "",
                f"- CPU: {cpu['model']} ({cpu['arch']}, {cpu['physical_cores']} cores / {cpu['logical_cores']} threads)",
                f"- SIMD flags: {' '.join(cpu['flags']) or '-'}",
                f"- OS: {env['os']}",
                "- libraries: " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()), ""]
    return "\n".join(out) + "\n"
