"""Constraint search: the feasible Pareto front of a model's compiles per target, and a chosen point.

    from edgepack.search import SearchSpec, search
    results = search(SearchSpec(model="m.onnx", eval="eval.npz", constraints={"max_drop": 0.01}), "out")
"""

from edgepack.search.run import TargetResult, search
from edgepack.search.spec import SearchSpec, load_spec

__all__ = ["SearchSpec", "TargetResult", "load_spec", "search"]
