"""Logged models: every stage output and artifact becomes an MLflow LoggedModel.

An ONNX graph in one file is logged with MLflow's ONNX flavor (loadable with
`mlflow.onnx.load_model`); everything else (TFLite, OpenVINO's xml+bin, a TVM library, a
bundle, an ONNX graph with external weights) as a flavor-less LoggedModel holding every file
as it was written, so registering and downloading it gives back the same bytes. Each model is
tagged with its sha256 (`edgepack.sha256`): a later run that reads the same file (a compile
of a recipe's INT8 graph, a profile of an artifact) links to the model already logged
instead of logging a copy, and the lineage walks on through it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from edgepack.fsutil import sha256_file

SHA_TAG = "edgepack.sha256"
ROLE_TAG = "edgepack.role"  # teacher, stage, artifact, source, bundle


def safe_name(name: str) -> str:
    """A LoggedModel name MLflow accepts (no '/', ':', '.', '%', quotes)."""
    return re.sub(r"[/:.%\"']", "-", name).strip("-")[:200] or "model"


def find(store, sha256: str) -> str | None:
    """The id of a READY logged model with this content digest, if one was logged."""
    found = store.search_logged_models([store.experiment_id], filter_string=f"tags.`{SHA_TAG}` = '{sha256}'",
                                       max_results=5)
    ready = [m for m in found if str(getattr(m.status, "name", m.status)).upper().endswith("READY")]
    ready.sort(key=lambda m: m.tags.get(ROLE_TAG) != "artifact")  # a file found by its bytes: the artifact first
    return ready[0].model_id if ready else None


def log_onnx(store, run_id: str | None, path: Path, name: str, tags: dict, extra: list[Path] = (),
             reuse: bool = True) -> str:
    """The ONNX graph at `path` as an ONNX-flavor model output by `run_id` (or the one already
    logged with the same bytes, linked as this run's output). `run_id` None: a model no run
    made (a compile's source), which runs then take as their input."""
    import mlflow.onnx
    import onnx
    from mlflow.entities import LoggedModelOutput

    from edgepack.tracking.store import retry

    sha = sha256_file(path)
    if reuse and (known := find(store, sha)) is not None:
        if run_id is not None:
            store.log_outputs(run_id, [LoggedModelOutput(known, 0)])
        return known
    info = retry(mlflow.onnx.log_model, onnx.load(str(path)), name=safe_name(name), run_id=run_id, model_type="onnx",
                 tags={**tags, SHA_TAG: sha}, save_as_external_data=False, pip_requirements=["onnxruntime"],
                 extra_files=[str(p) for p in extra if Path(p).is_file()] or None)
    return info.model_id


def log_files(store, run_id: str | None, files: list[Path], name: str, kind: str, sha256: str, tags: dict,
              reuse: bool = True) -> str:
    """`files` (kept byte for byte, by name) as a flavor-less model output by `run_id`."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    if reuse and (known := find(store, sha256)) is not None:
        if run_id is not None:
            store.log_outputs(run_id, [LoggedModelOutput(known, 0)])
        return known
    model = store.create_logged_model(store.experiment_id, name=safe_name(name), source_run_id=run_id, model_type=kind,
                                      tags={**tags, SHA_TAG: sha256})
    with tempfile.TemporaryDirectory(prefix="edgepack-model-") as tmp:
        for f in files:
            shutil.copy2(f, Path(tmp) / Path(f).name) if Path(f).is_file() else None
        store.log_model_artifacts(model.model_id, tmp)
    store.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    if run_id is not None:
        store.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
    return model.model_id


def log_artifact(store, run_id: str, artifact, folder: Path, name: str, tags: dict) -> str:
    """An emitted artifact (report.schema.Artifact; its files beside `folder / artifact.path`)."""
    main = folder / artifact.path if not Path(artifact.path).is_absolute() else Path(artifact.path)
    files = [main.parent / n for n in artifact.files]
    tags = {**tags, "backend": artifact.backend, "precision": artifact.precision, ROLE_TAG: "artifact"}
    # always a model of its own (even when its bytes equal the graph it was built from, as an
    # INT8 QDQ graph shipped to ONNX Runtime does): the artifact's figures attach to it
    if main.suffix == ".onnx" and len(files) == 1:
        return log_onnx(store, run_id, main, name, tags, reuse=False)
    return log_files(store, run_id, files, name, artifact.backend, artifact.sha256, tags, reuse=False)


def log_bundle(store, bundle: Path, digest: str, input_model: str | None, tags: dict) -> str:
    """A bundle (a .tar.gz, or a folder kept with its layout) as a flavor-less model, output by
    a run that takes the registered artifact's model as input: artifact -> bundle in the lineage."""
    from mlflow.entities import LoggedModelInput, LoggedModelOutput, LoggedModelStatus

    from edgepack.tracking.record import LEVEL, _ms

    run = store.create_run(store.experiment_id, run_name=f"bundle {bundle.name}", start_time=_ms(),
                           tags={LEVEL: "bundle", "edgepack.command": "package"})
    run_id = run.info.run_id
    if input_model:
        store.log_inputs(run_id, models=[LoggedModelInput(input_model)])
    model = store.create_logged_model(store.experiment_id, name=safe_name(f"bundle-{bundle.name}"), source_run_id=run_id,
                                      model_type="bundle", tags={**tags, SHA_TAG: digest, ROLE_TAG: "bundle"})
    if bundle.is_dir():
        store.log_model_artifacts(model.model_id, str(bundle))
    else:
        with tempfile.TemporaryDirectory(prefix="edgepack-bundle-") as tmp:
            shutil.copy2(bundle, Path(tmp) / bundle.name)
            store.log_model_artifacts(model.model_id, tmp)
    store.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    store.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
    store.set_terminated(run_id, "FINISHED")
    return model.model_id
