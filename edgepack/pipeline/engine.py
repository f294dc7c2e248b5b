"""Runs a recipe: the teacher, then each stage in turn — measured on one yardstick, checked
against its gate, and saved in its own folder the moment it is done.

Each stage folder (`01-distill/`, ...) is written to a staging folder and renamed into place,
so an interrupted or failed stage never touches what earlier stages saved; `resume` reuses
every saved stage whose settings and inputs are unchanged (a key chained over the recipe).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edgepack import __version__
from edgepack.compiler import BenchSettings, CompileRequest, compile_request
from edgepack.data import Dataset
from edgepack.errors import EdgepackError
from edgepack.fsutil import (MARKER, PID_FILE, atomic_write, check_replaceable, input_paths, marker_data, output_lock,
                              read_marker, sha256_file, sha256_tree, staged_dir, write_marker)
from edgepack.events import Events, silent
from edgepack.ir.spec import graph_inputs
from edgepack.pipeline import stages
from edgepack.pipeline.measure import measure, to_onnx
from edgepack.pipeline.recipe import Recipe, load_recipe
from edgepack.report import header, write_report
from edgepack.report.schema import FlowReport
from edgepack.runtime import DEFAULT_TIMING, Timing
from edgepack.targets import load_profile
from edgepack.training import checkpoint
from edgepack.training.data import arrays, as_loader, check_classes
from edgepack.training.loop import SoftTargets, accuracy, seeded, train

STAGE_FILE = "stage.json"
STAGE_NAME = re.compile(r"\d\d-[a-z]+")  # 00-teacher, 01-distill, ...: nothing else is a stage folder
RUNNERS = {"distill": stages.run_distill, "prune": stages.run_prune, "quantize": stages.run_quantize}
CALIB_SAMPLES = 300


class GateFailed(EdgepackError):
    """A stage did not reach its gate; the report (written) says what was reached."""

    def __init__(self, message: str, report: FlowReport):
        super().__init__(message)
        self.report = report


def run(recipe, output_dir: str | Path | None = None, force: bool = False, resume: bool = False,
        events: Events | None = None, timing: Timing = DEFAULT_TIMING, cache: str | Path | None = None) -> FlowReport:
    """Run `recipe` (YAML path, dict or Recipe); returns the report, also written to the folder.
    Raises GateFailed (carrying the report) when a stage misses its gate.

    `cache`: a folder of finished stages shared by several runs (a recipe search's trials), each
    under its resume key: a stage whose key is there is copied in instead of computed, and every
    stage computed here (but emit, whose record names its own folder) is added to it."""
    recipe = load_recipe(recipe)
    outdir = Path(output_dir) if output_dir else Path("runs") / recipe.name
    with output_lock(outdir):  # a second run into this folder refuses at once
        stages_made = _claim(outdir, recipe, force, resume)
        flow = Flow(recipe, outdir, events or silent(), timing, cache)  # data, target, models checked before any folder is made
        if outdir.exists() and force and not resume:
            shutil.rmtree(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        flow.marker = marker_data("run", recipe=recipe.name, stages=stages_made)
        write_marker(outdir, flow.marker)
        return flow.run()


def _claim(outdir: Path, recipe: Recipe, force: bool, resume: bool) -> list[str]:
    """Check that this run may use `outdir`; returns the stage folders an earlier run of it made
    (the only ones --resume may reuse or delete). A user's folder is never resumed into."""
    if not outdir.exists():
        return []
    if not outdir.is_dir():
        raise EdgepackError(f"{outdir} exists and is not a folder")
    if not (resume or force):
        raise EdgepackError(f"{outdir} already exists: pass --resume to continue it, --force to start over, "
                            "or -o another folder")
    if not resume:
        check_replaceable(outdir, _recipe_inputs(recipe))
        return []
    marker = read_marker(outdir)
    if marker is None:
        if any(outdir.iterdir()):
            raise EdgepackError(f"cannot resume {outdir}: it was not made by edgepack run (no {MARKER} in it); "
                                "-o another folder")
        return []
    if marker.get("command") != "run":
        raise EdgepackError(f"cannot resume {outdir}: it was made by edgepack {marker.get('command')}, not run; "
                            "-o another folder")
    names = marker.get("stages")
    return [n for n in names if isinstance(n, str) and STAGE_NAME.fullmatch(n)] if isinstance(names, list) else []


def _recipe_inputs(recipe: Recipe) -> list[Path]:
    """The recipe's folder and every file it names: a run's --force never deletes its inputs."""
    values = [recipe.base_dir]
    for ref in (recipe.teacher, recipe.student, recipe.data):
        if ref is not None:
            values += [recipe.resolve(v) for v in ref.model_dump().values() if isinstance(v, str)]
    return input_paths(*values)


class Flow:
    """What the stages share: data splits, the teacher, the target, and how to measure."""

    def __init__(self, recipe: Recipe, outdir: Path, events: Events, timing: Timing = DEFAULT_TIMING,
                 cache: str | Path | None = None):
        self.recipe, self.outdir, self.events, self.timing = recipe, outdir, events, timing
        self.cache = Path(cache) if cache is not None else None
        self.marker = marker_data("run", recipe=recipe.name, stages=[])  # what this run may touch in outdir
        self.profile = load_profile(recipe.target)
        data = recipe.data
        train = arrays(recipe.resolve(data.train))
        shape = recipe.input_shape or [1, *train[0].shape[1:]]
        # every split in the model's input shape, for training as for export (flat (N, 784) digits
        # with input_shape [1, 1, 28, 28])
        self.train = _shaped(train, shape, "train")
        self.val = _shaped(arrays(recipe.resolve(data.val)), shape, "val")
        self.test = _shaped(arrays(recipe.resolve(data.test)), shape, "test") if data.test is not None else self.val
        self.calib = (_shaped(arrays(recipe.resolve(data.calib)), shape, "calib") if data.calib is not None
                      else tuple(a[:CALIB_SAMPLES] for a in self.train))
        self.example = torch.from_numpy(np.ascontiguousarray(self.train[0][:1]))
        m = recipe.measure
        self.bench = BenchSettings(m.runs, m.warmup, m.threads).resolve(self.profile)
        self.rows: list[dict] = []
        self.soft_targets = SoftTargets()  # the teacher's logits, reused by every stage of this flow
        seen = {k: _fingerprint(getattr(recipe, k), recipe.resolve) for k in ("teacher", "student", "data")}
        self.seen = seen  # what listeners (tracking) record as the run's inputs
        # the profile's contents: `host` resolves per machine, and a target YAML can be edited. The
        # student joins the chain after the teacher (run): the teacher does not depend on it, so
        # runs that differ only in their student share the teacher's key (and a cache's teacher)
        self.key = _digest({"edgepack": __version__, "target": self.profile.to_dict(), "teacher": seen["teacher"],
                            "data": seen["data"], "input_shape": shape, "measure": m.model_dump()})
        self.teacher = _build(recipe, recipe.teacher)
        check_classes(self.teacher, self.example, {"train": self.train, "val": self.val, "test": self.test,
                                                   "calib": self.calib})
        if recipe.student is not None:
            self.fresh_student()
        self.teacher_val = self.teacher_accuracy = float("nan")

    # -- helpers the stages use ------------------------------------------------------------

    def fresh_student(self) -> nn.Module:
        return _build(self.recipe, self.recipe.student)

    def batches(self, cfg) -> int:
        return -(-len(self.train[0]) // cfg.batch_size)

    def dataset(self, model: onnx.ModelProto, split) -> Dataset:
        name = graph_inputs(model)[0].name
        return Dataset({name: split[0]}, split[1], "recipe data")

    def int8_budget(self, gate, accuracy: float, teacher_accuracy: float) -> float | None:
        """The drop INT8 may add to a model scoring `accuracy`: what the gate's max_drop (points
        below the teacher) leaves after the stages before, at least 0; None without one."""
        if gate.max_drop is None or accuracy is None:
            return None
        return max(0.0, gate.max_drop - (teacher_accuracy - accuracy))

    def bar(self, label: str, total: int):
        return self.events.progress(label, total)

    # -- the flow -----------------------------------------------------------------------------

    def run(self) -> FlowReport:
        t0 = time.perf_counter()
        report = {**header("run"), "recipe": self.recipe.name, "target": self.profile.name,
                  "output_dir": str(self.outdir), "rows": self.rows, "stages": []}
        module, model = self._teacher()
        self.key = _digest({"previous": self.key, "student": self.seen["student"]})
        self.float_model = model  # the last float graph: what emit ships where INT8 runs slower
        for i in range(len(self.recipe.stages)):
            kind, cfg = self.recipe.stage(i)
            self.key = _digest({"previous": self.key, kind: self.recipe.stages[i][kind]})
            folder = self.outdir / f"{i + 1:02d}-{kind}"
            saved = self._saved(folder, f"stage {i + 1} ({kind})")
            reused = saved is not None and saved["passed"]
            if reused:
                self.events.step(f"stage {i + 1} ({kind}): unchanged, reusing {folder}")
                record = saved
                if kind != "emit":
                    module, model = self._reload(folder, module), onnx.load(str(folder / "model.onnx"))
                    self._keep_float(kind, model)
            elif kind == "emit":
                self._forget_from(i + 1)
                record = self._emit(folder, cfg, model)
            else:
                self._forget_from(i + 1)
                self.events.step(f"stage {i + 1}: {kind}")
                start = time.perf_counter()
                out = RUNNERS[kind](self, cfg, module)
                record = self._save(folder, kind, out, cfg.gate, time.perf_counter() - start)
                module, model = out.module, out.onnx
                self._keep_float(kind, model)
            self.rows.extend(record["rows"])
            report["stages"].append({k: v for k, v in record.items() if k not in ("rows", "files")})
            self.events.emit("stage_done", f"stage {i + 1} ({kind}): {'passed' if record['passed'] else 'missed its gate'}",
                             stage=kind, passed=record["passed"], index=i + 1, folder=str(folder), reused=reused,
                             settings=_jsonable(cfg.model_dump()))  # with defaults: seeds, schedules
            if not record["passed"]:
                report["stopped"] = {"stage": kind, "reasons": record["gate_failures"]}
                break
        report["seconds"] = round(time.perf_counter() - t0, 1)
        report["passed"] = "stopped" not in report
        typed = FlowReport(**_jsonable(report))
        write_report(self.outdir, typed)
        self.events.emit("report", f"report: {self.outdir}/report.md (and report.json)",
                         path=str(self.outdir / "report.json"), command="run")
        if not typed.passed:
            raise GateFailed(f"stage {typed.stopped.stage} missed its gate: " + "; ".join(typed.stopped.reasons),
                             typed)
        return typed

    def _teacher(self) -> tuple[nn.Module, onnx.ModelProto]:
        """The trained teacher (trained here first if the recipe says so) and its measured row."""
        ref = self.recipe.teacher
        folder = self.outdir / "00-teacher"
        self.key = _digest({"previous": self.key, "teacher_train": ref.train.model_dump() if ref.train else None})
        saved = self._saved(folder, "teacher")
        teacher = self.teacher
        if saved is not None:
            self.events.step(f"teacher: unchanged, reusing {folder}")
            if (folder / "model.pt").exists():
                checkpoint.load(teacher, folder / "model.pt")
            record, graph = saved, onnx.load(str(folder / "model.onnx"))
        else:
            self._forget_from(0)  # a teacher made anew invalidates every stage after it
            start = time.perf_counter()
            details = {}
            if ref.train is not None:
                self.events.step("training the teacher")
                with self.bar("training the teacher", ref.train.epochs * self.batches(ref.train)) as advance:
                    result = train(teacher, *self._loaders(ref.train), ref.train, progress=lambda s, _: advance(s))
                details["training"] = result.summary()
            out = stages.Output(to_onnx(teacher, self.example), teacher if ref.train else None, details)
            record, graph = self._save(folder, "teacher", out, None, time.perf_counter() - start), out.onnx
        self.teacher = teacher.eval()
        self.teacher_accuracy = record["rows"][0]["accuracy"]
        self.teacher_val = accuracy(self.teacher, as_loader(self.val, 256))
        self.rows.extend(record["rows"])
        self.events.emit("stage_done", f"teacher: {100 * self.teacher_accuracy:.2f}% on the test split",
                         stage="teacher", passed=True, index=0, folder=str(folder), datasets=self._datasets(),
                         reused=saved is not None,
                         teacher=_jsonable(self.seen["teacher"]), recipe=self.recipe.name,
                         settings=_jsonable(self.recipe.teacher.train.model_dump()) if self.recipe.teacher.train else {})
        # what flows on is a copy: pruning the teacher in place would change the soft labels it gives
        return copy.deepcopy(teacher), graph

    def _datasets(self) -> list[dict]:
        """The recipe's data splits with content digests (listeners record them as the run's inputs)."""
        out, data = [], self.recipe.data
        for split, context in (("train", "training"), ("val", "validation"), ("test", "evaluation"),
                               ("calib", "calibration")):
            value, seen = getattr(data, split), self.seen["data"][split]
            if value is None:
                continue
            named = isinstance(seen, list) and len(seen) == 2 and isinstance(value, (str, Path))
            out.append({"context": context, "name": split,
                        "source": self.recipe.resolve(str(value)) if named else type(value).__name__,
                        "digest": seen[1] if named else _digest(seen)})
        if data.calib is None:
            train = next(d for d in out if d["name"] == "train")
            out.append({**train, "context": "calibration", "name": f"train[:{CALIB_SAMPLES}]"})
        return out

    def _loaders(self, cfg):
        return as_loader(self.train, cfg.batch_size, shuffle=True, seed=cfg.seed), as_loader(self.val, 256)

    def _save(self, folder: Path, kind: str, out: stages.Output, gate, seconds: float) -> dict:
        """Write the stage's models and its record in one rename; measure and gate it on the way."""
        self._own(folder)
        with staged_dir(folder, force=True, marker=marker_data("run-stage", stage=folder.name)) as stage:
            onnx.save(out.onnx, str(stage / "model.onnx"))
            if out.module is not None:
                checkpoint.save(out.module, stage / "model.pt")
            rows = []
            for label, extra in out.extra.items():  # side rows first: they are not what flows on
                path = stage / f"{label.replace(' ', '-')}.onnx"
                onnx.save(extra, str(path))
                rows.append({"stage": kind, "model": label, **measure(extra, path, self.test, self.bench,
                                                                        self.events), "gate": "-"})
            row = {"stage": kind, "model": _label(kind, out), "seconds": round(seconds, 1),
                   **measure(out.onnx, stage / "model.onnx", self.test, self.bench, self.events)}
            rows.append(row)
            record = self._record(kind, rows, row, gate, out.details)
            record["files"] = _file_digests(stage)
            _write_json(stage / STAGE_FILE, record)
        self._publish(folder)
        return record

    def _keep_float(self, kind: str, model: onnx.ModelProto) -> None:
        if kind != "quantize":
            self.float_model = model

    def _emit(self, folder: Path, cfg, model: onnx.ModelProto) -> dict:
        self.events.step("stage: emit")
        self._own(folder)
        start = time.perf_counter()
        request = CompileRequest.from_kwargs(
            model, target=self.profile, backends=cfg.backends, output_dir=folder, force=True,
            calib=self.dataset(model, self.calib), eval_data=self.dataset(model, self.test),
            max_drop=self.int8_budget(cfg.gate, self.rows[-1]["accuracy"], self.teacher_accuracy),
            precision="int8" if cfg.precision == "int8" else None,
            fp32_model=self.float_model if self.float_model is not model else None, **self.bench.as_dict())
        r = compile_request(request, self.events, self.timing)
        art = r.shipped()
        lat = art.latency_ms
        row = {"stage": "emit", "model": f"{art.backend} {art.precision}",
               "seconds": round(time.perf_counter() - start, 1), "params": r.canonical.params,
               "macs": r.canonical.macs, "size_bytes": art.size_bytes, "accuracy": art.accuracy,
               "p50_ms": lat.p50 if lat else None, "p99_ms": lat.p99 if lat else None,
               "artifact": str(folder / art.path)}
        record = self._record("emit", [row], row, cfg.gate, {"report": str(folder / "report.json")})
        record["files"] = _file_digests(folder)
        _write_json(folder / STAGE_FILE, record)
        return record

    def _record(self, kind: str, rows: list[dict], row: dict, gate, details: dict) -> dict:
        ref = row["accuracy"] if kind == "teacher" else self.teacher_accuracy
        for r in rows:
            r["drop"] = None if r.get("accuracy") is None else ref - r["accuracy"]
        fails = gate.check(row, ref) if gate is not None else []
        row["gate"] = "-" if gate is None or gate == type(gate)() else ("failed" if fails else "passed")
        return {"kind": kind, "key": self.key, "passed": not fails, "gate": gate.model_dump() if gate else None,
                "gate_failures": fails, "rows": rows, "details": details}

    def _forget_from(self, number: int) -> None:
        """A stage made anew invalidates what later stages of an earlier run saved; only the stage
        folders this run's marker lists, still carrying their own marker, are deleted (a user's
        `05-notes/`, or a folder put in a stage's place, is not ours)."""
        stages_made = self.marker["stages"]
        for name in [n for n in stages_made if int(n[:2]) >= number]:
            folder = self.outdir / name
            if folder.is_dir() and not folder.is_symlink() and read_marker(folder) is not None:
                shutil.rmtree(folder)
            stages_made.remove(name)
        write_marker(self.outdir, self.marker)

    def _own(self, folder: Path) -> None:
        """List `folder` in the run's marker before writing it (a run killed mid-stage leaves a
        folder its resume may replace); refuse a folder of that name that is not ours."""
        if folder.name not in self.marker["stages"]:
            if folder.exists() or folder.is_symlink():
                raise EdgepackError(f"{folder} is not a stage folder of this run (not listed in "
                                    f"{self.outdir / MARKER}): move it away or -o another folder")
            self.marker["stages"].append(folder.name)
            write_marker(self.outdir, self.marker)

    def _saved(self, folder: Path, label: str) -> dict | None:
        """A finished stage's record if it was made from the same settings and inputs, by this
        run, and every file it wrote is still as it was saved (else one line says why not)."""
        record = self._valid(folder, label) if folder.name in self.marker["stages"] else None
        return record if record is not None else self._from_cache(folder, label)

    def _valid(self, folder: Path, label: str) -> dict | None:
        try:
            record = json.loads((folder / STAGE_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != self.key:
            return None
        problem = _changed(folder, record.get("files"))
        if problem is not None:
            self.events.emit("note", f"{label}: {problem}: redoing it", stage=folder.name)
            return None
        return record

    def _from_cache(self, folder: Path, label: str) -> dict | None:
        """The shared cache's copy of this stage (same resume key, files intact), copied into
        `folder` through a staging folder; None when the cache has none."""
        cached = self.cache / self.key if self.cache is not None else None
        if cached is None or self._valid(cached, label) is None:
            return None
        self._own(folder)
        with staged_dir(folder, force=True, marker=marker_data("run-stage", stage=folder.name)) as stage:
            for item in cached.iterdir():
                if item.name not in (MARKER, PID_FILE):
                    (shutil.copytree if item.is_dir() else shutil.copy2)(item, stage / item.name)
        self.events.step(f"{label}: reusing the shared stage {cached}")
        return self._valid(folder, label)

    def _publish(self, folder: Path) -> None:
        """Add a stage just saved to the shared cache under its key (renamed into place whole:
        readers never see half a copy; when two runs publish the same key, the first stays)."""
        if self.cache is None or (self.cache / self.key).exists():
            return
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / f".{self.key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # a killed run's leftover under a reused pid
        shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns(PID_FILE))
        try:
            tmp.rename(self.cache / self.key)
        except OSError:  # published meanwhile by another run
            shutil.rmtree(tmp, ignore_errors=True)

    def _reload(self, folder: Path, module: nn.Module | None) -> nn.Module | None:
        """A saved torch stage, loaded into a fresh copy of its architecture (student or teacher)."""
        if not (folder / "model.pt").exists():
            return None
        distilled = any(self.recipe.kind(s) == "distill" for s in self.recipe.stages)
        return checkpoint.load(self.fresh_student() if distilled else copy.deepcopy(module), folder / "model.pt")


def _build(recipe: Recipe, ref) -> nn.Module:
    """A fresh nn.Module from a recipe's model reference (weights loaded when given), with the same
    initial weights on every run (a rerun reproduces the flow) and the caller's random state kept."""
    with seeded(0):
        return _construct(recipe, ref)


def _construct(recipe: Recipe, ref) -> nn.Module:
    from edgepack.frontends import is_factory
    from edgepack.frontends.torch_module import load_factory, load_torchscript, load_weights

    model = ref.model
    built = isinstance(model, nn.Module) or isinstance(model, str) and not is_factory(recipe.resolve(model))
    if ref.args and built:
        raise EdgepackError(f"args {sorted(ref.args)}: only a file.py:factory or callable model takes arguments")
    if isinstance(model, nn.Module):
        module = copy.deepcopy(model)
    elif isinstance(model, str):
        text = recipe.resolve(model)
        if is_factory(text):
            return load_factory(text, recipe.resolve(ref.weights) if ref.weights else None, ref.args)[0]
        if not Path(text).is_file():
            raise EdgepackError(f"{text}: no such model file (expected file.py:factory or a TorchScript file)")
        module = load_torchscript(Path(text))
    elif callable(model):
        module = model(**ref.args)
    else:
        raise EdgepackError(f"cannot use a {type(model).__name__} as a model: give file.py:factory or an nn.Module")
    if ref.weights:
        load_weights(module, Path(recipe.resolve(ref.weights)))
    return module


def _shaped(split: tuple[np.ndarray, np.ndarray], shape: list[int], name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = split
    if int(np.prod(x.shape[1:])) != int(np.prod(shape[1:])):
        raise EdgepackError(f"data.{name}: samples of shape {list(x.shape[1:])} do not fit input_shape {list(shape)}")
    return x.reshape(len(x), *shape[1:]), y


def _label(kind: str, out: stages.Output) -> str:
    return {"teacher": "teacher fp32", "distill": "distilled", "prune": "pruned",
            "quantize": f"{out.details.get('precision', 'int8')} {out.details.get('mode', '')}"}.get(kind, kind)


def _fingerprint(value, resolve):
    """What a resume key hashes for a recipe value: file contents, tensors, arrays, settings."""
    from edgepack.frontends import is_factory
    from edgepack.frontends.torch_module import state_digest

    if value is None or isinstance(value, (int, float, bool)):
        return value
    if hasattr(value, "model_dump"):
        return {k: _fingerprint(getattr(value, k), resolve) for k in type(value).model_fields}
    if isinstance(value, nn.Module):
        return state_digest(value)
    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    if isinstance(value, (list, tuple)):
        return [_fingerprint(v, resolve) for v in value]
    if isinstance(value, dict):
        return {str(k): _fingerprint(v, resolve) for k, v in value.items()}
    if isinstance(value, (str, Path)):
        text = resolve(str(value))
        path = Path(text.rpartition(":")[0] if is_factory(text) else text)
        if path.is_file():
            return [str(value), sha256_file(path)]
        return [str(value), sha256_tree(path)] if path.is_dir() else str(value)
    return f"{type(value).__name__}@{id(value)}"  # a DataLoader or callable: not resumable


def _file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file a stage wrote (by path inside its folder), so --resume can tell a
    truncated or altered file from the one it measured."""
    skip = {STAGE_FILE, MARKER, PID_FILE}  # the pid file leaves the staging folder before its rename
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in skip}


def _changed(folder: Path, files) -> str | None:
    """Why a saved stage's files cannot be reused (missing, unreadable, changed), or None."""
    if not isinstance(files, dict) or not files:
        return f"{folder.name}/{STAGE_FILE} has no file checksums"
    for rel, digest in files.items():
        path, shown = folder / rel, f"{folder.name}/{rel}"
        if not path.is_file():
            return f"{shown} is missing"
        try:
            if sha256_file(path) != digest:
                return f"{shown} changed since it was saved"
        except OSError as e:
            return f"{shown} cannot be read ({e.strerror})"
    return None


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _jsonable(obj):
    """Plain JSON values (numpy scalars as numbers, anything else as text), as stage.json holds them."""
    return json.loads(json.dumps(obj, default=_json_default))


def _write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=_json_default))
