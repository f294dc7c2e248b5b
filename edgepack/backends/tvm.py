"""Apache TVM (Relax, 0.27): the artifact is a shared library `model.so` plus `model.json`.

ONNX -> Relax (`tvm.relax.frontend.onnx.from_onnx`) -> legalize + fuse -> schedules -> `model.so`.

Schedules, in order of preference for each fused kernel:
1. MetaSchedule tuning records for this model + target, from a database cached under
   ~/.cache/edgepack/tvm/<hash of model, target, TVM version>/ (or $EDGEPACK_TVM_CACHE), tuned
   within the budget of the tvm runtime's options: `tune_trials` searched candidates and/or
   `tune_seconds` of wall clock ($EDGEPACK_TVM_TUNE_SECONDS overrides it); no budget = no new
   tuning, cached records still apply. The database is tuned into and read under a file lock,
   so parallel compiles of one model never see half a database;
2. edgepack's default CPU schedule (`_CpuDefault`): parallel outer loops, reductions moved outside
   a vectorised innermost output loop. TVM 0.27 ships default schedules for GPUs only, and
   unscheduled CPU kernels are single-threaded scalar loops.

An artifact without tuning records is reported as untuned: it runs and is correct, but it is
not a deployable result (MobileNetV2 untuned is several times slower than ONNX Runtime).

Cross-compiled artifacts (a profile whose tvm `target` option names another architecture, e.g. arm64)
are linked with the Debian cross toolchain (`aarch64-linux-gnu-g++`) and run on the emulated
board (edgepack.devices.QemuDevice), not on this host.

Loading and running: backends/sessions/tvm_session.py (also what the board runs). TVM's CPU
thread pool belongs to the thread that runs inference; a load sizes the calling thread's pool
through TVM's API (`runtime.config_threadpool`), never through TVM_NUM_THREADS in the
environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgepack.backends.base import Backend
from edgepack.backends.options import TvmOptions
from edgepack.errors import EdgepackError, first_line
from edgepack.fsutil import file_lock
from edgepack.hostinfo import arch_name
from edgepack.ir.spec import TensorSpec, graph_inputs, graph_outputs

SIDECAR = "model.json"
_IN_PROCESS = threading.Lock()  # see TvmBackend.emit
CACHE_VERSION = 1  # bump when what goes into the key or the database layout changes
UNTUNED_NOTE = ("untuned TVM is not a deployable result: give it a tuning budget (the tvm runtime's "
                "tune_trials or tune_seconds option, or EDGEPACK_TVM_TUNE_SECONDS)")


def cache_root() -> Path:
    env = os.environ.get("EDGEPACK_TVM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgepack" / "tvm"


def _env_seconds() -> float | None:
    """$EDGEPACK_TVM_TUNE_SECONDS, the user's override of a profile's `tune_seconds`; None if unset."""
    raw = os.environ.get("EDGEPACK_TVM_TUNE_SECONDS", "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise EdgepackError(f"EDGEPACK_TVM_TUNE_SECONDS={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise EdgepackError(f"EDGEPACK_TVM_TUNE_SECONDS={raw!r}: must be >= 0")
    return value


@dataclass(frozen=True)
class TuningBudget:
    """How much tuning one model and target get in total, across compiles: up to `seconds` of
    wall clock and up to `trials` searched candidates, whichever ends first (0 = no such bound).
    A trial bound gives the same search on a busy machine as on an idle one; seconds cap it."""

    seconds: float = 0.0
    trials: int = 0
    per_round: int | None = None

    @classmethod
    def of(cls, options: TvmOptions) -> TuningBudget:
        env = _env_seconds()
        return cls(options.tune_seconds if env is None else env, options.tune_trials, options.trials_per_round)

    @property
    def active(self) -> bool:
        return self.seconds > 0 or self.trials > 0

    def left(self, stats: dict) -> tuple[float, float] | None:
        """(seconds, trials) still to spend after what the database's stats record as spent
        (math.inf where unbounded); None when nothing is asked for or the budget is spent."""
        if not self.active:
            return None
        seconds = self.seconds - stats["seconds_spent"] if self.seconds > 0 else math.inf
        trials = self.trials - stats["searched"] if self.trials > 0 else math.inf
        return (seconds, trials) if seconds > 1.0 and trials >= 1 else None


class TvmBackend(Backend):
    name = "tvm"
    consumes_qdq = True
    precisions = ("fp32",)
    session_module = "tvm_session"

    def __init__(self, options: TvmOptions | Mapping | None = None, cache_dir: str | Path | None = None):
        """`options`: TvmOptions (target, tuning budget); `cache_dir`: the tuning database's
        folder when not $EDGEPACK_TVM_CACHE / ~/.cache/edgepack/tvm (where it lives is this
        machine's business, not the target's, so it is no option)."""
        super().__init__(options)
        self.budget = TuningBudget.of(self.options)  # a bad $EDGEPACK_TVM_TUNE_SECONDS fails here
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.last_tuning: dict | None = None  # what the latest emit() did about tuning

    # ------------------------------------------------------------------ emit

    def emit(self, model: onnx.ModelProto, outdir: Path, profile, precision: str = "fp32",
             calib=None) -> Path:
        if precision == "int8":
            raise EdgepackError("TVM INT8 not supported yet: compile fp32, or use another backend for int8")
        if precision != "fp32":
            raise EdgepackError(f"TVM {precision} not supported yet: only fp32")
        import tvm

        target_dict, cross = resolve_target(profile, self.options.target)
        target = tvm.target.Target(target_dict)
        work_dir = (self.cache_dir or cache_root()) / cache_key(model, target_dict)
        budget = TuningBudget() if cross else self.budget
        # TVM's ONNX importer and MetaSchedule's logging setup are not thread-safe (two emits in
        # threads of one process failed with an AssertionError in the importer and a broken
        # logging config): within a process emits take turns; across processes the database lock
        with _IN_PROCESS, _database_lock(work_dir, create=budget.active) as cached:
            mod = import_onnx(model)
            tuning = _tune(mod, target, work_dir, budget, cached)
            if cross and self.budget.active:
                tuning["notes"].append("not tuned: tuning a cross-compiled target needs the real board "
                                       "(MetaSchedule RPC runner); emulated timings would mislead it")
            self.last_tuning = tuning
            t0 = time.perf_counter()
            ex = _build(mod, target, work_dir if tuning["records"] else None, target_dict)
            build_s = time.perf_counter() - t0
        path = _export(ex, Path(outdir) / "model.so", cross, _triple(target_dict))
        (Path(outdir) / SIDECAR).write_text(json.dumps(_sidecar(model, target_dict, cross, tuning, build_s),
                                                       indent=2))
        return path

    # ------------------------------------------------------------------ run

    def companions(self, artifact: Path) -> list[Path]:
        return [Path(artifact).with_name(SIDECAR)]

    def load(self, artifact: Path, threads: int):
        meta = read_sidecar(Path(artifact))
        arch = arch_name(platform.machine())
        if meta.get("target_triple", arch).split("-")[0] != arch:
            what = meta["target_triple"].split("-")[0]
            raise EdgepackError(f"{what} artifact: run it on the board (edgepack.devices.QemuDevice)")
        return self.open_session(artifact, threads)

    def cross_compiled(self, artifact: Path) -> bool:
        return bool(read_sidecar(Path(artifact)).get("cross_compiled"))

    def architecture(self, artifact: Path) -> str | None:
        return arch_name(str(read_sidecar(Path(artifact)).get("target_triple", "")).split("-")[0]) or None

    def declared_inputs(self, artifact: Path) -> list[TensorSpec]:
        return [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in read_sidecar(Path(artifact))["inputs"]]

    def describe(self, artifact: Path) -> dict:
        meta = read_sidecar(Path(artifact))
        return {"tuned": meta["tuned"], "target": meta["target"], "target_triple": meta["target_triple"],
                "cross_compiled": meta["cross_compiled"], "tuning": meta["tuning"], "notes": meta["notes"]}

    def deployment(self, artifact: Path) -> dict:
        """A shared library: runs on the architecture of its target triple only, with the TVM
        runtime release that built it."""
        meta = read_sidecar(Path(artifact))
        return {"arch": self.architecture(artifact) or "unknown", "minimum_version": None,
                "minimum_reason": f"a compiled TVM module needs the runtime release that built it "
                                  f"({meta.get('tvm_version', '?')})",
                "ops": {"format": meta.get("format", "tvm"), "target": meta.get("target"),
                        "target_triple": meta.get("target_triple"), "tuned": meta.get("tuned")}}


def _export(ex, path: Path, cross: bool, triple: str) -> Path:
    """Link the compiled module into `path`; cross-compiled with the Debian toolchain for `triple`."""
    try:
        if cross:
            from tvm.support.cc import cross_compiler

            cxx = f"{triple}-g++"
            if not shutil.which(cxx):
                raise EdgepackError(f"{cxx} not found: cross-compiling for {triple} needs "
                                    f"`apt-get install g++-{triple.replace('_', '-')}`")
            ex.export_library(str(path), fcompile=cross_compiler(cxx))
        else:
            ex.export_library(str(path))
    except EdgepackError:
        raise
    except Exception as e:
        raise EdgepackError(f"TVM could not link {path.name}: {first_line(e)}") from None
    return path


def _sidecar(model: onnx.ModelProto, target_dict: dict, cross: bool, tuning: dict, build_s: float) -> dict:
    """model.json: what `load` needs (I/O names, entry, target) and what the report says about tuning."""
    import tvm

    return {
        "format": "tvm-relax-vm",
        "tvm_version": tvm.__version__,
        "entry": "main",
        "inputs": [s.to_dict() for s in graph_inputs(model)],
        "outputs": [s.to_dict() for s in graph_outputs(model)],
        "target": target_dict,
        "target_triple": _triple(target_dict),
        "cross_compiled": cross,
        "tuned": tuning["tuned"],
        "tuning": {k: v for k, v in tuning.items() if k not in ("notes", "tuned")},
        "build_s": round(build_s, 2),
        "default_schedule": "edgepack _CpuDefault (parallel + vectorise) for kernels without records",
        "notes": tuning["notes"] + ([] if tuning["tuned"] else [UNTUNED_NOTE]),
    }


# ---------------------------------------------------------------------- helpers (public for tests)

def read_sidecar(artifact: Path) -> dict:
    path = Path(artifact).with_name(SIDECAR)
    if not path.is_file():
        raise EdgepackError(f"{artifact}: {SIDECAR} missing beside it (it holds the I/O names and target)")
    return json.loads(path.read_text())


def resolve_target(profile, wanted: dict | None) -> tuple[dict, bool]:
    """The TVM target dict for `profile` (the tvm `target` option `wanted`, else this machine's
    CPU) and whether it is for another architecture."""
    import tvm

    host_arch = arch_name(platform.machine())
    if wanted:
        target = dict(wanted)
        triple = target.get("mtriple")
        cross = bool(triple) and triple.split("-")[0] != host_arch
    else:  # the machine that compiles is the machine that runs: let LLVM name its CPU
        target = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
        cross = False
    if target.get("kind", "llvm") == "llvm" and "num-cores" not in target:
        # MetaSchedule needs a core count to plan parallel loops.
        cores = profile.effective_threads() if not cross else (profile.benchmark.threads or 4)
        target["num-cores"] = int(cores)
    try:
        tvm.target.Target(target)
    except Exception as e:
        raise EdgepackError(f"profile {profile.name}: tvm option target {target} is not a valid TVM target: "
                            f"{first_line(e)}") from None
    return target, cross


def _triple(target: dict) -> str:
    if target.get("mtriple"):
        return str(target["mtriple"])
    arch = arch_name(platform.machine())
    return f"{arch}-linux-gnu" if sys.platform.startswith("linux") else f"{arch}-{sys.platform}"


def cache_key(model: onnx.ModelProto, target: dict) -> str:
    import tvm

    h = hashlib.sha256()
    h.update(model.SerializeToString(deterministic=True))
    h.update(json.dumps(target, sort_keys=True).encode())
    h.update(f"tvm {tvm.__version__} edgepack-tvm-cache {CACHE_VERSION}".encode())
    return h.hexdigest()[:20]


def import_onnx(model: onnx.ModelProto):
    """ONNX -> Relax IRModule; an unsupported op is an EdgepackError naming the op and its node."""
    from tvm.relax.frontend.onnx import from_onnx

    try:
        from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

        known = set(_get_convert_map()) | {"Constant", "If"}
    except Exception:  # private helper moved: the importer's own check still applies
        known = None
    if known is not None:
        missing = [n for n in model.graph.node if n.op_type not in known]
        if missing:
            ops = sorted({n.op_type for n in missing})
            nodes = ", ".join(f"{n.op_type} node {n.name or '(unnamed)'!r}" for n in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise EdgepackError(f"TVM cannot import op{'s' if len(ops) > 1 else ''} {', '.join(ops)}: "
                                f"{nodes}{more} (no converter in TVM's Relax ONNX frontend)")
    try:
        mod = from_onnx(model, keep_params_in_input=False)
    except Exception as e:
        node = _failing_node(e)
        where = f"{node.op_type} node {node.name or '(unnamed)'!r}" if node is not None else "the graph"
        raise EdgepackError(f"TVM cannot import {where}: {first_line(e)}") from None
    from tvm import relax

    return relax.transform.DecomposeOpsForInference()(mod)


def _failing_node(exc: BaseException):
    """The ONNX node the Relax importer was converting when `exc` was raised, if known."""
    tb = exc.__traceback__
    node = None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_construct_nodes":
            node = tb.tb_frame.f_locals.get("node", node)
        tb = tb.tb_next
    return node


# ---------------------------------------------------------------------- build

def _prepare(mod, target):
    """Legalize + fuse exactly as MetaSchedule's task extraction does, so records match kernels."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as rp  # 0.27: relax.pipeline's wrappers miss it

    seq = [*rp.library_dispatch_passes(target), relax.transform.LegalizeOps(),
           relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
           relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(seq)(mod)


def _build(mod, target, work_dir: Path | None, target_dict: dict):
    """Compile with the tuning records in `work_dir` (None: default schedules only); a lowering
    or codegen failure in TVM itself becomes one line naming the target."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as rp
    from tvm.s_tir import dlight as dl

    try:
        mod = _prepare(mod, target)
        with target, tvm.transform.PassContext(opt_level=3):
            if work_dir is not None:
                with _database(work_dir):
                    mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            mod = dl.ApplyDefaultSchedule(_cpu_default_rule(max(4, _lanes(target))))(mod)
            mod = tvm.transform.Sequential([*rp.dataflow_lower_passes(target), *rp.finalize_passes(target)])(mod)
            return tvm.compile(mod, target=target, relax_pipeline=None)
    except EdgepackError:
        raise
    except Exception as e:
        raise EdgepackError(f"TVM failed to compile the model for {target_dict}: {first_line(e)}") from None


def _database(work_dir: Path):
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(path_workload=str(work_dir / "database_workload.json"),
                                    path_tuning_record=str(work_dir / "database_tuning_record.json"),
                                    module_equality="structural")


def _cpu_default_rule(lanes: int):
    """A dlight rule for kernels without tuning records (TVM 0.27 has defaults for GPUs only).

    Per block: spatial loops first, the innermost spatial loop split into a vector of up to
    2x`lanes`, reduction loops moved outside that vector, the outer spatial loops fused and run in
    parallel. Producers (padding, ...) are inlined first. A block this cannot schedule is left as
    it was: correct, only slower.
    """
    from tvm import s_tir, tirx
    from tvm.s_tir import dlight as dl
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base import try_inline

    class _CpuDefault(dl.ScheduleRule):
        def apply(self, func, target, _tunable):
            if not isinstance(func, tirx.PrimFunc) or (func.attrs and "tir.is_scheduled" in func.attrs):
                return None
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if infos is None:
                return None
            for info in try_inline(sch, infos):
                try:
                    self._block(sch, info)
                except Exception:  # tvm ScheduleError: schedule primitives check before changing
                    pass
            return sch

        @staticmethod
        def _block(sch, info):
            kinds, block = info.dom_kind(), info.block_rv
            loops = sch.get_loops(block)
            if not loops or "O" in kinds or "S" not in kinds:
                return
            spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
            reduce = [lp for lp, k in zip(loops, kinds) if k == "R"]
            sch.reorder(*spatial, *reduce)
            extent = sch.get(spatial[-1]).extent
            if not isinstance(extent, tirx.IntImm):
                return
            extent = int(extent.value)
            vec = next(d for d in range(min(extent, 2 * lanes), 0, -1) if extent % d == 0)
            if 1 < vec < extent:
                outer_last, inner = sch.split(spatial[-1], [None, vec])
                outer = [*spatial[:-1], outer_last]
            elif vec > 1:
                inner, outer = spatial[-1], spatial[:-1]
            else:
                inner, outer = None, spatial
            if reduce and inner is not None:
                sch.reorder(*reduce, inner)
            if outer:
                sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
            if inner is not None:
                sch.vectorize(inner)
            if reduce:
                sch.decompose_reduction(block, reduce[0])

    return _CpuDefault()


# ---------------------------------------------------------------------- tuning

@contextlib.contextmanager
def _database_lock(work_dir: Path, create: bool):
    """Hold the tuning database's lock while it is tuned into and read; yields whether there is
    a database to use. Nothing is created when there is none and no tuning is asked for (an
    untuned compile writes nothing to the cache); then no records are read either, even if a
    parallel compile starts a database meanwhile."""
    if not create and not work_dir.is_dir():
        yield False
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(work_dir / ".lock"):
        yield True


def _tune(mod, target, work_dir: Path, budget: TuningBudget, cached: bool = True) -> dict:
    """Tune within what is left of `budget` (records accumulate in `work_dir`); report what is there.

    "searched" counts MetaSchedule's own candidates; the measured default schedules that seed the
    database do not make an artifact tuned. The caller holds the database's lock."""
    stats_path = work_dir / "edgepack_tuning.json"
    stats = json.loads(stats_path.read_text()) if cached and stats_path.is_file() else {}
    stats = {"seconds_spent": 0.0, "searched": 0, "default_schedules_measured": 0, "sessions": 0,
             "tasks": None, **stats}
    notes: list[str] = []
    reused = stats["sessions"] > 0
    new_s = 0.0
    todo = budget.left(stats)  # a budget already spent on this model+target is not spent again
    if todo is not None:
        _check_ffi()
        t0 = time.perf_counter()
        with _foreign_handlers_detached():
            run = _run_metaschedule(mod, target, work_dir, *todo, budget.per_round,
                                    seed=not stats["default_schedules_measured"])
        new_s = time.perf_counter() - t0
        stats.update(seconds_spent=stats["seconds_spent"] + new_s, sessions=stats["sessions"] + 1,
                     searched=stats["searched"] + run["trials"] - run["seeded"], tasks=run["tasks"],
                     default_schedules_measured=stats["default_schedules_measured"] + run["seeded"])
        stats_path.write_text(json.dumps(stats, indent=2))
    records = _count_records(work_dir) if cached else 0
    if records and not _ffi_ok():
        import tvm_ffi

        notes.append(f"{records} cached tuning records not applied: apache-tvm-ffi {tvm_ffi.__version__} "
                     f"crashes reading them ({FFI_PIN} works)")
        records = 0
    if budget.active and reused and new_s == 0.0:
        notes.append(f"reused {records} cached tuning records ({stats['seconds_spent']:.0f} s and "
                     f"{stats['searched']} trials of tuning already spent on this model and target)")
    return {"tuned": bool(records) and stats["searched"] > 0, "records": records,
            "seconds_requested": budget.seconds, "trials_requested": budget.trials,
            "seconds_this_compile": round(new_s, 1),
            "seconds_total": round(stats["seconds_spent"], 1), "trials_total": stats["searched"],
            "tasks": stats["tasks"], "default_schedules_measured": stats["default_schedules_measured"],
            "reused_cache": reused, "database": str(work_dir), "cost_model": _cost_model_kind(), "notes": notes}


FFI_PIN = "apache-tvm-ffi==0.1.14.post1"


def _ffi_ok() -> bool:
    """apache-tvm 0.27.0.post1 with apache-tvm-ffi 0.1.15 segfaults when it serialises TIR to or
    from JSON (every MetaSchedule database read and write); 0.1.14 works."""
    import tvm_ffi

    parts = tuple(int(p) for p in tvm_ffi.__version__.split(".")[:3] if p.isdigit())
    return parts < (0, 1, 15)


def _check_ffi() -> None:
    """Refuse with a one-line fix instead of a dead process."""
    import tvm_ffi

    if not _ffi_ok():
        raise EdgepackError(f"TVM tuning crashes with apache-tvm-ffi {tvm_ffi.__version__} (segfault saving "
                            f"tuning records): pip install '{FFI_PIN}'")


def _count_records(work_dir: Path) -> int:
    path = work_dir / "database_tuning_record.json"
    if not path.is_file():
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def _cost_model_kind() -> str:
    try:
        import xgboost  # noqa: F401

        return "xgb"
    except ImportError:
        return "random"  # without xgboost MetaSchedule's learned model is unavailable


@contextlib.contextmanager
def _foreign_handlers_detached():
    """MetaSchedule rebuilds its logger's configuration from the handlers it finds there, by name:
    an unnamed handler someone else attached (pytest's log capture, a user's own) breaks it
    ('NoneType' object has no attribute 'format'). They are set aside while it runs (emits take
    turns in a process, see TvmBackend.emit) and put back after."""
    import logging

    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    foreign = [h for h in ms_logger.handlers if not (h.get_name() or "").startswith(ms_logger.name)]
    for h in foreign:
        ms_logger.removeHandler(h)
    try:
        yield
    finally:
        for h in foreign:
            ms_logger.addHandler(h)


def _run_metaschedule(mod, target, work_dir: Path, seconds: float, trials: float, per_round: int | None,
                      seed: bool = True) -> dict:
    """MetaSchedule over every fused kernel, stopped after `trials` searched candidates or when
    `seconds` run out, whichever comes first (math.inf: no such bound)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.ir.utils import derived_object

    _import_tensor_intrin()  # before anything of MetaSchedule imports it the slow way
    tasks = ms.relax_integration.extract_tasks(_prepare(mod, target), target)
    if not tasks:
        return {"trials": 0, "tasks": 0, "seeded": 0}
    cost_model = _cost_model_kind()
    # Evolutionary search spends ~10 s per kernel and round ranking candidates with the cost model:
    # worth it with a learned model (xgboost), wasted with the random one, where sampling the
    # design space (replay-trace) finds the same candidates for a fraction of the time.
    strategy = "evolutionary" if cost_model == "xgb" else "replay-trace"
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, str(work_dir), space="post-order-apply", strategy=strategy, seed=0)
    deadline = time.monotonic() + seconds
    count = {"trials": 0, "tasks": len(contexts), "seeded": 0}

    @derived_object
    class _Deadline(ms.measure_callback.PyMeasureCallback):
        """Stops every task once the budget is spent; records measured so far are kept."""

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            count["trials"] += len(runner_results)
            if time.monotonic() >= deadline:
                for i in range(len(contexts)):
                    try:
                        task_scheduler.terminate_task(i)
                    except Exception:
                        pass  # already finished

    builder = _in_process_builder()
    runner = ms.runner.LocalRunner(timeout_sec=30, evaluator_config=ms.runner.EvaluatorConfig(
        number=3, repeat=1, min_repeat_ms=40, enable_cpu_cache_flush=False))
    database = _database(work_dir)
    if seed:
        count["seeded"] = _seed_default_schedules(contexts, target, builder, runner, database, deadline)
    count["trials"] += count["seeded"]
    if time.monotonic() >= deadline:
        return count
    # Fewer candidates per round in short budgets, so that every kernel gets some: about one per
    # second of the budget, and no more than each kernel's share of the trials.
    per_iter = per_round or int(min(64, max(8, min(seconds, trials) / len(contexts))))
    max_trials = int(min(trials, 100_000))
    ms.tune.tune_tasks(
        tasks=contexts, task_weights=weights, work_dir=str(work_dir),
        max_trials_global=max_trials, max_trials_per_task=min(2_000, max_trials), num_trials_per_iter=per_iter,
        builder=builder, runner=runner, database=database, cost_model=cost_model,
        measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), _Deadline()],
        # The gradient scheduler measures every kernel once before it looks at results (and so at
        # the clock); round-robin notices the deadline within one kernel. Long time budgets get
        # gradient; a trial budget alone gets round-robin, which shares trials out by count, not
        # by measured (load-dependent) gains.
        task_scheduler="gradient" if 30 * len(contexts) <= seconds < math.inf else "round-robin")
    return count


def _seed_default_schedules(contexts, target, builder, runner, database, deadline: float) -> int:
    """Measure edgepack's default schedule of every kernel and record it like a tuning trial.

    The database then holds, per kernel, the best of (default schedule, searched candidates): a
    short random search that finds nothing better cannot make the tuned artifact slower than the
    untuned one, and the search starts from a measured baseline. Returns the trials measured."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    rule = _cpu_default_rule(max(4, _lanes(target)))
    todo = []
    for ctx in contexts:
        func = ctx.mod["main"]
        try:
            sch = rule.apply(func.with_attr("target", target), target, False)
        except Exception:
            sch = None
        if sch is not None and sch.trace is not None:
            todo.append((ctx.mod, sch, ArgInfo.from_prim_func(func)))
    done = 0
    for start in range(0, len(todo), 8):  # in batches, so the deadline is looked at
        if time.monotonic() >= deadline:
            break
        batch = todo[start:start + 8]
        built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch, _ in batch])
        ok = [(item, b) for item, b in zip(batch, built) if b.error_msg is None]
        futures = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", args)
                              for (_, _, args), b in ok])
        for ((mod, sch, args), _), future in zip(ok, futures):
            result = future.result()
            if result.error_msg is None and result.run_secs:
                database.commit_tuning_record(ms.database.TuningRecord(
                    sch.trace, database.commit_workload(mod), result.run_secs, target, args))
                done += 1
    return done


