"""The compile output a bundle is made from: its report, the artifact chosen, and where it came
from (a plain `compile`, or the emit stage of a recipe run)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from edgepack.errors import EdgepackError, close_names
from edgepack.fsutil import sha256_file
from edgepack.report.schema import Artifact, CompileReport, FlowReport


@dataclass(frozen=True)
class Output:
    folder: Path  # the compile output (report.json, one folder per runtime)
    report: CompileReport
    report_sha256: str
    flow: FlowReport | None = None  # the recipe run it is the emit stage of


def _read(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise EdgepackError(f"{path}: cannot read it ({e.strerror})") from None
    except ValueError as e:
        raise EdgepackError(f"{path}: not valid JSON ({str(e)[:200]}): {what}") from None
    if not isinstance(data, dict):
        raise EdgepackError(f"{path}: not a report (a JSON object was expected)")
    return data


def _typed(model, data: dict, path: Path):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])[:200]
        raise EdgepackError(f"{path}: not a report this edgepack reads ({where}: {err['msg'][:200]})") from None


def locate(out: Path) -> Output:
    """The compile output in `out`: a compile folder, or a recipe run folder (its emit stage)."""
    out = Path(out)
    if not out.is_dir():
        raise EdgepackError(f"{out}: no such folder (give the output folder of edgepack compile or run)")
    path = out / "report.json"
    if not path.is_file():
        raise EdgepackError(f"{out}: no report.json: not the output of edgepack compile or run")
    data = _read(path, "the output's report")
    command = data.get("command")
    if command == "run":
        flow = _typed(FlowReport, data, path)
        emit = [i for i, s in enumerate(flow.stages) if s.kind == "emit"]
        if not emit:
            raise EdgepackError(f"{out}: this recipe run has no emit stage, so no artifact to package")
        folder = out / f"{emit[-1] + 1:02d}-emit"
        compiled = locate(folder)
        return Output(compiled.folder, compiled.report, compiled.report_sha256, flow)
    if command != "compile":
        raise EdgepackError(f"{out}: a {command or 'unknown'} report; package takes the output of edgepack "
                            "compile (or of a recipe run)")
    report = _typed(CompileReport, data, path)
    flow = None
    parent = out.resolve().parent / "report.json"
    if (out / "stage.json").is_file() and parent.is_file():  # the emit stage of a recipe run
        parent_data = _read(parent, "the recipe run's report")
        if parent_data.get("command") == "run":
            flow = _typed(FlowReport, parent_data, parent)
    return Output(out, report, sha256_file(path), flow)


def choose(output: Output, backend: str | None) -> Artifact:
    """The artifact to package: the one built for `backend`, else the report's selected one."""
    report = output.report
    if backend is None:
        art = report.shipped()
    else:
        found = [a for a in report.artifacts if a.backend == backend]
        if not found:
            have = [a.backend for a in report.artifacts]
            raise EdgepackError(f"{output.folder} holds no {backend!r} artifact{close_names(backend, have)}; "
                                f"it has: {', '.join(have)}")
        art = found[0]
    main = output.folder / art.path
    if not main.is_file():
        raise EdgepackError(f"{main}: the report's {art.backend} artifact is missing from the output")
    return art
