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


def stored_spec(spec: dict):
    """The SearchSpec that tracking stored as JSON (every field, defaults included). A recipe
    search's space keeps only its recipe knobs: the model search's default knobs, written out
    beside them, are refused in a recipe search."""
    from pydantic import ValidationError

    from edgepack.errors import EdgepackError
    from edgepack.search.spec import SearchSpec

    if spec.get("recipe") is not None:
        spec = spec | {"space": {"recipe": (spec.get("space") or {}).get("recipe")}}
    try:
        return SearchSpec.model_validate(spec)
    except ValidationError as e:
        raise EdgepackError(f"the stored search spec is not one this edgepack reads: "
                            f"{e.errors()[0]['msg'][:300]}") from None


def run_point(spec: dict, target: str, point: dict, out: str | Path) -> Path:
    """Run `point` of the search `spec` for `target` into `out`; returns its report.json."""
    search = stored_spec(spec)
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
