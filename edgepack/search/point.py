"""One point of a recorded search, run again on its own: what `edgepack reproduce` runs for a
search's chosen point or for one trial run.

A point is rebuilt from what tracking stores (the spec, the target, the point's knobs) exactly
as the search built it (search/run.py `base_request` and evaluate.py `request_for`; the recipe
with the knobs written in, search/recipe.py `apply`), and run into a fresh folder: a compile of
the model, or the recipe's whole flow with no shared stage cache (the teacher is trained again,
since a reproduction that copies the recorded stages in would prove nothing).

    python -m edgepack.search.point '{"spec": ..., "target": ..., "point": ..., "output_dir": ...}'

runs in a process of its own from the directory the search ran in (relative paths in the spec
are that directory's), and writes OUTPUT_DIR/report.json; a mistake is one line on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run_point(spec: dict, target: str, point: dict, out: str | Path) -> Path:
    """Run `point` of the search `spec` for `target` into `out`; returns its report.json."""
    from edgepack.search.spec import SearchSpec

    search = SearchSpec.model_validate(spec)
    out = Path(out)
    if search.recipe is not None:
        from edgepack.pipeline.engine import run
        from edgepack.search import recipe as recipes

        run(recipes.apply(recipes.load(search.recipe), point) | {"target": target}, out)
    else:
        from edgepack.compiler import compile_request
        from edgepack.search.evaluate import request_for
        from edgepack.search.run import base_request

        compile_request(request_for(base_request(search, target), point).with_options(output_dir=str(out)))
    return out / "report.json"


def main(argv: list[str] | None = None) -> int:
    from edgepack.errors import EdgepackError, first_line

    data = json.loads((argv or sys.argv[1:])[0])
    try:
        run_point(data["spec"], data["target"], data["point"], data["output_dir"])
    except EdgepackError as e:
        print(f"edgepack: error: {first_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
