"""Human-readable terminal output for the CLI (rich tables on stdout)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from edgepack.ir.stats import format_count
from edgepack.report.markdown import FLOW_COLUMNS, device_middle, flow_cells, flow_verdict
from edgepack.report.schema import CompileReport, FlowReport, ProfileReport

# piped or redirected output has no terminal width to fit: 120 columns keep tables unwrapped
out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def targets_table(profiles) -> None:
    t = Table(title="target profiles")
    for col in ("name", "precision", "runtimes", "INT8 scheme", "channel x", "CPU needs"):
        t.add_column(col)
    for p in profiles:
        q = p.quantization
        scheme = (f"w {q.weights.dtype} {'per-ch' if q.weights.per_channel else 'per-tensor'}"
                  f"{' sym' if q.weights.symmetric else ''}, a {q.activations.dtype}"
                  f"{', reduce-range' if q.reduce_range else ''}")
        needs = " + ".join(filter(None, [p.cpu.arch, " ".join(p.cpu.requires_all),
                                         " | ".join(p.cpu.requires_any)]))
        name = f"{p.name} (= {p.derived_from})" if p.derived_from else p.name
        t.add_row(name, p.precision, ", ".join(p.backends), scheme, str(p.pruning.channel_multiple), needs)
    out.print(t)


def target_detail(p) -> None:
    import yaml

    out.print(f"[bold]{p.name}[/bold]: {p.description}")
    out.print(yaml.safe_dump(p.to_dict(), sort_keys=False), markup=False)


def inspect_view(s: dict, label: str, top: int) -> None:
    out.print(f"[bold]{label}[/bold]  opset {s['opset']}, {s['nodes']} nodes, "
              f"{format_count(s['params'])} params, {format_count(s['macs'])} MACs, "
              f"{s['size_bytes'] / 1e6:.2f} MB on disk")
    if s.get("macs_assumed_dims"):  # the graph leaves dims open: the counts describe a shape it assumed
        assumed = ", ".join(f"{k} {v}" for k, v in s["macs_assumed_dims"].items())
        out.print(f"[yellow]MACs and layer shapes assume {assumed}: the graph leaves those dims open "
                  "(taken as 1); give --input-shape for counts at a real size[/yellow]")
    io = Table(title="inputs / outputs")
    for col in ("", "name", "shape", "dtype"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for x in s[kind]:
            io.add_row(kind[:-1], x["name"], str(x["shape"]), x["dtype"])
    out.print(io)
    ops = Table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    ops.add_column("MACs", justify="right")
    for op, n in s["op_histogram"].items():
        ops.add_row(op, str(n), format_count(s["macs_by_op"].get(op, 0)) if op in s["macs_by_op"] else "")
    out.print(ops)
    layers = sorted(s["layers"], key=lambda x: -x["macs"])[:top]
    lt = Table(title=f"top {len(layers)} layers by MACs (of {len(s['layers'])})")
    for col in ("layer", "op", "output", "params", "MACs", "% of total"):
        lt.add_column(col)
    for x in layers:
        lt.add_row(x["name"], x["op_type"], str(x["output_shape"]), format_count(x["params"]),
                   format_count(x["macs"]), f"{100 * x['macs'] / max(s['macs'], 1):.1f}")
    out.print(lt)
    groups = s.get("prunable_groups")
    if isinstance(groups, list) and groups:
        gt = Table(title=f"channel groups ({sum(g['prunable'] for g in groups)} of {len(groups)} prunable)")
        for col in ("group", "channels", "producers", "members", "L1 importance mean", "not prunable because"):
            gt.add_column(col)
        for g in groups:
            imp = g.get("importance")
            gt.add_row(str(g["id"]), str(g["size"]), ", ".join(g["producers"])[:60], str(len(g["members"])),
                       f"{imp['mean']:.3g}" if imp else "", "; ".join(g.get("reasons", []))[:60])
        out.print(gt)
    if s.get("unknown_shape_nodes"):
        out.print(f"{len(s['unknown_shape_nodes'])} nodes without inferred shapes were not counted")


def report_summary(r: CompileReport | ProfileReport) -> None:
    t = Table(title=f"edgepack {r.command}: {r.target.name}")
    for col in ("backend", "precision", "size MB", "p50 ms", "p99 ms", "first ms", "load ms",
                "peak RSS MB", "max |diff|", "top-1 agree"):
        t.add_column(col, justify="right")
    for a in r.artifacts:
        lat, par = a.latency_ms, a.parity
        timing = ([f"{lat.p50:.3f}", f"{lat.p99:.3f}", f"{lat.first:.2f}", f"{a.load_ms:.1f}",
                   f"{a.memory_mb.peak_rss:.0f}"] if lat else ["emulated"] + ["-"] * 4)
        t.add_row(a.backend, a.precision, f"{a.size_bytes / 1e6:.2f}", *timing,
                  ("non-finite" if par.max_abs_diff is None else f"{par.max_abs_diff:.1e}") if par else "-",
                  f"{100 * par.top1_agreement:.1f}%" if par and par.top1_agreement is not None else "-")
    out.print(t)
    _device_runs(r)
    for a in r.artifacts:
        for note in a.notes:
            out.print(f"note: {note}")
        if a.unsupported_ops:
            out.print(f"[yellow]{a.backend}: ops the target's runtime does not run: "
                      f"{', '.join(a.unsupported_ops)}[/yellow]")
    if isinstance(r, CompileReport):
        _compile_summary(r)
    out.print(f"report: {r.output_dir}/report.md (and report.json)")


def _device_runs(r: CompileReport | ProfileReport) -> None:
    """Each artifact's runs on the devices asked for, beside the host's figures."""
    runs = [(a, d) for a in r.artifacts for d in a.devices or []]
    if not runs:
        return
    t = Table(title="on devices")
    for col in ("backend", "device", "arch", "runs", "p50 ms", "95% CI", "p99 ms", "first ms", "load ms",
                "peak RSS MB", "max |diff|", "round trip s"):
        t.add_column(col, justify="right")
    for a, d in runs:
        lat, ci, par = d.latency_ms, d.ci95_ms, d.parity
        t.add_row(a.backend, d.device + (" (emulated)" if d.emulated else ""),
                  d.environment.arch if d.environment else "-", str(d.runs), device_middle(d, lambda v: f"{v:.3f}"),
                  f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-", f"{lat.p99:.3f}" if lat else "-",
                  f"{lat.first:.2f}" if lat else (f"{d.first_ms:.2f}" if d.first_ms is not None else "-"),
                  f"{d.cold_load_ms:.1f}" if d.cold_load_ms is not None else "-",
                  f"{d.memory_mb.peak_rss:.0f}" if d.memory_mb else "-",
                  f"{par.max_abs_diff:.1e}" if par and par.max_abs_diff is not None else "-",
                  f"{d.seconds:.1f}" if d.seconds is not None else "-")
    out.print(t)
    for _, d in runs:
        if (d.emulated or d.runner != "worker") and d.note:
            out.print(f"note: {d.device}: {d.note}")


def devices_table(rows: list[dict], found) -> None:
    t = Table(title=f"devices ({found or 'no devices.yaml found'})")
    for col in ("name", "kind", "where", "python", "workdir"):
        t.add_column(col)
    for row in rows:
        where = row.get("host") and f"{row.get('user', '') + '@' if row.get('user') else ''}{row['host']}" \
            f"{':' + str(row['port']) if row.get('port') else ''}"
        t.add_row(row["name"], row["kind"], where or row.get("serial") or ("built in" if row.get("builtin") else "-"),
                  row.get("python", "-"), row.get("workdir", "-"))
    out.print(t)


def _compile_summary(r: CompileReport) -> None:
    pr = r.pruning
    if pr:
        out.print(f"pruned {pr.ratio:.0%} ({pr.mode}, widths x{pr.channel_multiple}): params "
                  f"{format_count(pr.params_before)} -> {format_count(pr.params_after)}, MACs "
                  f"{format_count(pr.macs_before)} -> {format_count(pr.macs_after)}")
    for skip in r.skipped or []:
        out.print(f"skipped {skip.backend}: {skip.reason}")
    if len(r.artifacts) > 1:
        out.print(f"selected: {r.selected.backend} ({r.selected.reason})")


def flow_table(r: FlowReport) -> None:
    t = Table(title=f"edgepack run {r.recipe}: {r.target} (top-1 on the test split; drop in points "
                    "below the teacher)")
    for col in FLOW_COLUMNS:
        t.add_column(col, justify="left" if col in ("stage", "model", "gate") else "right", no_wrap=True)
    for row in r.rows:
        t.add_row(*flow_cells(row))
    out.print(t)
    out.print(flow_verdict(r))
    out.print(f"report: {r.output_dir}/report.md (and report.json)")
