"""report.md: what a person reads first. One renderer per report, each reading the typed model."""

from __future__ import annotations

from edgepack.ir.stats import format_count
from edgepack.report.schema import Artifact, CompileReport, Fidelity, FlowReport, FlowRow, Parity, ProfileReport


def ms(x) -> str:
    return "-" if x is None else f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def parity_text(p: Parity | None) -> str:
    if not p:
        return "-"
    cosine = "-" if p.cosine_min is None else f"{p.cosine_min:.6f}"
    diff = "non-finite" if p.max_abs_diff is None else f"{p.max_abs_diff:.2e}"  # null in JSON: NaN/Inf
    text = f"max abs {diff}, cosine {cosine}"
    if p.top1_agreement is not None:
        text += f", top-1 {100 * p.top1_agreement:.1f}%"
    if p.nonfinite:
        text += f", NaN/Inf outputs: {p.nonfinite.get('reference', 0)} reference, {p.nonfinite.get('candidate', 0)} candidate"
    return text


def fidelity_text(f: Fidelity | dict | None) -> str:
    """Agreement (all, non-near-ties) and cosine, as one phrase."""
    if not f:
        return "-"
    f = Fidelity.model_validate(f)
    text = f"cosine {f.cosine:.4f} on {f.samples} samples"
    if f.agreement is None:
        return text
    clear = "-" if f.agreement_non_near_ties is None else f"{f.agreement_non_near_ties:.3f}"
    return (f"top-1 agreement {f.agreement:.3f} (on the {f.non_near_ties} non-near-ties, FP32 margin >= "
            f"{f.near_tie_margin:g}: {clear}), {text}")


def render_markdown(r: CompileReport | ProfileReport) -> str:
    """report.md of a compile or profile report."""
    out = [f"# edgepack {r.command} report", ""]
    if isinstance(r, CompileReport):
        out += _source(r) + _canonical(r) + _pruning(r) + _int8(r)
    out += ["## Target", "", f"- `{r.target.name}`: {r.target.description}", ""]
    out += _artifacts(r.artifacts) + _devices(r.artifacts) + _environment(r)
    return "\n".join(out) + "\n"


def _source(r: CompileReport) -> list[str]:
    src = r.source
    return ["## Source model", "",
            f"- `{src.path or src.name}` ({src.kind}), sha256 `{src.sha256[:16]}…`",
            f"- params {format_count(src.params)}, MACs {format_count(src.macs)}, size {mb(src.size_bytes)}",
            "- inputs: " + ", ".join(f"`{i.name}` {i.shape} {i.dtype}" for i in src.inputs), ""]


def _canonical(r: CompileReport) -> list[str]:
    can = r.canonical.model_dump()
    return ["## Canonical ONNX graph", "",
            f"- opset {can['opset']}, {can.get('nodes_before')} -> {can.get('nodes_after')} nodes "
            f"({can.get('simplifier')}); BatchNorm folded {can.get('batchnorm_folded')}, "
            f"left {can.get('batchnorm_left')}",
            f"- parity vs source: {parity_text(r.canonical.parity)}", ""]


def _pruning(r: CompileReport) -> list[str]:
    pr = r.pruning
    if not pr:
        return []
    return ["## Structured pruning", "",
            f"- {pr.ratio:.0%} of channels ({pr.mode}), widths rounded to {pr.channel_multiple}: "
            f"params {format_count(pr.params_before)} -> {format_count(pr.params_after)}, "
            f"MACs {format_count(pr.macs_before)} -> {format_count(pr.macs_after)}",
            f"- plan (kept channels per group): `{pr.plan or '-'}`; {len(pr.unprunable)} groups left "
            "untouched (see report.json for why)",
            "- one-shot pruning without fine-tuning loses accuracy: see parity below", ""]


