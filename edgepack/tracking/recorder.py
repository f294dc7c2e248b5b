"""The recorder's state: one command's parent run, its stage runs, and the model chain."""

from __future__ import annotations

import json
from pathlib import Path

from edgepack.tracking import models, search
from edgepack.tracking.record import (COMMAND, LEVEL, PARENT, _ms, artifact_metrics, clean, compile_params,
                                      dataset_inputs, flat, registry_name, row_metrics)

ALIAS = "candidate"  # every newly registered artifact; `registry promote` moves `production`


class RunRecorder:
    def __init__(self, store):
        self.s = store
        self.start: dict = {}
        self.parent: str | None = None
        self.open: list[str] = []  # runs not yet terminated, innermost last
        self.prev_model: str | None = None  # the last stage's output model (what the next stage takes)
        self.pending: dict | None = None  # a compile's report event inside a recipe, waiting for its stage
        self.datasets: list[dict] = []
        self.recorded: set[str] = set()  # a search's trial keys already under its run
        self.search_key: str | None = None  # the search's identity (its lock), for a search
        self.ended = False

    # -- messages --------------------------------------------------------------------------

    def handle(self, msg: dict) -> None:
        op = msg.get("op")
        if op == "start":
            self.on_start(msg)
        elif op == "event":
            self.on_event(msg.get("kind"), msg.get("data") or {})
        elif op == "end":
            self.end(msg.get("status") or "FINISHED", msg.get("error"))

    def on_start(self, m: dict) -> None:
        self.start = m
        tags = {COMMAND: m["command"], LEVEL: "parent", "mlflow.source.name": "edgepack",
                "mlflow.source.type": "LOCAL", "edgepack.cwd": m.get("cwd", "")}
        if m.get("search"):  # one run per search, reopened when it resumes
            self.parent = search.open_parent(self, m, tags)
        else:
            self.parent = self.run(m.get("name") or m["command"], tags)
        request = {k: m.get(k) for k in ("command", "argv", "cwd", "request", "recipe", "search")
                   if m.get(k) is not None}
        self.s.log_dict(self.parent, request, "edgepack/request.json")
        if m.get("params"):
            self.s.log_batch(self.parent, params=_params(clean(m["params"])))

    def on_event(self, kind: str, data: dict) -> None:
        if kind == "report" and data.get("command") == "compile":
            if self.start.get("command") in ("run", "demo"):
                self.pending = data
            else:
                self.log_compile(data, self.parent, None)
        elif kind == "report" and data.get("command") == "profile":
            self.log_profile(data)
        elif kind == "report" and data.get("command") == "run":
            self.log_flow(data)
        elif kind == "stage_done" and data.get("folder"):
            self.log_stage(data)
        elif kind == "stage_done" and data.get("search") and data.get("key"):
            search.log_trial(self, data)
        elif kind == "report" and data.get("search"):
            search.log_result(self, data)

    def end(self, status: str, error: str | None) -> None:
        """Terminate every run still open: FINISHED only when the command finished."""
        if error and self.parent:
            self.s.set_tag(self.parent, "edgepack.error", error[:500])
        for run_id in reversed(self.open):
            self.s.set_terminated(run_id, status)
        self.open.clear()
        self.ended = True

    # -- runs ------------------------------------------------------------------------------

    def run(self, name: str, tags: dict, parent: str | None = None) -> str:
        if parent:
            tags = {**tags, PARENT: parent}
        r = self.s.create_run(self.s.experiment_id, run_name=name[:250], tags=tags, start_time=_ms())
        self.open.append(r.info.run_id)
        return r.info.run_id

    def close(self, run_id: str, status: str = "FINISHED") -> None:
        self.s.set_terminated(run_id, status)
        if run_id in self.open:
            self.open.remove(run_id)

    def inputs(self, run_id: str, datasets: list[dict], model_id: str | None) -> None:
        from mlflow.entities import LoggedModelInput

        self.s.log_inputs(run_id, datasets=dataset_inputs(datasets) or None,
                          models=[LoggedModelInput(model_id)] if model_id else None)

    def log(self, run_id: str, params: dict | None = None, metrics: dict | None = None, model_id=None,
            tags: dict | None = None) -> None:
        from mlflow.entities import Metric, RunTag

        ms = [Metric(k, v, _ms(), 0, model_id=model_id) for k, v in (metrics or {}).items()]
        self.s.log_batch(run_id, metrics=ms, params=_params(clean(params or {})),
                         tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])

    # -- compile and profile ---------------------------------------------------------------

    def _path(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else Path(self.start.get("cwd", ".")) / path

    def log_compile(self, data: dict, under: str, input_model: str | None, model_name: str | None = None) -> str:
        """A compile report: params and the shipped artifact's metrics on `under`, one nested
        run per artifact (input: the source model, output: the artifact), the shipped one registered."""
        from edgepack.report.schema import CompileReport

        path = self._path(data["path"])
        r = CompileReport.model_validate_json(path.read_text())
        outdir = path.parent
        datasets = data.get("datasets") or []
        if input_model is None:
            input_model = self.source_model(r, under)
        self.inputs(under, datasets, input_model)
        shipped = r.shipped()
        metrics = {"params": r.canonical.params, "macs": r.canonical.macs, **artifact_metrics(shipped)}
        for a in r.artifacts:
            metrics.update({f"{a.backend}.{k}": v for k, v in artifact_metrics(a).items()})
        if r.accuracy is not None:
            metrics["source_accuracy"] = r.accuracy.source
        self.log(under, compile_params(r), metrics,
                 tags={"edgepack.output_dir": str(outdir), "edgepack.quantization_met":
                       r.quantization.met if r.quantization else True})
        name = registry_name(model_name or r.source.name, r.target.name)
        shipped_model = None
        for i, a in enumerate(r.artifacts):
            run_id = self.run(f"emit {a.backend} {a.precision}", {LEVEL: "artifact", COMMAND: "compile"}, under)
            self.inputs(run_id, datasets, input_model)
            model_id = models.log_artifact(self.s, run_id, a, outdir, f"{name}-{a.backend}-{a.precision}",
                                           {"target": r.target.name})
            self.log(run_id, {"backend": a.backend, "precision": a.precision, "sha256": a.sha256,
                              "threads": a.threads, "runs": a.runs}, artifact_metrics(a), model_id)
            self.close(run_id)
            if i == r.selected.index:
                shipped_model = model_id
        self.s.set_tag(under, "edgepack.shipped_model", shipped_model)
        self.register(name, shipped_model, shipped, under, r.target.name)
        return shipped_model

    def source_model(self, r, run_id: str) -> str | None:
        """The compile's input model, logged (or found by its digest) as `run_id`'s input."""
        known = models.find(self.s, r.source.sha256)
        if known is not None:
            return known
        path = Path(r.source.path) if r.source.path else None
        if path is not None and not path.is_absolute():
            path = self._path(str(path))
        tags = {models.ROLE_TAG: "source", "source": r.source.name}
        if path is not None and path.suffix == ".onnx" and path.is_file():
            return models.log_onnx(self.s, None, path, r.source.name, tags)
        files = [path] if path is not None and path.is_file() else []
        return models.log_files(self.s, None, files, r.source.name, r.source.kind, r.source.sha256, tags)

    def register(self, name: str, model_id: str, a, run_id: str, target: str) -> None:
        """The shipped artifact as a new version of NAME (model-target), alias `candidate`."""
        try:
            self.s.create_registered_model(name, tags={"target": target})
        except Exception as e:
            if "already exists" not in str(e).lower() and "ALREADY_EXISTS" not in str(e):
                raise
        tags = {"backend": a.backend, "precision": a.precision, "sha256": a.sha256, "target": target}
        if a.accuracy is not None:
            tags["accuracy"] = f"{a.accuracy:.6g}"
        if a.latency_ms is not None:
            tags["p50_ms"] = f"{a.latency_ms.p50:.6g}"
        v = self.s.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, tags=tags,
                                        model_id=model_id)
        self.s.set_registered_model_alias(name, ALIAS, v.version)
        self.s.set_tag(run_id, "edgepack.registered", f"{name}/{v.version}")

    def log_profile(self, data: dict) -> None:
        from edgepack.report.schema import ProfileReport

        r = ProfileReport.model_validate_json(self._path(data["path"]).read_text())
        for a in r.artifacts:
            main = self._path(a.path)
            files = [main.parent / n for n in a.files]
            model_id = models.find(self.s, a.sha256)
            run_id = self.run(f"profile {a.backend}", {LEVEL: "artifact", COMMAND: "profile"}, self.parent)
            if model_id is None:  # an artifact never tracked: logged now, so its figures have a model
                model_id = models.log_files(self.s, run_id, files, main.name, a.backend, a.sha256,
                                            {"backend": a.backend, models.ROLE_TAG: "artifact"})
            self.inputs(run_id, [], model_id)
            self.log(run_id, {"backend": a.backend, "sha256": a.sha256, "target": r.target.name,
                              "threads": a.threads, "runs": a.runs}, artifact_metrics(a), model_id)
            self.log(self.parent, {"backend": a.backend, "sha256": a.sha256, "target": r.target.name},
                     artifact_metrics(a))
            self.close(run_id)

    # -- recipe runs -----------------------------------------------------------------------

    def log_stage(self, data: dict) -> None:
        """One stage of a recipe: its nested run, input the previous model, output its own."""
        folder = self._path(data["folder"])
        kind, index = data.get("stage", "stage"), int(data.get("index", 0))
        record = json.loads((folder / "stage.json").read_text())
        if kind == "teacher":
            self.datasets = data.get("datasets") or []
            self.inputs(self.parent, self.datasets, None)
        run_id = self.run(f"{index:02d} {kind}", {LEVEL: "stage", COMMAND: "run", "edgepack.stage": kind,
                                                  "edgepack.passed": record.get("passed")}, self.parent)
        rows = record.get("rows") or []
        main = rows[-1] if rows else {}
        metrics = row_metrics(main)
        for side in rows[:-1]:
            metrics.update(row_metrics(side, f"{side.get('model', 'side').replace(' ', '_')}."))
        params = {"key": record.get("key"), **{f"settings.{k}": v for k, v in flat(data.get("settings") or {}).items()}}
        if kind == "emit" and self.pending is not None:
            self.inputs(run_id, [], self.prev_model)
            model_id = self.log_compile(self.pending, run_id, self.prev_model, self._model_name())
            self.pending = None
            self.log(run_id, params, {f"stage.{k}": v for k, v in metrics.items()})
        else:
            contexts = ("training", "validation", "evaluation") + (("calibration",) if kind == "quantize" else ())
            self.inputs(run_id, [d for d in self.datasets if d["context"] in contexts], self.prev_model)
            model_id = self.stage_model(run_id, folder, kind, main, data)
            self.log(run_id, params, metrics, model_id)
        self.prev_model = model_id
        self.close(run_id)

    def _model_name(self) -> str:
        recipe = self.start.get("recipe") or {}
        return recipe.get("name") or self.start.get("name") or "recipe"

    def stage_model(self, run_id: str, folder: Path, kind: str, row: dict, data: dict) -> str:
        tags = {models.ROLE_TAG: "teacher" if kind == "teacher" else "stage", "stage": kind,
                "label": row.get("model", kind)}
        extra = [folder / "model.pt"]
        if kind == "teacher":
            weights = (data.get("teacher") or {}).get("weights")
            if isinstance(weights, list) and len(weights) == 2:
                tags.update({"edgepack.weights": str(weights[0]), "edgepack.weights_sha256": str(weights[1])})
                extra.append(self._path(str(weights[0])) if Path(str(weights[0])).is_absolute() else
                             Path(self.recipe_dir()) / str(weights[0]))
        name = f"{self._model_name()}-{index_name(kind, row)}"
        return models.log_onnx(self.s, run_id, folder / "model.onnx", name, tags, extra)

    def recipe_dir(self) -> str:
        recipe = self.start.get("recipe") or {}
        return recipe.get("base_dir") or self.start.get("cwd", ".")

    def log_flow(self, data: dict) -> None:
        from edgepack.report.schema import FlowReport

        r = FlowReport.model_validate_json(self._path(data["path"]).read_text())
        final = r.rows[-1].model_dump() if r.rows else {}
        params = {"recipe": r.recipe, "target": r.target, "edgepack_version": r.edgepack_version,
                  **{f"lib.{k}": v for k, v in r.environment.libraries.items()}}
        self.log(self.parent, params, {**row_metrics(final), "teacher_accuracy": r.rows[0].accuracy or 0.0}
                 if r.rows else {}, tags={"edgepack.passed": r.passed, "edgepack.output_dir": r.output_dir,
                                          "edgepack.final_model": self.prev_model or ""})


def index_name(kind: str, row: dict) -> str:
    return {"teacher": "teacher", "distill": "student", "prune": "pruned"}.get(
        kind, str(row.get("model", kind)).replace(" ", "-"))


def _params(params: dict):
    from mlflow.entities import Param

    return [Param(k, v) for k, v in params.items()]
