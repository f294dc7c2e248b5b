"""The feasible Pareto set, with latency's noise respected, and the chosen point.

Optuna's own front (`study.best_trials`) compares values exactly: a point 0.01 ms faster inside a
±0.05 ms interval would push a more accurate one off the front. Here latency is better only
beyond both intervals (a.p50 + a.ci < b.p50 - b.ci), and no worse when a's median lies within b's
interval or below it: a point's own noise never makes it as fast as another (timed 5.1 ± 8.7 ms,
it does not match one timed 3.99 ± 0.02 ms). Every other figure is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgepack.search.figures import Figures


@dataclass
class Row:
    """One evaluated point of one target."""

    number: int  # Optuna's trial number
    point: dict
    fig: Figures
    misses: dict  # constraint -> relative miss (> 0: missed)

    @property
    def feasible(self) -> bool:
        return self.fig.status == "built" and all(v <= 0 for v in self.misses.values())

    @property
    def total_miss(self) -> float:
        return sum(v for v in self.misses.values() if v > 0)


def _better(a: Row, b: Row, name: str, sense: str) -> tuple[bool, bool]:
    """(a no worse than b, a strictly better than b) on one objective."""
    x, y = a.fig.values.get(name), b.fig.values.get(name)
    if x is None or y is None:
        return True, False
    if sense == "min":
        x, y = -x, -y
    if name == "p50_ms":  # no worse: a's median within b's interval; better: beyond both intervals
        return x >= y - b.fig.ci95_ms, x - a.fig.ci95_ms > y + b.fig.ci95_ms
    return x >= y, x > y


def dominates(a: Row, b: Row, objectives: dict) -> bool:
    """a is no worse on every objective and better beyond the noise on at least one."""
    results = [_better(a, b, n, s) for n, s in objectives.items()]
    return all(ok for ok, _ in results) and any(better for _, better in results)


def front(rows: list[Row], objectives: dict) -> list[Row]:
    """The feasible rows no other feasible row dominates (one per distinct point)."""
    feasible, seen = [], set()
    for r in sorted((r for r in rows if r.feasible), key=lambda r: r.number):
        key = _point_key(r)
        if key not in seen:
            seen.add(key)
            feasible.append(r)
    return [r for r in feasible if not any(dominates(o, r, objectives) for o in feasible if o is not r)]


def choose(rows: list[Row], objectives: dict, rule: str) -> tuple[Row, str]:
    """The point to ship from the front, and why."""
    if rule == "knee" and len(rows) > 2:
        return _knee(rows, objectives)
    timed = [r for r in rows if "p50_ms" in r.fig.values]
    if not timed:
        return rows[0], "the only kind of point on the front (none timed)"
    fastest = min(timed, key=lambda r: (r.fig.values["p50_ms"], r.fig.ci95_ms))
    best = fastest.fig.values["p50_ms"]
    # within the fastest point's interval, prefer the more accurate, then the smaller. Its own
    # interval only: a point timed 5, 13 and 14 ms (a wide interval of its own) is not as fast
    # as one timed 3.8 ms three times, however much its interval overlaps
    tied = [r for r in timed if r.fig.values["p50_ms"] <= best + fastest.fig.ci95_ms]
    pick = max(tied, key=lambda r: (r.fig.values.get("accuracy", 0.0), -r.fig.values.get("size_mb", 0.0)))
    why = f"fastest within the constraints: p50 {pick.fig.values['p50_ms']:.4g} ms ± {pick.fig.ci95_ms:.2g}"
    if len(tied) > 1:
        why += f" ({len(tied)} points tie within the noise; the most accurate, then smallest, of them)"
    return pick, why


def _knee(rows: list[Row], objectives: dict) -> tuple[Row, str]:
    """The point nearest the ideal corner, each objective scaled to [0, 1] over the front."""
    def scaled(r: Row, name: str, sense: str) -> float:
        values = [x.fig.values.get(name, 0.0) for x in rows]
        lo, hi = min(values), max(values)
        v = (r.fig.values.get(name, 0.0) - lo) / (hi - lo) if hi > lo else 0.0
        return v if sense == "min" else 1.0 - v

    dist = {r.number: sum(scaled(r, n, s) ** 2 for n, s in objectives.items()) ** 0.5 for r in rows}
    pick = min(rows, key=lambda r: dist[r.number])
    return pick, (f"knee of the front: nearest the ideal point over {', '.join(objectives)} scaled to the "
                  f"front's range (distance {dist[pick.number]:.3f})")


def closest(rows: list[Row], n: int = 3) -> list[Row]:
    """The infeasible points that miss least (sum of relative misses), for an infeasible spec."""
    ranked, seen = [], set()
    for r in sorted(rows, key=lambda r: (r.fig.status != "built", r.total_miss, r.number)):
        key = _point_key(r)
        if key not in seen:
            seen.add(key)
            ranked.append(r)
    return ranked[:n]


def _point_key(r: Row) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in r.point.items()))