def _int8(r: CompileReport) -> list[str]:
    q = r.quantization
    if not q or q.decision is None:
        return []
    fallback = [f"- quantizer fallback: {q.fallback.why}"] if q.fallback else []
    if q.int8_score is None:  # no quantizer produced a graph: the note says why
        return ["## INT8", "", f"- decision: **{q.decision}**", *fallback, f"- note: {q.note}", ""]
    budget = f"budget {q.max_drop}{' relative' if q.relative else ''}"
    return ["## INT8", "",
            f"- decision: **{q.decision}** ({q.format or ''}); {q.metric} {q.int8_score:.4f} vs FP32 "
            f"{q.fp32_score:.4f}, drop {q.drop:.4f} ({budget})",
            f"- in-process median: FP32 {q.fp32_ms:.3f} ms, INT8 {q.int8_ms:.3f} ms; "
            f"{q.int8_layers} INT8 layers, {len(q.kept_float or [])} kept float",
            *fallback,
            *_judged(r),
            *[f"- candidate {c['format']}: {q.metric} {c['score']:.4f}, {c['ms']:.3f} ms, {c['kept_float']} "
              f"kept float; {fidelity_text(c.get('fidelity'))}" for c in q.format_candidates or [] if "score" in c],
            *[f"- {row['kind']} ({row['layers']} layers): INT8 {row['int8_ms']:.3f} ms vs with it float "
              f"{row['with_kind_float_ms']:.3f} ms -> {row['decision']}" for row in (q.speed or {}).get("per_kind", [])],
            *([f"- note: {q.note}"] if q.note else []),
            *([f"- warning: {q.warning}"] if q.warning else []), ""]


def _judged(r: CompileReport) -> list[str]:
    """Where fidelity was judged (held-out calibration samples or --eval), and the search's pick's figures."""
    acc, q = r.accuracy, r.quantization
    where = f"{acc.samples} samples of {acc.data}" if acc else "the judged samples"
    if acc and acc.held_out:
        where += f" ({acc.held_out.note})"
    return [f"- fidelity of the search's pick, judged on {where}: {fidelity_text(q.fidelity)}"]


