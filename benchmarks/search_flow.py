"""Does a recipe search find, within a time budget, a point that dominates the demo recipe's result?

The demo's recipe (`edgepack demo`: teacher -> distilled student -> pruned -> QAT INT8 -> host)
runs once: its shipped artifact's accuracy, size and p50 (timed --repeats times in fresh processes,
as the search times its points) are the baseline. Then a recipe search over the demo's knobs
(student width, distillation temperature and epochs, QAT or PTQ, pruning ratio) runs one trial
at a time, resuming the same search folder, until the budget is spent. Objectives: accuracy max,
p50_ms min, size_mb min. A point dominates the demo when its accuracy is >= the demo's, its size
<= the demo's, and its p50 is not worse beyond the noise (p50 - CI <= demo p50 + demo CI, with
the CIs the search reports).

The demo runs with the search's stage cache, so the search reuses its teacher. The searched recipe
is the demo's without its no-teacher baseline student (a comparison, not part of what ships).

    python benchmarks/search_flow.py [--budget-min 30] [--out benchmarks/results/search_flow.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgepack import demo  # noqa: E402
from edgepack.pipeline.engine import GateFailed, run  # noqa: E402
from edgepack.report.schema import CompileReport  # noqa: E402
from edgepack.search import SearchSpec, search  # noqa: E402
from edgepack.search.evaluate import ci95_of_median, retime  # noqa: E402

KNOBS = {"student.args.width": [16, 24, 32], "distill.temperature": [2.0, 4.0, 8.0], "distill.epochs": [2, 3, 4],
         "quantize.mode": ["qat", "ptq"], "prune.ratio": {"low": 0.25, "high": 0.625, "step": 0.125}}
OBJECTIVES = {"accuracy": "max", "p50_ms": "min", "size_mb": "min"}


def spec_for(recipe: dict, trials: int, repeats: int) -> SearchSpec:
    return SearchSpec.model_validate({"name": "mnist-flow", "recipe": recipe, "targets": ["host"],
                                      "objectives": OBJECTIVES, "space": {"recipe": KNOBS},
                                      "trials": trials, "repeats": repeats, "seed": 0})


def baseline(recipe: dict, work: Path, repeats: int) -> dict:
    """The demo's result: its shipped artifact's accuracy, size and p50 with a 95% CI. It runs
    into the search folder's stage cache (the folder claimed for the search first, as a search
    run claims it), so the search's trials reuse the demo's teacher."""
    from edgepack.search.run import _claim

    searched = {**recipe, "stages": [dict(s) for s in recipe["stages"]]}
    searched["stages"][0] = {"distill": {**recipe["stages"][0]["distill"], "baseline": False}}
    _claim((work / "search").resolve(), spec_for(searched, 1, repeats))
    try:
        report = run(recipe, work / "demo", resume=True, cache=work / "search" / "stages")
    except GateFailed as e:
        report = e.report
    final = report.rows[-1]
    emit = next((work / "demo").glob("*-emit/report.json"))
    art = CompileReport.model_validate_json(emit.read_text()).shipped()
    samples = [final.p50_ms] + [retime(None, art, emit.parent / art.path, None) for _ in range(repeats - 1)]
    return {"accuracy": final.accuracy, "size_mb": final.size_bytes / 1e6, "p50_ms": statistics.median(samples),
            "ci95_ms": ci95_of_median(samples), "params": final.params, "macs": final.macs,
            "seconds": report.seconds, "passed": report.passed}


def distinct(rows) -> list:
    """Each point once, at its first trial (a point proposed again is told its figures, cached)."""
    seen, out = set(), []
    for r in rows:
        key = json.dumps(r.point, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def run_search(recipe: dict, work: Path, budget_s: float, repeats: int) -> tuple[object, int]:
    """One more trial per call of the same (resumed) search until the budget is spent (a rerun
    with the folder kept continues it; --budget-min 0 only reports)."""
    start = time.monotonic()
    res = search(spec_for(recipe, 1, repeats), work / "search")[0] if (work / "search" / "study.journal").exists() \
        else None
    trials = len(distinct(res.rows)) if res else 0
    while time.monotonic() - start < budget_s:
        trials += 1
        res = search(spec_for(recipe, trials, repeats), work / "search")[0]
        print(f"{(time.monotonic() - start) / 60:.1f} min: trial {res.rows[-1].number} {res.rows[-1].point} "
              f"{res.rows[-1].fig.status} {res.rows[-1].fig.values}", flush=True)
        if len(distinct(res.rows)) < trials:  # the space is exhausted
            break
    return res, trials


def dominates(fig, ci: float, base: dict) -> bool:
    v = fig.values
    return ("accuracy" in v and v["accuracy"] >= base["accuracy"] and v["size_mb"] <= base["size_mb"]
            and v["p50_ms"] - ci <= base["p50_ms"] + base["ci95_ms"])


def timeline(work: Path) -> tuple[dict, float]:
    """{trial: minutes from the search's first trial start to its end}, and the search's span,
    from the study's own timestamps (a continued search counts only its trials' time)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(work / "search" / "study.journal")))
    trials = optuna.load_study(study_name="mnist-flow-host", storage=storage).get_trials(deepcopy=False)
    t0 = min(t.datetime_start for t in trials if t.datetime_start)
    done = {t.number: (t.datetime_complete - t0).total_seconds() / 60 for t in trials if t.datetime_complete}
    return done, max(done.values(), default=0.0)


