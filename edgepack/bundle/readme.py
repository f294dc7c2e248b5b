"""The README.md every bundle carries: what is in it and how to run it, from its manifest."""

from __future__ import annotations

from edgepack.bundle.manifest import Manifest


def _tensor_rows(tensors) -> list[str]:
    rows = []
    for t in tensors:
        own = t.artifact_tensor
        extra = ""
        if own is not None:
            q = f", int scale {own.quant.scale:.6g} zero point {own.quant.zero_point}" if own.quant else ""
            extra = f"; artifact tensor `{own.name}` {own.shape} {own.dtype} {own.layout or ''}{q}"
        rows.append(f"| `{t.name}` | {t.shape} | {t.dtype} | {t.layout or '-'}{extra} |")
    return rows


def readme(m: Manifest) -> str:
    rt = m.runtime
    minimum = f">={rt.minimum_version}" if rt.minimum_version else ""
    pre = m.preprocessing
    lines = [
        f"# {m.name}",
        "",
        f"{m.model} compiled by edgepack {m.lineage.edgepack_version} for target `{m.target.name}`: "
        f"{m.backend} artifact `{m.artifact.path}` ({m.artifact.precision}, {m.artifact.size_bytes} bytes), "
        f"for {'any CPU architecture' if rt.arch == 'any' else rt.arch + ' only'}.",
        "",
        "## Run it",
        "",
        "Needs Python 3 with numpy and the runtime, nothing of edgepack:",
        "",
        "```",
        f"pip install numpy '{rt.package}{minimum}'   # tested with {rt.package} {rt.tested_version}",
        "python runner/run.py              # replay the golden vectors: prints the max difference per output",
        "python runner/run.py --bench 50   # time 50 inferences (--threads N, --warmup N)",
        "```",
        "",
        "`run.py` runs `runner/worker.py`, the program edgepack's devices run, with the session module "
        f"`{rt.session_module}` (how edgepack opens and feeds {m.backend}); read it to embed the artifact in "
        "your own code. Exit code 7: outputs outside tolerance.",
        "",
        "With edgepack installed, `edgepack verify BUNDLE [--device NAME]` checks the files' hashes, the device "
        "(architecture, runtime version) and replays the golden vectors there.",
        "",
        "## Inputs and outputs",
        "",
        "ONNX names and order; layout as the runner takes them.",
        "",
        "| name | shape | dtype | layout |",
        "|---|---|---|---|",
        *_tensor_rows(m.inputs),
        *_tensor_rows(m.outputs),
        "",
        "## Preprocessing",
        "",
        (f"`{pre.spec}`: {pre.note}" if pre.recorded else pre.note),
        "",
        "## Files",
        "",
        "- `manifest.json`: every file's sha256 and size, I/O, target profile, runtime versions, ops, lineage, "
        "measurements (with where each was measured), golden vectors and tolerances "
        "(schema: `manifest.schema.json`)",
        "- `model/`: the artifact and the files its runtime loads beside it",
        "- `golden/`: inputs and the outputs the artifact computed for them "
        f"({m.golden.computed_on})",
        "- `runner/`: run.py, worker.py and the session module",
        "- `report.md`: the compile report",
        "",
    ]
    return "\n".join(lines)
