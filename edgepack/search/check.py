"""A point judged apart from the data its compile fitted to (`check:` in the spec, `--check`).

Each compile spends its accuracy budget on `eval`: its INT8 accuracy control returns layers to
float until the metric is met there, so its figures on `eval` are fitted, not measured. On
MobileNetV2 a build that agreed with FP32 on every clear input of 5 eval photos flipped 2 of 40
on 5 others. With a check set, the search replaces each built point's accuracy, drop and
fidelity with the same figures on inputs no compile saw, and the constraints are judged on
them; the fitted figures stay beside them (`fit_*`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from edgepack.errors import EdgepackError, first_line

# the figures a check set measures again (the rest: size, MACs, latency, do not depend on data)
JUDGED = ("accuracy", "drop", "cosine", "agreement_non_near_ties")


def judged_apart(values: dict, req, backend: str, artifact: Path, check: str, threads: int | None) -> dict:
    """`values` (a built point's figures from its compile report) with the judged figures
    computed on `check` against the source model; the compile's own kept as fit_NAME."""
    new = check_figures(req, backend, artifact, check, threads)
    fitted = {f"fit_{k}": values[k] for k in JUDGED if k in values}
    return {k: v for k, v in values.items() if k not in JUDGED} | fitted | new


def check_figures(req, backend: str, artifact: Path, check: str, threads: int | None) -> dict:
    """The artifact's metric (the compile's: the same metric its budget was spent on), its drop
    from the source model's score, and its fidelity to the source, all on `check`."""
    from edgepack.backends import get_backend

    files = tuple(_stamp(p) for p in (req.model.value, req.weights, check))  # an edited file is read again
    evaluator, base = _judge(req.model.value, req.input_shapes, req.weights, check, req.evaluation.metric,
                             req.evaluation.output, files)
    runtime = get_backend(backend)
    try:
        session = runtime.load(artifact, threads or 1)
    except Exception as e:
        raise EdgepackError(f"check: {backend} could not load {artifact.name}: {first_line(e)}") from None
    score, fidelity = evaluator.assess(lambda feed: runtime.run(session, feed))
    out = {"accuracy": score, "drop": base - score, "cosine": fidelity["cosine"]}
    if fidelity.get("agreement_non_near_ties") is not None:
        out["agreement_non_near_ties"] = fidelity["agreement_non_near_ties"]
    return out


def _stamp(path) -> tuple | None:
    """(size, mtime) of the file `path` names (a file.py:factory by its .py), None for none."""
    if not isinstance(path, str):
        return None
    from edgepack.search.spec import file_of

    try:
        st = Path(file_of(path)).stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=4)
def _judge(model: str, input_shapes, weights, check: str, metric, output, _files: tuple):
    """(evaluator on `check` with the source model's outputs as reference, the source's score):
    the same for every point of a search, so a worker loads the source and runs it once, not
    once per trial."""
    from edgepack.compiler.inputs import dataset
    from edgepack.frontends import load_source
    from edgepack.ir.spec import fixed_batch, graph_inputs, graph_outputs
    from edgepack.passes.metrics import Evaluator, output_index

    source = load_source(model, None if input_shapes is None else dict(input_shapes), weights)
    specs = graph_inputs(source.model)
    data = dataset(check, specs)
    metric = metric or ("top1" if data.labels is not None else "cosine")  # compile's default
    index = output_index([o.name for o in graph_outputs(source.model)], output)
    evaluator = Evaluator.build(metric, data, fixed_batch(specs), source.run, index)
    return evaluator, evaluator.score(source.run)
