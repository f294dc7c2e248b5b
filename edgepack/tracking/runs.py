"""`edgepack runs list | show | compare`: recorded runs as tables, JSON, and a Pareto plot."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from rich.table import Table

from edgepack.errors import EdgepackError
from edgepack.tracking.record import LEVEL, PARENT
from edgepack.tracking.store import Store

COLUMNS = ("accuracy", "accuracy_drop", "p50_ms", "size_bytes", "params", "macs")


def _out():
    from edgepack.views import out

    return out


def find_run(store: Store, run_id: str):
    """A run by id or unique prefix."""
    if len(run_id) == 32:
        try:
            return store.get_run(run_id)
        except Exception:
            raise EdgepackError(f"no run {run_id} in {store.uri}") from None
    hits = [r for r in store.search_runs([store.experiment_id], max_results=5000) if r.info.run_id.startswith(run_id)]
    if len(hits) != 1:
        raise EdgepackError(f"{'no run' if not hits else f'{len(hits)} runs'} matching {run_id!r} in {store.uri}")
    return store.get_run(hits[0].info.run_id)


def row(r) -> dict:
    m, p = r.data.metrics, r.data.params
    return {"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
            "command": r.data.tags.get("edgepack.command"), "level": r.data.tags.get(LEVEL),
            "started": datetime.fromtimestamp(r.info.start_time / 1000).isoformat(timespec="seconds"),
            "target": p.get("target"), "backend": p.get("backend"), "precision": p.get("precision"),
            **{k: m.get(k) for k in COLUMNS}}


def search(store: Store, filter_string: str | None, everything: bool, limit: int) -> list:
    wanted = None if everything else f"tags.`{LEVEL}` = 'parent'"
    text = " and ".join(f for f in (wanted, filter_string) if f)
    try:
        return store.search_runs([store.experiment_id], filter_string=text, max_results=limit,
                                 order_by=["attributes.start_time DESC"])
    except Exception as e:
        if "filter" in str(e).lower() or "invalid" in str(e).lower():
            raise EdgepackError(f"--filter {filter_string!r}: {str(e).splitlines()[0][:300]}") from None
        raise


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def table(rows: list[dict], title: str, cols=("run_id", "name", "status", "target", "backend", "precision",
                                              "accuracy", "p50_ms", "size_bytes")) -> None:
    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="right" if c in COLUMNS else "left", no_wrap=c != "name",
                     min_width=12 if c == "name" else None, max_width=36 if c == "name" else None)
    for r in rows:
        t.add_row(*[(r[c][:8] if c == "run_id" else _fmt(r.get(c))) for c in cols])
    _out().print(t)


def cmd_list(args) -> int:
    store = Store(args.tracking_uri, create=False)
    rows = [row(r) for r in search(store, args.filter, args.all, args.max)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        table(rows, f"runs in {store.uri}")
    return 0


def show(store: Store, run_id: str) -> dict:
    r = find_run(store, run_id)
    children = store.search_runs([store.experiment_id], filter_string=f"tags.`{PARENT}` = '{r.info.run_id}'",
                                 order_by=["attributes.start_time ASC"])
    return {**row(r), "params": dict(r.data.params), "metrics": dict(r.data.metrics),
            "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.source.git")},
            "datasets": [{"name": d.dataset.name, "digest": d.dataset.digest, "source": d.dataset.source,
                          "context": {t.key: t.value for t in d.tags}.get("mlflow.data.context")}
                         for d in r.inputs.dataset_inputs],
            "input_models": [m.model_id for m in r.inputs.model_inputs],
            "output_models": [m.model_id for m in (r.outputs.model_outputs if r.outputs else [])],
            "nested": [row(c) for c in children]}


def cmd_show(args) -> int:
    info = show(Store(args.tracking_uri, create=False), args.run_id)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    out = _out()
    out.print(f"[bold]{info['name']}[/bold]  {info['run_id']}  {info['status']}  started {info['started']}")
    for title, data in (("params", info["params"]), ("metrics", info["metrics"])):
        t = Table(title=title)
        t.add_column("name")
        t.add_column("value", overflow="fold")
        for k in sorted(data):
            t.add_row(k, _fmt(data[k]))
        out.print(t)
    for d in info["datasets"]:
        out.print(f"dataset {d['context']}: {d['name']} (digest {d['digest']}) {d['source']}")
    out.print(f"models in: {', '.join(info['input_models']) or '-'}; out: {', '.join(info['output_models']) or '-'}")
    if info["nested"]:
        table(info["nested"], "nested runs")
    return 0


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats: lower x (p50 or size) and higher accuracy."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def plot(rows: list[dict], path: Path) -> Path:
    """Accuracy against p50 and against size, one point per run, the Pareto front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], "p50_ms", "p50 latency (ms)"), (axes[1], "size_bytes", "size (bytes)")):
        pts = [(r[key], r["accuracy"], r) for r in rows if r.get(key) is not None and r.get("accuracy") is not None]
        front = set(pareto([(x, y) for x, y, _ in pts]))
        for i, (x, y, r) in enumerate(pts):
            on = i in front
            ax.scatter([x], [y], s=60 if on else 30, c="tab:red" if on else "tab:blue", zorder=3)
            ax.annotate(f"{r['run_id'][:8]} {r.get('backend') or ''}", (x, y), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        line = sorted((pts[i][0], pts[i][1]) for i in front)
        if len(line) > 1:
            ax.plot(*zip(*line), c="tab:red", lw=1, ls="--", label="Pareto front")
            ax.legend(loc="lower right")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle("edgepack runs: accuracy against latency and size (red: Pareto front)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cmd_compare(args) -> int:
    store = Store(args.tracking_uri, create=False)
    rows = [row(find_run(store, i)) for i in args.run_ids]
    path = plot(rows, Path(args.plot))
    if args.json:
        print(json.dumps({"runs": rows, "plot": str(path)}, indent=2))
        return 0
    table(rows, "compared runs")
    missing = [r["run_id"][:8] for r in rows if r.get("accuracy") is None]
    if missing:
        print(f"edgepack: note: no accuracy recorded for {', '.join(missing)} (compile with --eval or --calib): "
              "not in the plot", file=sys.stderr)
    _out().print(f"plot: {path}")
    return 0
