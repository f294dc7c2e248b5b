"""`edgepack runs | registry | lineage | reproduce`: the tracking store, read from the CLI."""

from __future__ import annotations


def add_parsers(sub, add_track_args) -> None:
    runs = sub.add_parser("runs", help="recorded runs: list, show, compare")
    rsub = runs.add_subparsers(dest="action", required=True)
    rl = rsub.add_parser("list", help="recent runs (parent runs; --all for stages and artifacts too)")
    rl.add_argument("--filter", help="an MLflow filter, e.g. \"params.target = 'x86-vnni' and metrics.accuracy > 0.9\"")
    rl.add_argument("--all", action="store_true", help="include nested stage and artifact runs")
    rl.add_argument("--max", type=int, default=50, help="at most this many rows (default 50)")
    rl.add_argument("--json", action="store_true")
    rs = rsub.add_parser("show", help="one run: parameters, metrics, inputs, models, nested runs")
    rs.add_argument("run_id", help="a run id (a unique prefix is enough)")
    rs.add_argument("--json", action="store_true")
    rc = rsub.add_parser("compare", help="runs side by side, and a plot of accuracy against p50 and size")
    rc.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    rc.add_argument("--plot", default="runs-compare.png", help="where to write the PNG (default runs-compare.png)")
    rc.add_argument("--json", action="store_true")
    for p in (rl, rs, rc):
        add_track_args(p, work=False)

    reg = sub.add_parser("registry", help="registered artifacts: list, show, promote")
    gsub = reg.add_subparsers(dest="action", required=True)
    gl = gsub.add_parser("list", help="registered models with their aliases")
    gl.add_argument("--json", action="store_true")
    gs = gsub.add_parser("show", help="a registered model's versions, tags and aliases")
    gs.add_argument("name")
    gs.add_argument("--json", action="store_true")
    gp = gsub.add_parser("promote", help="point ALIAS (candidate, production) at VERSION; a bundle is verified first")
    gp.add_argument("name")
    gp.add_argument("version")
    gp.add_argument("alias")
    gp.add_argument("--bundle", help="the bundle made from this version (edgepack package): verified, digest tagged")
    for p in (gl, gs, gp):
        add_track_args(p, work=False)

    lin = sub.add_parser("lineage", help="where a model came from: stages, models, data")
    lsub = lin.add_subparsers(dest="action", required=True)
    ls = lsub.add_parser("show", help="walk back from a registered model, a model id, or an artifact/run folder")
    ls.add_argument("target", metavar="MODEL|ARTIFACT", help="NAME[/VERSION|@ALIAS], m-<id>, an artifact file, "
                    "or an output/run folder (read offline from its reports)")
    ls.add_argument("--offline", action="store_true", help="read the reports and stage.json files only")
    ls.add_argument("--json", action="store_true")
    add_track_args(ls, work=False)

    rep = sub.add_parser("reproduce", help="run a recorded compile or recipe again and compare hashes and metrics")
    rep.add_argument("run_id")
    rep.add_argument("-o", "--output", help="where the rerun writes (default: a new folder under edgepack-out/)")
    rep.add_argument("--tolerance", type=float, default=0.002, help="accuracy/fidelity tolerance (default 0.002)")
    rep.add_argument("--latency-tolerance", type=float, default=0.5,
                     help="relative p50 tolerance (default 0.5: timing on a shared machine is noisy)")
    rep.add_argument("--json", action="store_true")
    add_track_args(rep, work=False)


def run_command(args) -> int:
    """The command; an error from MLflow (a missing model, a bad filter) is one line."""
    from edgepack.errors import EdgepackError

    try:
        return _dispatch(args)
    except Exception as e:
        if not type(e).__module__.startswith("mlflow"):
            raise
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EdgepackError(text[:400]) from None


def _dispatch(args) -> int:
    if args.command == "runs":
        from edgepack.tracking import runs

        return {"list": runs.cmd_list, "show": runs.cmd_show, "compare": runs.cmd_compare}[args.action](args)
    if args.command == "registry":
        from edgepack.tracking import registry

        return {"list": registry.cmd_list, "show": registry.cmd_show, "promote": registry.cmd_promote}[args.action](args)
    if args.command == "lineage":
        from edgepack.tracking import lineage

        return lineage.cmd_show(args)
    from edgepack.tracking import reproduce

    return reproduce.cmd_reproduce(args)
