"""Real public models as users bring them (benchmarks/zoo_models): a byte-level classifier with an
int32 input (magika), an audio CNN with three outputs (basic-pitch), and a text-line classifier
whose graph leaves batch, height and width unknown (PP-OCR cls from rapidocr). `make setup`
installs their wheels (models only, --no-deps); the data is real and built from disjoint sources.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgepack
from benchmarks.zoo_models import build_data, feeds, fetch, fidelity, get
from benchmarks.zoo_models.data import magika_features
from benchmarks.zoo_models.registry import View
from edgepack.backends import get_backend
from edgepack.errors import EdgepackError

@pytest.fixture(scope="module")
def zoo_data(tmp_path_factory):
    """{model: {"calib": npz, "judged": npz}}, built fresh for this module."""
    root = tmp_path_factory.mktemp("zoo")
    return {n: build_data(get(n), cache=root) for n in ("magika", "basic_pitch", "ppocr_cls")}


def _graph(name: str):
    m = onnx.load(str(fetch(get(name))))
    inits = {i.name for i in m.graph.initializer}
    return m, [v for v in m.graph.input if v.name not in inits]


def _compile(name: str, tmp_path, **kw) -> tuple[dict, str]:
    model = get(name)
    rep = edgepack.compile(str(fetch(model)), target="host", output_dir=tmp_path / "out", progress=False,
                           runs=3, warmup=1, threads=2, **kw)
    art = rep["artifacts"][rep["selected"]["index"]]
    return rep, str(tmp_path / "out" / art["path"]) if not art["path"].startswith("/") else art["path"]


def _first(path, n: int, folder) -> str:
    """The first `n` samples of an npz set: enough for what a test asserts, at a fraction of the
    INT8 search's time (it calibrates and judges every candidate on the whole set)."""
    out = folder / f"{n}-{path.name}"
    with np.load(path) as z:
        np.savez(out, **{k: z[k][:n] for k in z.files})
    return str(out)


