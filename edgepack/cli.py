"""`edgepack` command line: parse arguments, build the request, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys

from edgepack.errors import EdgepackError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one `edgepack: error:` line like every other failure
    (argparse's default prints the whole usage first), still exit 2."""

    def error(self, message: str):
        command = self.prog.removeprefix("edgepack").strip()
        hint = f" (see: edgepack {command} --help)" if command else " (see: edgepack --help)"
        print(f"edgepack: error: {message[:500]}{hint}", file=sys.stderr)
        sys.exit(2)


def _bench_int(name: str):
    """An argparse type for a benchmark setting: a whole number within BENCH_LIMITS, so
    `--runs 0` is refused at parse time, before any search or build."""
    def parse(text: str) -> int:
        from edgepack.compiler.request import check_bench_value

        try:
            return check_bench_value(name, int(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:60]!r}") from None
        except EdgepackError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = name  # argparse names the type in its own messages
    return parse


def _threads(text: str) -> int:
    """--threads: at least 1, then capped to this machine's cores with a warning: threads
    beyond the cores only spin (1000 threads on 2 cores turned a second's profile into minutes)."""
    from edgepack.compiler.request import usable_cores

    cores = usable_cores()
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:60]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"threads must be at least 1, got {value}")
    if value > cores:
        print(f"edgepack: warning: --threads {value} is more than the {cores} cores this machine gives "
              f"edgepack; using {cores}", file=sys.stderr)
        return cores
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model.onnx, file.py:factory, or a TorchScript file")
    p.add_argument("--input-shape", action="append", metavar="[NAME:]D1,D2,..",
                   help="fix an input's shape (repeat per input); needed for PyTorch models")
    p.add_argument("--weights", help="state_dict for a file.py:factory model (loaded with weights_only=True)")


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=_bench_int("runs"), help="timed runs, 1 to 1000000 (default: the target's)")
    p.add_argument("--warmup", type=_bench_int("warmup"), help="warm-up runs, 0 to 100000 (default: the target's)")
    p.add_argument("--threads", type=_threads, help="intra-op threads, at most this machine's cores "
                   "(default: the target's)")
    p.add_argument("-o", "--output", help="output folder (never replaced without --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", action="append", metavar="NAME",
                   help="also run on this device (repeat): a devices.yaml name, ssh://user@host[:port], local, qemu")
    _add_devices_file(p)
    p.add_argument("--accept-new-host-key", action="store_true",
                   help="trust an SSH host seen for the first time and record its key (a changed key is still refused)")


def _add_devices_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", metavar="FILE", help="devices.yaml to use (default: $EDGEPACK_DEVICES, "
                   "./devices.yaml, ~/.config/edgepack/devices.yaml)")


def _device_options(args):
    from edgepack.devices import DeviceOptions

    return DeviceOptions(tuple(args.device or ()), args.devices, args.accept_new_host_key)


def _add_devices_command(sub) -> None:
    devs = sub.add_parser("devices", help="the devices of devices.yaml (and the built-in local, qemu)")
    dsub = devs.add_subparsers(dest="action", required=True)
    dl = dsub.add_parser("list", help="every device profile and compile can run on")
    _add_devices_file(dl)
    dl.add_argument("--json", action="store_true")


def _add_bundle_commands(sub) -> None:
    """`package` and `verify`: deployment bundles (edgepack.bundle)."""
    pack = sub.add_parser("package", help="a compile output -> a deployment bundle (folder or .tar.gz): artifact, "
                          "manifest, golden vectors, runner")
    pack.add_argument("out", help="output folder of edgepack compile (or of edgepack run)")
    pack.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="bundle folder, or FILE.tar.gz")
    pack.add_argument("--artifact", metavar="BACKEND", help="which artifact when OUT has several "
                      "(default: the report's selected one)")
    pack.add_argument("--force", action="store_true", help="replace an existing bundle")
    pack.add_argument("--json", action="store_true")

    ver = sub.add_parser("verify", help="check a bundle: structure (exit 4), hashes (5), the device (6), "
                         "golden replay on it (7)")
    ver.add_argument("bundle", help="bundle folder or .tar.gz")
    ver.add_argument("--device", default="local", metavar="NAME", help="where to check it: local (default), qemu, "
                     "a devices.yaml name or ssh://user@host[:port]")
    _add_devices_file(ver)
    ver.add_argument("--accept-new-host-key", action="store_true", help="trust an SSH host seen for the first time")
    ver.add_argument("--manifest-sha256", metavar="HASH", help="the manifest's sha256 as package printed it: "
                     "catches a bundle changed together with its manifest (exit 5)")
    ver.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_profile_command(sub) -> None:
    prof = sub.add_parser("profile", help="latency report of an artifact or bundle, in a fresh process")
    prof.add_argument("artifact", help="artifact file, or a bundle (folder or .tar.gz of edgepack package): its "
                      "structure and hashes verified first, then its artifact timed on its golden inputs")
    prof.add_argument("--target", "-t", help="profile whose benchmark settings to use (default host; a bundle's "
                      "own target)")
    prof.add_argument("--backend", "-b", help="runtime (default: from the file's suffix)")
    prof.add_argument("--inputs", help="inputs to time with (.npz, .npy, image folder); default: random, or a "
                      "bundle's golden inputs")
    prof.add_argument("--json", action="store_true")
    _add_bench_args(prof)
    _add_device_args(prof)
    _add_track_args(prof)