def write(out: Path, base: dict, res, work: Path, load: tuple, report_only: bool = False) -> None:
    def knobs(p: dict) -> str:
        return " ".join(f"{k.removeprefix('student.args.')}={v:.3g}" if isinstance(v, float)
                        else f"{k.removeprefix('student.args.')}={v}" for k, v in p.items())

    def cells(r) -> str:
        v = r.fig.values
        acc = f"{100 * v['accuracy']:.2f}%" if "accuracy" in v else "-"
        size = f"{1000 * v['size_mb']:.1f}" if "size_mb" in v else "-"
        p50 = f"{v['p50_ms']:.4f} ± {r.fig.ci95_ms:.4f}" if "p50_ms" in v else "-"
        dom = "yes" if r.fig.status == "built" and dominates(r.fig, r.fig.ci95_ms, base) else "no"
        status = r.fig.status + (f" ({r.fig.error[:80]})" if r.fig.error else "")
        return f"| {r.number} | {at.get(r.number, 0):.1f} | {knobs(r.point)} | {acc} | {size} | {p50} | {status} | {dom} |"

    def faster(r) -> bool:
        return r.fig.values["p50_ms"] + r.fig.ci95_ms < base["p50_ms"] - base["ci95_ms"]

    at, span = timeline(work)

    front = {r.number for r in res.front}
    winners = [r for r in distinct(res.rows) if r.fig.status == "built" and dominates(r.fig, r.fig.ci95_ms, base)]
    lines = ["# Recipe search on the MNIST flow vs the demo recipe", "",
             f"`python benchmarks/search_flow.py` on {time.strftime('%Y-%m-%d')}; host target (x86-vnni), "
             f"{os.cpu_count()} CPUs shared with other jobs ("
             + (f"load average {load[0]:.1f} before, {load[1]:.1f} after); " if not report_only else
                "this report was written from the kept --workdir; see the note for the load during the search); ")
             + f"the search ran {len(distinct(res.rows))} distinct points one at a time in {span:.1f} min (first trial "
             "start to last trial end; `min` below: when each trial ended).", "",
             f"Demo recipe: top-1 {100 * base['accuracy']:.2f}%, size {1000 * base['size_mb']:.1f} KB, "
             f"p50 {base['p50_ms']:.4f} ± {base['ci95_ms']:.4f} ms, {base['params']:,} params, "
             f"{base['macs']:,} MACs ({base['seconds']:.0f} s, gates {'passed' if base['passed'] else 'missed'}).", "",
             "| trial | min | knobs | top-1 | size KB | p50 ms (95% CI) | status | dominates demo |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [cells(r) for r in distinct(res.rows)]
    lines += ["", f"Front (accuracy max, p50 min, size min): trials {', '.join(str(n) for n in sorted(front)) or 'none'}.",
              "", (f"Verdict: {len(winners)} trial(s) dominate the demo's result: "
                   f"{', '.join(str(r.number) for r in winners)}; the first after {at.get(winners[0].number, 0):.1f} "
                   f"min of search. Of them, faster than the demo beyond both intervals: "
                   f"{', '.join(str(r.number) for r in winners if faster(r)) or 'none'}." if winners else
                   "Verdict: no trial dominates the demo's result within the budget."), ""]
    out.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-min", type=float, default=30.0, help="the search's wall-clock budget")
    ap.add_argument("--repeats", type=int, default=3, help="p50 timings per point")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search_flow.md")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        recipe = demo.recipe("host")
        saved = work / "baseline.json"  # a rerun with --workdir kept reuses the demo's figures
        base = json.loads(saved.read_text()) if saved.is_file() else baseline(recipe, work, args.repeats)
        saved.write_text(json.dumps(base))
        print(json.dumps(base), flush=True)
        recipe["stages"][0]["distill"]["baseline"] = False
        res, _ = run_search(recipe, work, 60 * args.budget_min, args.repeats)
        write(args.out, base, res, work, (load_before[0], os.getloadavg()[0]), args.budget_min == 0)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
