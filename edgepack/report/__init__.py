"""Reports: typed models (schema), one markdown renderer per report, and writing them."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from edgepack.fsutil import atomic_write
from edgepack.report.schema import CompileReport, FlowReport, Header, ProfileReport


def header(command: str) -> dict:
    """The fields every report starts with; the one place they are built."""
    from edgepack import __version__
    from edgepack.hostinfo import environment

    return {"edgepack_version": __version__, "command": command,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "environment": environment()}


def write_report(outdir: Path, report: Header) -> tuple[Path, Path]:
    """report.json from the model, report.md from its renderer; each written atomically."""
    from edgepack.report.markdown import flow_markdown, render_markdown

    js, md = Path(outdir) / "report.json", Path(outdir) / "report.md"
    atomic_write(js, json.dumps(report.to_json(), indent=2) + "\n")
    atomic_write(md, flow_markdown(report) if isinstance(report, FlowReport) else render_markdown(report))
    return js, md


__all__ = ["CompileReport", "FlowReport", "ProfileReport", "header", "write_report"]