def _add_track_args(p: argparse.ArgumentParser, work: bool = True) -> None:
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow store: sqlite:///file.db, a folder, or http://host:port "
                   "(default: $MLFLOW_TRACKING_URI, else ./mlruns-edgepack/)")
    if work:
        p.add_argument("--no-track", action="store_true", help="do not record this run in the tracking store")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgepack", description="Hardware-aware deployment compiler for edge runtimes.")
    from edgepack import __version__

    parser.add_argument("--version", action="version", version=f"edgepack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    targets = sub.add_parser("targets", help="list or show target profiles")
    tsub = targets.add_subparsers(dest="action", required=True)
    tl = tsub.add_parser("list", help="all profiles, plus the detected host")
    tl.add_argument("--json", action="store_true")
    ts = tsub.add_parser("show", help="one profile in full")
    ts.add_argument("name", help="profile name, 'host', or a YAML file")
    ts.add_argument("--json", action="store_true")

    ins = sub.add_parser("inspect", help="inputs/outputs, ops, params, MACs per layer, size")
    _add_model_args(ins)
    ins.add_argument("--json", action="store_true")
    ins.add_argument("--top", type=int, default=15, help="layers to list by MACs (default 15)")

    comp = sub.add_parser("compile", help="model -> artifact(s) for a target, with parity and latency")
    _add_model_args(comp)
    comp.add_argument("--target", "-t", default="host", help="profile name, 'host' (default) or a YAML file")
    comp.add_argument("--backend", "-b", action="append", help="runtime(s) to emit for (repeat), or 'auto' for all of the target's "
                      "runtimes, shipping the fastest within budget; default: the target's default runtimes")
    comp.add_argument("--calib", help="calibration/validation data (.npz, .npy or image folder)")
    comp.add_argument("--eval", help="labelled evaluation data: accuracy of source and artifacts")
    comp.add_argument("--metric", help="top1|top5 (labels), agreement|agreement_non_near_ties|cosine|mse "
                      "(fidelity to FP32), or module:function taking a run(feeds) callable; default top1 with labels, else cosine")
    comp.add_argument("--eval-output", metavar="NAME",
                      help="the model output the metric judges (default: the first; -o names the folder)")
    comp.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                      help="default: what the target rewards when --calib is given, else fp32; bf16: FP32 weights "
                      "computed in BF16 (openvino, on CPUs with avx512_bf16/amx_bf16)")
    comp.add_argument("--quantizer", action="append", metavar="NAME",
                      help="the INT8 search's candidates: onnxruntime, nncf, dynamic (repeat or comma-separate; "
                      "default all)")
    comp.add_argument("--calibration", metavar="METHOD",
                      help="activation ranges: minmax, entropy or percentile (default: the target's)")
    comp.add_argument("--max-drop", help="accuracy budget for INT8: 0.01 absolute (default) or 1%% relative")
    comp.add_argument("--keep-float", action="append", metavar="name:N|pattern:RE|type:OP",
                      help="nodes to keep in float (repeat); type accepts ONNX ops and DepthwiseConv")
    comp.add_argument("--prune", type=float, metavar="RATIO",
                      help="structured pruning: remove this fraction of channels (widths rounded to the target's multiple)")
    comp.add_argument("--prune-mode", choices=["uniform", "global"], default="uniform")
    comp.add_argument("--prune-layer", action="append", metavar="NODE=RATIO", help="per-layer ratio (repeat)")
    comp.add_argument("--prune-protect", action="append", metavar="NODE", help="never prune this node (repeat)")
    comp.add_argument("--sparsity", type=float, metavar="RATIO",
                      help="magnitude pruning: zero this fraction of weights (size only; ORT gains no speed)")
    comp.add_argument("--json", action="store_true", help="print report.json to stdout")
    _add_bench_args(comp)
    _add_device_args(comp)
    _add_track_args(comp)

    _add_profile_command(sub)
    _add_devices_command(sub)

    run = sub.add_parser("run", help="a recipe: distill -> prune -> quantize -> emit, each stage gated and saved")
    run.add_argument("recipe", help="RECIPE.yaml")
    run.add_argument("-o", "--output", help="run folder (default runs/<recipe name>)")
    run.add_argument("--resume", action="store_true", help="reuse the stages already saved in the run folder")
    run.add_argument("--force", action="store_true", help="start over, replacing the run folder")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_track_args(run)

    demo = sub.add_parser("demo", help="the whole flow on bundled real digits: teacher -> distill -> prune -> "
                          "QAT INT8 -> artifact for host, with a table of every stage")
    demo.add_argument("--epochs", type=int, default=3, help="student distillation epochs (default 3)")
    demo.add_argument("--target", "-t", default="host", help="target to emit for (default host)")
    demo.add_argument("-o", "--output", help="output folder (default runs/demo-<time>)")
    demo.add_argument("--resume", action="store_true", help="reuse the stages a previous demo saved in -o")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_track_args(demo)
    _add_bundle_commands(sub)
    _add_search_parser(sub)
    _add_data_and_tracking(sub)
    return parser


