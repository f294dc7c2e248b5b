"""`edgepack search`'s arguments -> a spec -> the search -> what the terminal shows, exit code.

Exit 0: every target has a chosen point; 3: some target has none (the closest points are
printed with the constraints each misses), as `compile` and `run` do when a budget or gate fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgepack.search.figures import label
from edgepack.search.spec import SearchSpec, from_args, load_spec, parse_constraints


def spec_of(args) -> SearchSpec:
    """The spec file, with the command line's run settings over it; or the short form."""
    settings = {"trials": args.trials, "workers": args.workers, "repeats": args.repeats, "choose": args.choose,
                "runs": args.runs, "warmup": args.warmup, "threads": args.threads}
    if Path(args.spec).suffix in (".yaml", ".yml"):
        spec = load_spec(args.spec)
        # only what the file set: a recipe search must not gain the model search's default knobs
        return SearchSpec.model_validate(spec.model_dump(exclude_unset=True) |
                                         {k: v for k, v in settings.items() if v is not None})
    space = {"backend": args.backend, "precision": args.precision, "prune_ratio": args.prune,
             "quantizer": args.quantizer, "calibration": args.calibration}
    return from_args({"name": Path(args.spec).stem.replace(".py:", "-")[:64] or "search", "model": args.spec,
                      "input_shape": args.input_shape, "weights": args.weights, "calib": args.calib,
                      "eval": args.eval, "check": args.check, "metric": args.metric, "targets": args.target,
                      "constraints": parse_constraints(args.constraint) or None,
                      "space": {k: v for k, v in space.items() if v} or None, **settings})


def output_of(args, spec: SearchSpec) -> str:
    return args.output or f"edgepack-out/search-{spec.name}"


def tracking_start(args, spec: SearchSpec) -> dict:
    """What the tracking session's parent run is made of: the spec (params and an artifact), and
    the search's identity (its output folder and spec), so a resumed search adds to the same run."""
    import hashlib

    out = str(Path(output_of(args, spec)).resolve())
    return {"name": f"search {spec.name}", "argv": getattr(args, "argv", None),
            "search": {"key": hashlib.sha256(f"{out}\n{spec.key()}".encode()).hexdigest()[:32], "output_dir": out,
                       "spec": json.loads(spec.model_dump_json()), "trials": spec.trials}}


def run_search(args, spec: SearchSpec | None = None, listeners: tuple = ()) -> int:
    """Run the search of `args` (its spec already read, or read now); `listeners`: more event
    listeners beside the console's (the tracking recorder)."""
    from edgepack.events import ConsoleListener, Events

    try:
        from edgepack.search.run import misses_line, search
    except ModuleNotFoundError as e:
        from edgepack.errors import EdgepackError

        raise EdgepackError(f"edgepack search needs {e.name}: pip install 'edgepack[search]'") from None

    spec = spec or spec_of(args)
    out = output_of(args, spec)
    events = Events(ConsoleListener(), *listeners, progress=not args.no_progress)
    results = search(spec, out, executor=args.executor, events=events)
    if args.json:
        print((Path(out) / "search.json").read_text())
    code = 0
    for r in results:
        target = next(t for t in spec.target_list() if t.name == r.target)
        if r.feasible:
            c = r.chosen
            print(f"{r.target}: chose trial {c.number} ({label(c.point)}): {r.reason}; "
                  f"{len(r.front)} point(s) on the feasible front; see {out}/{Path(r.target).stem}/pareto.md",
                  file=sys.stderr if args.json else sys.stdout)
            continue
        code = 3
        print(f"edgepack: error: {r.target}: no point meets the constraints "
              f"{json.dumps(r.constraints)}; closest:", file=sys.stderr)
        for row in r.closest:
            print(f"  {misses_line(row, target)}", file=sys.stderr)
    return code