def _lanes(target) -> int:
    import tvm

    return tvm.target.codegen.llvm_get_vector_width(target) // 32


def _in_process_builder():
    """MetaSchedule's LocalBuilder starts fresh worker processes for every batch; each one imports
    TVM's tensor intrinsics, which takes 30-60 s when torch is installed (tvm_ffi imports torch, and
    TVMScript's parser scans sys.modules for every frame of every intrinsic). Compiling a
    candidate takes ~0.1 s, so this builds them here, in the tuning process, instead."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class _InProcessBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    path = default_export(default_build(item.mod, item.target, None))
                    results.append(ms.builder.BuilderResult(path, None))
                except Exception as e:  # a candidate that does not compile is just a bad candidate
                    results.append(ms.builder.BuilderResult(None, f"build failed: {first_line(e)}"))
            return results

    return _InProcessBuilder()


def _import_tensor_intrin() -> None:
    """Import tvm.s_tir.tensor_intrin in ~2 s instead of 30-60 s.

    Every @T.prim_func there calls inspect.stack(), and inspect.getmodule() rescans all of
    sys.modules for each frame whose file it has not cached (frozen importlib frames never are);
    with torch loaded that is thousands of modules x thousands of frames. Memoising getmodule by
    file name for the length of this one import gives the same answers."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    import inspect

    original = inspect.getmodule
    memo: dict = {}

    def getmodule(obj, _filename=None):
        if _filename is None:
            return original(obj)
        if _filename not in memo:
            memo[_filename] = original(obj, _filename)
        return memo[_filename]

    inspect.getmodule = getmodule
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.getmodule = original