def _add_data_and_tracking(sub) -> None:
    data = sub.add_parser("data", help="bundled sample data")
    dsub = data.add_subparsers(dest="action", required=True)
    dp = dsub.add_parser("prepare", help="(re)generate calibration_data/ from data shipped in wheels")
    dp.add_argument("--force", action="store_true")
    from edgepack.tracking.commands import add_parsers

    add_parsers(sub, _add_track_args)  # runs, registry, lineage, reproduce


def _add_search_parser(sub) -> None:
    s = sub.add_parser("search", help="the feasible Pareto front over accuracy, latency and size per target, "
                       "and the point to ship")
    s.add_argument("spec", help="SEARCH.yaml, or a model (the short form) with compile's model options")
    s.add_argument("--input-shape", action="append", metavar="[NAME:]D1,D2,..", help="fix an input's shape (repeat)")
    s.add_argument("--weights", help="state_dict for a file.py:factory model")
    s.add_argument("--target", "-t", action="append", help="target(s) to search for (repeat; default host)")
    s.add_argument("--calib", help="calibration data (.npz, .npy or image folder)")
    s.add_argument("--eval", help="evaluation data each compile spends its accuracy budget on (labelled: accuracy)")
    s.add_argument("--check", metavar="DATA",
                   help="data no compile fits to: accuracy, drop and fidelity (and their constraints) are judged "
                        "on it instead of --eval, whose figures are fitted")
    s.add_argument("--metric", help="as for compile")
    s.add_argument("--constraint", action="append", metavar="NAME=VALUE",
                   help="max_drop, min_accuracy, max_p50_ms, max_size_mb, max_macs, max_peak_mb, "
                   "min_agreement_non_near_ties, min_cosine (repeat)")
    s.add_argument("--backend", "-b", action="append", help="runtimes to search over (repeat; default onnxruntime)")
    s.add_argument("--precision", action="append", choices=["fp32", "fp16", "bf16", "int8"],
                   help="precisions to search over")
    s.add_argument("--quantizer", action="append", metavar="NAME",
                   help="INT8 quantizers to search over: onnxruntime, nncf, dynamic (repeat)")
    s.add_argument("--calibration", action="append", metavar="METHOD",
                   help="calibration methods to search over: minmax, entropy, percentile (repeat)")
    s.add_argument("--prune", type=float, action="append", metavar="RATIO", help="pruning ratios to search over")
    s.add_argument("--trials", type=int, help="trials per target (default 20)")
    s.add_argument("--workers", type=int, help="trials run at once (default 1)")
    s.add_argument("--repeats", type=int, help="timings per point for the latency interval (default 3)")
    s.add_argument("--choose", choices=["fastest", "knee"], help="how the shipped point is chosen (default fastest)")
    s.add_argument("--executor", default="local", help="local (a process pool, default), ray, or ray://ADDRESS")
    s.add_argument("--json", action="store_true", help="print search.json to stdout")
    _add_bench_args(s)
    _add_track_args(s)


