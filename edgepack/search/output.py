"""What a target's search leaves: the front as a table, the plot, the chosen point's artifact.

The plot is drawn with matplotlib (Agg: no display needed) rather than
`optuna.visualization.matplotlib.plot_pareto_front`, which draws exact values: here each point
carries its latency interval and the constraints are drawn as the lines a point must stay within.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgepack.fsutil import atomic_write
from edgepack.search.spec import CONSTRAINTS, Constraints

COLUMNS = ("accuracy", "drop", "p50_ms", "size_mb", "macs", "params", "agreement_non_near_ties", "cosine",
           # with a check set: what each compile fitted on eval, beside what the check measured
           "fit_accuracy", "fit_agreement_non_near_ties")


def write_target(folder: Path, res, spec, bounds: Constraints) -> None:
    """pareto.md, pareto.png and chosen/ under `folder` (replaced on each run: they are derived)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "pareto.md", table(res))
    plot(folder / "pareto.png", res, spec.objectives, bounds)
    chosen = folder / "chosen"
    if chosen.exists():
        shutil.rmtree(chosen)
    if res.chosen is not None and res.chosen.fig.report:
        shutil.copytree(Path(res.chosen.fig.report).parent, chosen)


def _precision(point: dict) -> str:
    """The point's precision, with the INT8 knobs it varied (quantizer, calibration, budget) after it."""
    knobs = [str(point[k]) if k != "max_drop" else f"max_drop {point[k]:g}"
             for k in ("quantizer", "calibration", "max_drop") if k in point] if point["precision"] == "int8" else []
    return point["precision"] + (f" ({', '.join(knobs)})" if knobs else "")


def table(res) -> str:
    """The front (chosen point marked) as a markdown table, then the reason."""
    cols = [c for c in COLUMNS if any(c in r.fig.values for r in res.rows)]
    lines = [f"# Search: {res.target}", "", f"Constraints: {res.constraints or 'none'}", ""]
    if not res.front:
        lines += ["No point met the constraints. Closest:", ""] + [f"- trial {r.number}: misses "
                                                                   f"{', '.join(k for k, v in r.misses.items() if v > 0)}"
                                                                   for r in res.closest]
        return "\n".join(lines) + "\n"
    knobs = _knobs(res.front[0].point)
    lines += ["| trial | " + " | ".join(knobs) + " | " + " | ".join(cols) + " |",
              "|" + "---|" * (1 + len(knobs) + len(cols))]
    for r in sorted(res.front, key=lambda r: r.fig.values.get("p50_ms", 0.0)):
        mark = " (chosen)" if r is res.chosen else ""
        lines.append(f"| {r.number}{mark} | " + " | ".join(f(r.point) for f in knobs.values()) + " | "
                     + " | ".join(_cell(c, r) for c in cols) + " |")
    lines += ["", f"Chosen: trial {res.chosen.number}: {res.reason}", ""]
    return "\n".join(lines)


def _knobs(point: dict) -> dict:
    """{column: point -> text}: a model search's five knobs, or a recipe search's paths."""
    if "backend" not in point:
        return {k: (lambda p, k=k: f"{p[k]:.4g}" if isinstance(p[k], float) else str(p[k])) for k in point}
    return {"backend": lambda p: p["backend"], "precision": _precision,
            "prune": lambda p: f"{p['prune_ratio'] or 0:.3g} {p['prune_mode']}",
            "keep float": lambda p: "|".join(p["keep_float"]) or "-"}


def _cell(col: str, r) -> str:
    v = r.fig.values.get(col)
    if v is None:
        return "-"
    if col == "p50_ms":
        return f"{v:.4g} ± {r.fig.ci95_ms:.2g}"
    return f"{v:,.0f}" if col == "macs" else f"{v:.4g}"


def _axes(objectives: dict) -> tuple[str, str]:
    """Latency across, the first other objective up (accuracy when it is one)."""
    names = list(objectives)
    y = next((n for n in names if n != "p50_ms"), "size_mb")
    return "p50_ms", y


def plot(path: Path, res, objectives: dict, bounds: Constraints) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = _axes(objectives)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = [r for r in res.rows if x in r.fig.values and y in r.fig.values]
    for group, style in ((lambda r: not r.feasible, dict(color="0.7", label="infeasible")),
                         (lambda r: r.feasible, dict(color="tab:blue", label="feasible"))):
        sel = [r for r in pts if group(r)]
        if sel:
            ax.errorbar([r.fig.values[x] for r in sel], [r.fig.values[y] for r in sel],
                        xerr=[r.fig.ci95_ms for r in sel], fmt="o", ms=4, **style)
    line = sorted((r for r in res.front if x in r.fig.values and y in r.fig.values), key=lambda r: r.fig.values[x])
    if line:
        ax.step([r.fig.values[x] for r in line], [r.fig.values[y] for r in line], where="post", color="tab:red",
                label="front")
    if res.chosen is not None and x in res.chosen.fig.values and y in res.chosen.fig.values:
        ax.plot(res.chosen.fig.values[x], res.chosen.fig.values[y], "*", ms=16, color="tab:green", label="chosen")
    for name, bound in bounds.bounds().items():
        figure, _ = CONSTRAINTS[name]
        if figure == "drop" and y == "accuracy" and pts:  # the drop bound as the accuracy it allows
            figure, bound = y, pts[0].fig.values["accuracy"] + pts[0].fig.values["drop"] - bound
        if figure == x:
            ax.axvline(bound, ls="--", color="k", lw=0.8)
            ax.annotate(name, (bound, ax.get_ylim()[1]), fontsize=7, ha="right", va="top", rotation=90)
        elif figure == y:
            ax.axhline(bound, ls="--", color="k", lw=0.8)
            ax.annotate(name, (ax.get_xlim()[1], bound), fontsize=7, ha="right", va="bottom")
    ax.set_xlabel("p50 latency (ms, 95% CI)")
    ax.set_ylabel(y)
    ax.set_title(f"{res.target}: {len(pts)} points, {len(res.front)} on the feasible front")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