def _judged(name: str, backend: str, artifact: str, sets: dict, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(FP32 source outputs, artifact outputs) of output `index` on the judged set."""
    model = get(name)
    samples = feeds(model, sets["judged"])
    ref_run = get_backend("onnxruntime").runner(fetch(model), 2)
    run = get_backend(backend).runner(artifact, 2)
    ref = np.stack([np.asarray(ref_run(f)[index]) for f in samples])
    out = np.stack([np.asarray(run(f)[index]) for f in samples])
    return ref, out


def test_zoo_models_are_the_pinned_pretrained_graphs():
    m, ins = _graph("magika")
    assert [(v.name, v.type.tensor_type.elem_type) for v in ins] == [("bytes", onnx.TensorProto.INT32)]
    assert [d.dim_value for d in ins[0].type.tensor_type.shape.dim][1:] == [2048]
    m, ins = _graph("basic_pitch")
    assert len(m.graph.output) == 3
    m, ins = _graph("ppocr_cls")
    dims = ins[0].type.tensor_type.shape.dim
    assert [d.HasField("dim_value") and d.dim_value > 0 for d in dims] == [False, True, False, False]
    # trained weights: the largest float initializer or Constant is far from a constant fill
    tensors = [onnx.numpy_helper.to_array(t) for t in m.graph.initializer]
    tensors += [onnx.numpy_helper.to_array(a.t) for n in m.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    big = max((t for t in tensors if t.dtype == np.float32), key=lambda t: t.size)
    assert big.size >= 10_000 and np.unique(big).size > big.size // 10


def test_zoo_sets_are_real_disjoint_and_in_the_models_dtypes(zoo_data):
    with np.load(zoo_data["magika"]["calib"]) as c, np.load(zoo_data["magika"]["judged"]) as j:
        calib, judged = c["bytes"], j["bytes"]
    assert calib.dtype == judged.dtype == np.int32 and calib.shape[1:] == (2048,)
    assert calib.min() >= 0 and calib.max() <= 256
    assert not {r.tobytes() for r in calib} & {r.tobytes() for r in judged}
    with np.load(zoo_data["ppocr_cls"]["calib"]) as c, np.load(zoo_data["ppocr_cls"]["judged"]) as j:
        assert c["x"].shape[1:] == j["x"].shape[1:] == (3, 48, 192)
        assert not {r.tobytes() for r in c["x"]} & {r.tobytes() for r in j["x"]}


def test_fidelity_counts_near_ties_apart_and_refuses_an_empty_view():
    ref = np.array([[[2.0, 1.0, 0.0]], [[1.0, 0.9, 0.0]]])  # (N, batch, classes): a clear call, a near-tie
    out = np.array([[[2.0, 1.0, 0.0]], [[0.9, 1.0, 0.0]]])
    f = fidelity(ref, out, View())
    assert (f["agree"], f["agree_clear"], f["clear"], f["decisions"]) == (0.5, 1.0, 1, 2)
    assert fidelity(ref, out, View("binary", threshold=0.95))["agree"] == 4 / 6
    with pytest.raises(ValueError, match="no decisions"):
        fidelity(ref, out, View(axis=1, start=5))


def test_magika_features_follow_its_block_rules():
    """The start loses its leading whitespace only, the end its trailing whitespace only."""
    data = b"  \n#!/bin/sh\necho hi\n\n"
    f = magika_features(data, data)
    head, tail = data.lstrip(), data.rstrip()
    assert bytes(f[:len(head)].astype(np.uint8)) == head and f[len(head)] == 256 and f[1023] == 256
    assert bytes(f[-len(tail):].astype(np.uint8)) == tail and f[1024] == 256


def test_magika_int32_input_compiles_fp32_and_keeps_every_label(tmp_path, zoo_data):
    rep, art = _compile("magika", tmp_path, backends=["onnxruntime"], precision="fp32",
                        input_shapes={"bytes": (1, 2048)}, eval_data=str(zoo_data["magika"]["judged"]))
    assert rep["precision"] == "fp32"
    ref, out = _judged("magika", "onnxruntime", art, zoo_data["magika"], 0)
    judged = fidelity(ref, out, get("magika").view)
    assert judged["agree"] == 1.0 and judged["cosine_min"] > 0.9999
    assert len({int(r.argmax()) for r in ref}) >= 8  # real files of many kinds, not one label


def test_basic_pitch_three_outputs_survive_compile(tmp_path, zoo_data):
    shape = {"serving_default_input_2:0": (1, 43844, 1)}
    rep, art = _compile("basic_pitch", tmp_path, backends=["onnxruntime"], precision="fp32", input_shapes=shape)
    run = get_backend("onnxruntime").runner(art, 2)
    sample = feeds(get("basic_pitch"), zoo_data["basic_pitch"]["judged"], limit=1)[0]
    assert [list(np.shape(o)) for o in run(sample)] == [[1, 172, 88], [1, 172, 88], [1, 172, 264]]
    ref, out = _judged("basic_pitch", "onnxruntime", art, zoo_data["basic_pitch"], 1)
    assert fidelity(ref, out, get("basic_pitch").view)["cosine_min"] > 0.9999


def test_ppocr_cls_at_the_given_shape_reads_real_lines(tmp_path, zoo_data):
    rep, art = _compile("ppocr_cls", tmp_path, backends=["onnxruntime"], precision="fp32",
                        input_shapes={"x": (1, 3, 48, 192)})
    b = get_backend("onnxruntime")
    assert [list(s.shape) for s in b.inputs(b.load(art, 1))] == [[1, 3, 48, 192]]
    ref, out = _judged("ppocr_cls", "onnxruntime", art, zoo_data["ppocr_cls"], 0)
    assert fidelity(ref, out, get("ppocr_cls").view)["agree"] == 1.0
    # the rendered lines alternate upright / upside down: the model (and so the data) must see it
    rendered = out[:40, 0].argmax(1)
    assert (rendered == np.arange(40) % 2).mean() >= 0.9


def test_ppocr_cls_without_input_shape_names_the_unknown_dims(tmp_path):
    with pytest.raises(EdgepackError, match=r"(?s)\bx\b.*--input-shape"):
        _compile("ppocr_cls", tmp_path, backends=["onnxruntime"], precision="fp32")


@pytest.mark.slow
def test_magika_int8_ships_int8_and_leaves_nothing_behind(tmp_path, zoo_data, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    rep, art = _compile("magika", tmp_path, backends=["onnxruntime"], precision="int8",
                        input_shapes={"bytes": (1, 2048)}, calib=_first(zoo_data["magika"]["calib"], 64, tmp_path),
                        eval_data=_first(zoo_data["magika"]["judged"], 64, tmp_path))
    assert list(cwd.iterdir()) == []
    assert rep["precision"] == "int8"
    ref, out = _judged("magika", "onnxruntime", art, zoo_data["magika"], 0)
    assert fidelity(ref, out, get("magika").view)["agree"] >= 0.85


@pytest.mark.slow
def test_basic_pitch_int8_is_produced_where_the_quantizer_breaks(tmp_path, zoo_data):
    """ONNX Runtime's quantize_static fails on this graph (a Transpose of a 1-D conv weight); NNCF
    quantizes it, so edgepack must ship INT8 through a fallback rung, not raise."""
    rep, _ = _compile("basic_pitch", tmp_path, backends=["onnxruntime"], precision="int8",
                      input_shapes={"serving_default_input_2:0": (1, 43844, 1)},
                      calib=_first(zoo_data["basic_pitch"]["calib"], 8, tmp_path),
                      eval_data=_first(zoo_data["basic_pitch"]["judged"], 8, tmp_path))
    assert rep["precision"] == "int8"