def main(argv: list[str] | None = None) -> int:
    from edgepack import interrupt

    # SIGTERM takes the same path as Ctrl-C (KeyboardInterrupt), so staged outputs are removed and
    # workers killed; the signal is also recorded, so a library that swallows the exception cannot hide it
    interrupt.install()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `edgepack reproduce` re-runs
    try:
        return COMMANDS[args.command](args) or 0
    except EdgepackError as e:
        print(f"edgepack: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)  # a bundle refused before profiling: verify's code
    except KeyboardInterrupt:
        print("edgepack: interrupted (no output was left half-written)", file=sys.stderr)
        return 130
    except OSError as e:  # the file system said no (name too long, no space, permissions): the user's to fix
        where = f"{str(e.filename)[:200]}: " if e.filename else ""
        print(f"edgepack: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1


def _shapes(args):
    from edgepack.ir.spec import parse_input_shapes

    return parse_input_shapes(args.input_shape)


def _listed(items: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated values as one list (None when none were given)."""
    return [x.strip() for item in items for x in item.split(",")] if items else None


def _layer_ratios(items: list[str] | None) -> dict[str, float] | None:
    """`--prune-layer conv1=0.3` items -> {"conv1": 0.3}."""
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            name = ""
        if not sep or not name:
            raise EdgepackError(f"--prune-layer {item!r}: expected NODE=RATIO, e.g. /features.1/conv/Conv=0.3")
    return out


def cmd_targets(args) -> int:
    from edgepack import views
    from edgepack.targets import detect_host, list_profiles, load_profile

    if args.action == "list":
        profiles = list_profiles()
        try:
            profiles.append(detect_host())
        except EdgepackError as e:  # an unknown CPU still lets the user see the shipped profiles
            print(f"edgepack: note: {e}", file=sys.stderr)
        if args.json:
            return _print_json([p.to_dict() for p in profiles])
        views.targets_table(profiles)
        return 0
    profile = load_profile(args.name)
    if args.json:
        return _print_json(profile.to_dict())
    views.target_detail(profile)
    return 0


def cmd_inspect(args) -> int:
    from edgepack import api, views

    stats = api.inspect(args.model, _shapes(args), args.weights)
    if args.json:
        return _print_json(stats)
    views.inspect_view(stats, args.model, args.top)
    return 0


def cmd_compile(args) -> int:
    from edgepack import tracking, views
    from edgepack.compiler import CompileRequest, compile_request
    from edgepack.events import ConsoleListener, Events

    request = CompileRequest.from_kwargs(
        args.model, target=args.target, backends=args.backend, output_dir=args.output, input_shapes=_shapes(args),
        weights=args.weights, calib=args.calib, eval_data=args.eval, metric=args.metric, precision=args.precision,
        max_drop=args.max_drop, keep_float=args.keep_float, prune=args.prune, prune_mode=args.prune_mode,
        prune_layers=_layer_ratios(args.prune_layer), prune_protect=args.prune_protect, sparsity=args.sparsity,
        runs=args.runs, warmup=args.warmup, threads=args.threads, force=args.force, eval_output=args.eval_output,
        devices=_device_options(args), quantizers=_listed(args.quantizer), calibration=args.calibration)
    start = {"name": f"compile {args.model} for {args.target}", "argv": args.argv}
    with tracking.session("compile", start, args.tracking_uri, not args.no_track) as rec:
        events = Events(ConsoleListener(), *tracking.listeners(rec), progress=not args.no_progress)
        report = compile_request(request, events)
    if args.json:
        _print_json(report.to_json())
    else:
        views.report_summary(report)
    quant = report.quantization
    if quant and not quant.met:
        print(f"edgepack: error: {quant.note}", file=sys.stderr)
        return 3
    return 0


def cmd_profile(args) -> int:
    from edgepack import api, tracking, views
    from edgepack.compiler import BenchSettings
    from edgepack.events import Events

    start = {"name": f"profile {args.artifact}", "argv": args.argv}
    with tracking.session("profile", start, args.tracking_uri, not args.no_track) as rec:
        report = api.profile_artifact(args.artifact, args.target, args.backend, args.inputs,
                                      BenchSettings(args.runs, args.warmup, args.threads), args.output, args.force,
                                      not args.no_progress, _device_options(args), Events(*tracking.listeners(rec)))
    if args.json:
        return _print_json(report.to_json())
    views.report_summary(report)
    return 0


def cmd_devices(args) -> int:
    from edgepack import views
    from edgepack.devices import load_devices
    from edgepack.devices.config import BUILTIN, find_devices_file

    found = find_devices_file(args.devices)
    rows = [e.model_dump(exclude_defaults=True) for e in load_devices(found)]
    rows += [{"name": name, "kind": name, "builtin": True} for name in BUILTIN if name not in {r["name"] for r in rows}]
    if args.json:
        return _print_json({"file": str(found) if found else None, "devices": rows})
    views.devices_table(rows, found)
    return 0


def cmd_run(args) -> int:
    from edgepack import tracking, views
    from edgepack.events import ConsoleListener, Events
    from edgepack.pipeline.engine import GateFailed, run
    from edgepack.pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    start = {"name": f"run {recipe.name}", "argv": args.argv, "recipe": tracking.recipe_json(recipe)}
    with tracking.session("run", start, args.tracking_uri, not args.no_track) as rec:
        events = Events(ConsoleListener(), *tracking.listeners(rec), progress=not args.no_progress)
        try:
            report = run(recipe, output_dir=args.output, force=args.force, resume=args.resume, events=events)
        except GateFailed as e:
            report = e.report
    if args.json:
        _print_json(report.to_json())
    else:
        views.flow_table(report)
    return 0 if report.passed else 3


def cmd_demo(args) -> int:
    from edgepack import demo

    report = demo.run(epochs=args.epochs, output_dir=args.output, target=args.target, resume=args.resume,
                      progress=not args.no_progress, track=not args.no_track, tracking_uri=args.tracking_uri)
    return 0 if report.passed else 3


def cmd_search(args) -> int:
    from edgepack import tracking
    from edgepack.search.cli import run_search, spec_of, tracking_start

    spec = spec_of(args)
    with tracking.session("search", tracking_start(args, spec), args.tracking_uri, not args.no_track) as rec:
        return run_search(args, spec, tracking.listeners(rec))


def cmd_data(args) -> int:
    from edgepack import sample_data

    for name, path in sample_data.prepare(force=args.force).items():
        print(f"{name}: {path}")
    return 0


def cmd_package(args) -> int:
    from edgepack.bundle import package

    done = package(args.out, args.output, args.artifact, args.force)
    if args.json:
        return _print_json({"bundle": str(done.path), "name": done.name, "backend": done.backend,
                            "files": done.files, "bytes": done.bytes, "seconds": round(done.seconds, 2),
                            "manifest_sha256": done.manifest_sha256})
    print(f"{done.path}: {done.name} ({done.backend}, {done.files} files, {done.bytes / 1e6:.1f} MB) "
          f"in {done.seconds:.1f} s; manifest sha256 {done.manifest_sha256}")
    return 0


def cmd_verify(args) -> int:
    from edgepack.bundle import verify
    from edgepack.devices import resolve

    verdict = verify(args.bundle, resolve(args.device, args.devices, args.accept_new_host_key), args.manifest_sha256)
    if args.json:
        _print_json(verdict.to_json())
    else:
        for c in verdict.checks:
            print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']:<9} {c['detail']}")
    failed = verdict.failed
    if failed is not None:
        print(f"edgepack: verify: {failed['check']}: {failed['detail']}", file=sys.stderr)
    return verdict.exit_code


def _print_json(obj) -> int:
    print(json.dumps(obj, indent=2, default=str))
    return 0


def _tracking_command(args) -> int:
    from edgepack.tracking.commands import run_command

    return run_command(args)


COMMANDS = {"targets": cmd_targets, "inspect": cmd_inspect, "compile": cmd_compile,
            "profile": cmd_profile, "devices": cmd_devices, "run": cmd_run, "demo": cmd_demo, "data": cmd_data,
            "package": cmd_package, "verify": cmd_verify, "search": cmd_search,
            "runs": _tracking_command, "registry": _tracking_command, "lineage": _tracking_command,
            "reproduce": _tracking_command}
