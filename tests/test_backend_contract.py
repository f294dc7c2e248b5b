"""The contract every backend in the registry keeps: a new runtime is done when it passes this.

Emit a real trained CNN, list its companion files, load it in a fresh session, report inputs
that match the graph's, compute what ONNX Runtime computes on real digits, describe itself in
JSON, and take its options from a target profile.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from edgepack.backends import REGISTRY, get_backend, options_model
from edgepack.ir.spec import graph_inputs
from edgepack.runtime import ort_runner
from edgepack.targets import load_profile

INSTALLED = [n for n, e in REGISTRY.items() if all(importlib.util.find_spec(m) for m in e.requires)]


@pytest.fixture(scope="module")
def trained(mnist_model, tmp_path_factory, sample_sets):
    """The MNIST CNN trained on real digits, as canonical ONNX, and 4 real digits to feed it."""
    from edgepack.data import load_dataset
    from edgepack.frontends import load_source
    from edgepack.ir.canonical import canonicalize

    model, _ = mnist_model
    graph, _ = canonicalize(load_source(model, {"": (1, 1, 28, 28)}).model)
    digits = load_dataset(sample_sets["mnist_eval"], graph_inputs(graph)).take(4)
    return graph, list(digits.batches(1))


@pytest.mark.parametrize("name", INSTALLED)
def test_backend_contract(name, trained, tmp_path, tvm_cache):
    graph, feeds = trained
    profile = load_profile("host")
    backend = get_backend(name, profile.backend_options(name))
    assert backend.name == name and "fp32" in backend.precisions
    artifact = backend.emit(graph, tmp_path, profile, precision="fp32")
    assert artifact.is_file() and artifact.suffix in REGISTRY[name].suffixes
    assert all(p.is_file() and p.parent == artifact.parent for p in backend.companions(artifact))

    session = backend.load(artifact, 1)
    specs = backend.inputs(session)
    assert [(s.name, list(s.shape)) for s in specs] == [(s.name, list(s.shape)) for s in graph_inputs(graph)]
    reference = ort_runner(graph)
    for feed in feeds:
        got = backend.run(session, feed)
        want = reference(feed)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert np.asarray(g).shape == w.shape
            np.testing.assert_allclose(np.asarray(g, dtype=np.float32), w, atol=1e-3, rtol=1e-3)
            assert np.asarray(g).argmax() == w.argmax()

    json.dumps(backend.describe(artifact))  # JSON-safe: it goes into report.json as is
    defaults = options_model(name)()
    assert get_backend(name, defaults.model_dump()).options == defaults
