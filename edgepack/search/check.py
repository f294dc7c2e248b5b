"""A point judged apart from the data its compile fitted to (`check:` in the spec, `--check`).

Each compile spends its accuracy budget on `eval`: its INT8 accuracy control returns layers to
float until the metric is met there, so its figures on `eval` are fitted, not measured. On
MobileNetV2 a build that agreed with FP32 on every clear input of 5 eval photos flipped 2 of 40
on 5 others. With a check set, the search replaces each built point's accuracy, drop and
fidelity with the same figures on inputs no compile saw, and the constraints are judged on
them; the fitted figures stay beside them (`fit_*`).
"""

from __future__ import annotations

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
    from edgepack.compiler.inputs import dataset
    from edgepack.frontends import load_source
    from edgepack.ir.spec import fixed_batch, graph_inputs, graph_outputs
    from edgepack.passes.metrics import Evaluator, output_index

    source = load_source(req.model.value, req.shapes, req.weights)
    specs = graph_inputs(source.model)
    data = dataset(check, specs)
    metric = req.evaluation.metric or ("top1" if data.labels is not None else "cosine")  # compile's default
    index = output_index([o.name for o in graph_outputs(source.model)], req.evaluation.output)
    evaluator = Evaluator.build(metric, data, fixed_batch(specs), source.run, index)
    runtime = get_backend(backend)
    try:
        session = runtime.load(artifact, threads or 1)
    except Exception as e:
        raise EdgepackError(f"check: {backend} could not load {artifact.name}: {first_line(e)}") from None
    score, fidelity = evaluator.assess(lambda feed: runtime.run(session, feed))
    out = {"accuracy": score, "drop": evaluator.score(source.run) - score, "cosine": fidelity["cosine"]}
    if fidelity.get("agreement_non_near_ties") is not None:
        out["agreement_non_near_ties"] = fidelity["agreement_non_near_ties"]
    return out