def _artifacts(arts: list[Artifact]) -> list[str]:
    if not arts:
        return []
    out = ["## Artifacts", "",
           "| backend | precision | file | size | p50 ms | p99 ms | first ms | load ms | peak RSS MB | parity |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for a in arts:
        lat = a.latency_ms
        cells = (["emulated", "-", "-", "-", "-"] if lat is None else
                 [ms(lat.p50), ms(lat.p99), ms(lat.first), ms(a.load_ms), f"{a.memory_mb.peak_rss:.0f}"])
        out.append(f"| {a.backend} | {a.precision} | `{a.path}` | {mb(a.size_bytes)} | " + " | ".join(cells)
                   + f" | {parity_text(a.parity)} |")
    out.append("")
    for a in arts:
        out += _artifact_detail(a)
    return out


def device_middle(d, fmt) -> str:
    """A device run's p50, or (a runner without per-run samples: benchmark_model) its own average."""
    if d.latency_ms is not None:
        return fmt(d.latency_ms.p50)
    avg = (d.summary_ms or {}).get("avg")
    return f"avg {fmt(avg)}" if avg is not None else "-"


def _devices(arts: list[Artifact]) -> list[str]:
    """Each artifact as measured on the devices asked for (--device), from their raw samples."""
    runs = [(a, d) for a in arts for d in a.devices or []]
    if not runs:
        return []
    out = ["## On devices", "",
           "| backend | device | arch | runs | p50 ms | 95% CI of p50 | p99 ms | first ms | cold load ms | peak RSS MB "
           "| parity | round trip s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a, d in runs:
        lat, ci, env = d.latency_ms, d.ci95_ms, d.environment
        out.append(f"| {a.backend} | {d.device} ({d.kind}{', emulated' if d.emulated else ''}) | "
                   f"{env.arch if env else '-'} | {d.runs} | {device_middle(d, ms)} | "
                   f"{f'{ms(ci[0])}-{ms(ci[1])}' if ci else '-'} | {ms(lat.p99) if lat else '-'} | "
                   f"{ms(lat.first) if lat else (ms(d.first_ms) if d.first_ms is not None else '-')} | "
                   f"{ms(d.cold_load_ms) if d.cold_load_ms is not None else '-'} | "
                   f"{f'{d.memory_mb.peak_rss:.0f}' if d.memory_mb else '-'} | {parity_text(d.parity)} | "
                   f"{d.seconds if d.seconds is not None else '-'} |")
    out.append("")
    for _, d in runs:
        env = d.environment
        if env:
            versions = ", ".join(f"{k} {v}" for k, v in env.runtimes.items() if v)
            out.append(f"- {d.device}: {env.cpu or '?'}, {env.cores or '?'} cores, {env.system}, Python "
                       f"{env.python or '?'}; {versions}")
        if d.emulated and d.note:
            out.append(f"- {d.device}: emulated: {d.note}")
        elif d.runner != "worker" and d.note:
            out.append(f"- {d.device}: {d.note}")
    return out + [""]


def _artifact_detail(a: Artifact) -> list[str]:
    lat = a.latency_ms
    if lat is None:
        em = a.emulated_run or {}
        t = em.get("emulated_ms") or {}
        timing = (f"p50 {t['p50']:.1f} ms over {t['runs']} runs, first {t['first']:.1f} ms"
                  if {"p50", "runs", "first"} <= set(t) else "not timed")
        if not em:  # built for another CPU and measured only on its devices (see "On devices")
            return [f"### {a.backend} {a.precision}: not timed on this host", ""] + [f"- {n}" for n in a.notes]
        return [f"### {a.backend} {a.precision}: ran on the emulated ARM64 board", "",
                f"Emulated time ({timing}): {em.get('note', '')}", ""]
    out = [f"### {a.backend} {a.precision}: latency", "",
           f"{a.runs} timed runs after {a.warmup} warm-up, {a.threads} threads, batch {a.batch}, "
           f"in a {a.process} process.", "",
           "| first | p50 | p90 | p99 | mean | std | min | max | throughput/s |",
           "|---|---|---|---|---|---|---|---|---|",
           "| " + " | ".join(ms(getattr(lat, k)) for k in ("first", "p50", "p90", "p99", "mean", "std", "min", "max"))
           + f" | {a.throughput_per_s:.1f} |", ""]
    if a.fidelity:
        out += [f"Fidelity to the source model: {fidelity_text(a.fidelity)}", ""]
    if a.unsupported_ops:
        out += [f"Ops the target's runtime does not run: {', '.join(a.unsupported_ops)}", ""]
    return out + [f"- {note}" for note in a.notes]


def _environment(r) -> list[str]:
    env = r.environment
    cpu = env.cpu
    return ["## Environment", "",
            f"- CPU: {cpu['model']} ({cpu['arch']}, {cpu['physical_cores']} cores / {cpu['logical_cores']} threads)",
            f"- SIMD flags: {' '.join(cpu['flags']) or '-'}",
            f"- OS: {env.os}",
            "- libraries: " + ", ".join(f"{k} {v}" for k, v in env.libraries.items()), ""]


# -- the flow (edgepack run) --------------------------------------------------------------

FLOW_COLUMNS = ("stage", "model", "params", "MACs", "KB", "top-1", "drop", "p50 ms", "gate")


def flow_cells(row: FlowRow) -> list[str]:
    """One table row of `edgepack run`, shared by the terminal table and report.md."""
    acc, d, p50 = row.accuracy, row.drop, row.p50_ms
    return [row.stage, row.model, format_count(row.params), format_count(row.macs),
            f"{row.size_bytes / 1e3:.1f}", "-" if acc is None else f"{100 * acc:.2f}%",
            "-" if d is None else f"{100 * d:+.2f}", "-" if p50 is None else f"{p50:.3f}", row.gate or "-"]


def flow_verdict(r: FlowReport) -> str:
    rows = r.rows
    teacher, last = rows[0], rows[-1]
    ratios = (f"final vs teacher: {teacher.macs / max(last.macs, 1):.1f}x fewer MACs, "
              f"{teacher.size_bytes / max(last.size_bytes, 1):.1f}x smaller"
              + (f", {teacher.p50_ms / last.p50_ms:.1f}x lower p50" if last.p50_ms else ""))
    floats = [x for x in rows if x.stage in ("teacher", "distill", "prune") and x.p50_ms and x.model != "no teacher"]
    if last.p50_ms and floats and "int8" in last.model and floats[-1].p50_ms < last.p50_ms:
        ratios += (f". Note: INT8 ran slower here than the float model before it ({last.p50_ms:.3f} vs "
                   f"{floats[-1].p50_ms:.3f} ms); it is {floats[-1].size_bytes / last.size_bytes:.1f}x smaller")
    if r.stopped:
        return f"stopped at {r.stopped.stage}: {'; '.join(r.stopped.reasons)}. {ratios}"
    return f"every gate passed. {ratios}"


def flow_markdown(r: FlowReport) -> str:
    lines = [f"# edgepack run: {r.recipe} for {r.target}", "",
             f"{r.created}, edgepack {r.edgepack_version}, {r.seconds if r.seconds is not None else '?'} s", "",
             "| " + " | ".join(FLOW_COLUMNS) + " |", "|" + "---|" * len(FLOW_COLUMNS)]
    lines += ["| " + " | ".join(flow_cells(row)) + " |" for row in r.rows]
    lines += ["", flow_verdict(r), "",
              "Accuracy: top-1 on the test split in ONNX Runtime; p50: fresh process, batch 1. "
              "Each stage's model and `stage.json` are in its numbered folder.", ""]
    return "\n".join(lines)
